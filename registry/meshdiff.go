package registry

import (
	"maps"
	"reflect"
	"slices"
)

// MeshChanges is what differs between two mesh snapshots, by key: what a
// consumer that remembers its last translation must look at again. A key
// is listed when its value was added, removed or changed.
type MeshChanges struct {
	Sidecars     []string // proxy IDs
	Destinations []string // service names
	Leaves       []string // service names
	Intentions   []string // service-intentions entry names ("*" included)
	Roots        bool
	// IntentionDefault is whether the default decision changed.
	IntentionDefault bool
}

// Changes lists what differs in s from prev (nil: everything in s is
// new), each list sorted. A snapshot shares every unchanged part with the
// one before it, so a part is compared by identity first and by value
// only when it was replaced: the cost is one map lookup per key plus the
// parts that changed.
func (s *MeshSnapshot) Changes(prev *MeshSnapshot) MeshChanges {
	if s == nil {
		s = &MeshSnapshot{}
	}
	if prev == nil {
		prev = &MeshSnapshot{}
	}
	return MeshChanges{
		Sidecars:         changedKeys(prev.sidecars, s.sidecars),
		Destinations:     changedKeys(prev.dests, s.dests),
		Leaves:           changedKeys(prev.leaves, s.leaves),
		Intentions:       changedKeys(prev.intentions, s.intentions),
		Roots:            !deepEqual(prev.roots, s.roots),
		IntentionDefault: prev.IntentionDefault() != s.IntentionDefault(),
	}
}

// ChangedLeaves is Changes(prev).Leaves alone.
func (s *MeshSnapshot) ChangedLeaves(prev *MeshSnapshot) []string {
	if s == nil {
		s = &MeshSnapshot{}
	}
	if prev == nil {
		prev = &MeshSnapshot{}
	}
	return changedKeys(prev.leaves, s.leaves)
}

// changedKeys lists, sorted, the keys whose values differ between a and b
// or that only one of them has.
func changedKeys[T any](a, b map[string]*T) []string {
	var out []string
	kept := 0 // keys of a also in b
	for k, v := range b {
		old, ok := a[k]
		if ok {
			kept++
		}
		if !ok || (old != v && !reflect.DeepEqual(old, v)) {
			out = append(out, k)
		}
	}
	if kept < len(a) { // some were removed
		for k := range a {
			if _, ok := b[k]; !ok {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// WithDestination returns a snapshot equal to s but with d as the
// endpoints of d.Name, sharing every other part with s as the
// MeshWatcher's next snapshot would: for tests and benchmarks of what
// consumes one change.
func (s *MeshSnapshot) WithDestination(d Destination) *MeshSnapshot {
	next := *s
	next.dests = maps.Clone(s.dests)
	if next.dests == nil {
		next.dests = map[string]*Destination{}
	}
	d.Endpoints = slices.Clone(d.Endpoints)
	sortEndpoints(d.Endpoints)
	next.dests[d.Name] = &d
	return &next
}

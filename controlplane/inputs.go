package controlplane

import (
	"sync"
	"time"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
)

// inputs is what the config is built from: the latest Consul snapshot and
// the policy, served and pending. The registry watcher and the policy
// watcher write it; the rebuild reads it. Its values are immutable.
type inputs struct {
	mu     sync.Mutex
	consul *registry.Snapshot // nil until the first full sync
	policy *policy.Set        // the policy set being served; nil until one is
	// pending is a newer valid policy set, waiting (since pendingAt) for the
	// registry to sync the services it routes to; nil when there is none.
	pending   *policy.Set
	pendingAt time.Time
	// mesh is Consul's view of the sidecar mesh; nil until its first sync,
	// or when the mesh is off.
	mesh *registry.MeshSnapshot
	// meshOn: the mesh is enabled, so readiness waits for its first sync.
	meshOn bool
	// changedAt is when the earliest input change not yet taken by a
	// rebuild arrived (zero: none): the start of convergence.
	changedAt time.Time
	// restored: consul is the view saved in state.dir, not Consul's answer.
	restored bool
	// alsoCover is the groups served before a restart (state.dir), until
	// the first promotion: it waits for their services too, so that
	// those retained do not start with empty endpoints.
	alsoCover *policy.Set
}

// restoreCover makes the first promotion wait for the services of set's
// groups too (see alsoCover).
func (in *inputs) restoreCover(set *policy.Set) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.alsoCover = set
}

// noteChange records that an input changed now, unless an earlier change
// is still waiting for a rebuild. Called with in.mu held.
func (in *inputs) noteChange() {
	if in.changedAt.IsZero() {
		in.changedAt = time.Now()
	}
}

// pendingSince is when the pending policy set was loaded (zero: none).
func (in *inputs) pendingSince() time.Time {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.pending == nil {
		return time.Time{}
	}
	return in.pendingAt
}

// takeChanged returns when the earliest change a rebuild is about to
// publish arrived (now, when none is recorded), and forgets it.
func (in *inputs) takeChanged() time.Time {
	in.mu.Lock()
	defer in.mu.Unlock()
	at := in.changedAt
	in.changedAt = time.Time{}
	if at.IsZero() {
		at = time.Now()
	}
	return at
}

// setMesh records a mesh snapshot.
func (in *inputs) setMesh(snap *registry.MeshSnapshot) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.mesh = snap
	in.noteChange()
}

// meshSnapshot returns the latest mesh snapshot (nil before one), and
// whether the mesh is on but has not synced yet.
func (in *inputs) meshSnapshot() (snap *registry.MeshSnapshot, pending bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.mesh, in.meshOn && in.mesh == nil
}

// setConsul records a Consul snapshot; first says whether it is the first,
// replacedSaved whether it replaces the view restored from state.dir.
func (in *inputs) setConsul(snap *registry.Snapshot) (first, replacedSaved bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	first, replacedSaved = in.consul == nil, in.restored
	in.consul, in.restored = snap, false
	in.noteChange()
	return first, replacedSaved
}

// restoreConsulThen records a saved view of Consul (state.dir), only while
// Consul itself has given none, and then runs then (under the same lock,
// so that a Consul answer is ordered after it); it reports whether it did.
func (in *inputs) restoreConsulThen(snap *registry.Snapshot, then func()) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.consul != nil {
		return false
	}
	in.consul, in.restored = snap, true
	in.noteChange()
	then()
	return true
}

// setPending records a newly loaded valid policy set; first says whether
// none was served before.
func (in *inputs) setPending(set *policy.Set) (first bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.pending, in.pendingAt = set, time.Now()
	in.noteChange()
	return in.policy == nil
}

// policies returns the served policy set and the latest valid one (the
// pending set if there is one).
func (in *inputs) policies() (current, latest *policy.Set) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.pending != nil {
		return in.policy, in.pending
	}
	return in.policy, in.policy
}

// waiting says what the first build still waits for, or "".
func (in *inputs) waiting() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.consul == nil:
		return "waiting for the first full Consul sync"
	case in.policy == nil && in.pending != nil:
		return "waiting for Consul data for the services the policy routes to"
	case in.policy == nil:
		return "waiting for a valid policy set"
	case in.meshOn && in.mesh == nil:
		return "waiting for the first sync of the Connect sidecar mesh"
	}
	return ""
}

// coverWait bounds how long a new policy waits for the registry to sync
// the services it newly routes to before it is applied anyway.
const coverWait = 2 * time.Second

// promote makes the pending policy the served one once the registry
// snapshot covers every service it routes to (and, with the mesh, the mesh
// snapshot what its routes through the mesh need), or once coverWait has passed:
// applied earlier, routes to a service that exists in Consul would answer
// 503 until its first answer arrived. Until then the current policy keeps
// serving, and keeps following Consul. It returns the inputs to build from,
// whether a promotion happened, and the services still uncovered then.
func (in *inputs) promote() (consul *registry.Snapshot, set *policy.Set, promoted bool, missing []string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	consul, set = in.consul, in.policy
	if in.pending == nil || consul == nil {
		return consul, set, false, nil
	}
	missing = uncovered(consul, in.pending)
	if in.meshOn {
		missing = append(missing, meshUncovered(in.mesh, in.pending)...)
	}
	if in.alsoCover != nil {
		// Only the restored groups the new policy does not define.
		pending := in.pending
		gone, _ := in.alsoCover.Without(func(g *policy.ProxyGroup) bool { _, ok := pending.Group(g.Name); return ok })
		missing = append(missing, uncovered(consul, gone)...)
	}
	if len(missing) > 0 && time.Since(in.pendingAt) < coverWait {
		return consul, set, false, nil
	}
	in.policy, in.pending, in.alsoCover = in.pending, nil, nil
	return consul, in.policy, true, missing
}

// uncovered lists what of set the snapshot does not cover yet: the
// services it routes to, and its groups' mesh identities (whether one is
// a registered service), labelled.
func uncovered(snap *registry.Snapshot, set *policy.Set) []string {
	identity := map[string]bool{}
	for _, id := range translator.MeshIdentities(set) {
		identity[id] = true
	}
	var out []string
	for _, name := range translator.Services(set) {
		switch {
		case snap.Covers(name):
		case identity[name]:
			out = append(out, name+" (mesh identity: is it a registered service?)")
		default:
			out = append(out, name)
		}
	}
	return out
}

// meshUncovered lists what set's routes through the mesh need that the
// mesh snapshot (nil before its first sync) lacks yet: each group
// identity's leaf certificate and each destination's sidecars, so a new
// mesh route does not answer 503 for the moment the mesh watcher takes to
// fetch them.
func meshUncovered(mesh *registry.MeshSnapshot, set *policy.Set) []string {
	var out []string
	for _, id := range translator.MeshIdentities(set) {
		if _, ok := mesh.Leaf(id); !ok {
			out = append(out, id+" (leaf certificate)")
		}
	}
	for _, name := range translator.MeshDestinations(set) {
		if _, ok := mesh.Destination(name); !ok {
			out = append(out, name+" (sidecars)")
		}
	}
	return out
}

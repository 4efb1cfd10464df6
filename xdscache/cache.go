// Package xdscache is an xDS cache for go-control-plane's server whose
// push cost follows what changed, not the size of the fleet.
package xdscache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// Cache serves snapshots, one per node key (cache.NodeHash), to
// go-control-plane's xDS server. It implements cache.Cache; SetSnapshot
// and ClearSnapshot change it. Safe for concurrent use.
//
// go-control-plane's SnapshotCache answers every open watch of a node on
// every SetSnapshot by walking all of that type's resources (for every
// type, changed or not) and building a fresh version map per watch, does
// the same on every ACK, and marshals each resource again for every
// stream: with 1,000 delta streams of one group and 1,000 endpoint
// assignments one health flip cost 0.6-0.9 CPU-seconds. This cache, per
// SetSnapshot:
//
//   - works out once per group and type which resources changed and which
//     were removed, and skips the watches of unchanged types outright;
//   - marshals each changed resource once; every stream's response shares
//     the bytes (each stream gets its own small response message, because
//     the server writes the nonce into it);
//   - answers a parked delta watch from the changed names alone: a parked
//     watch is in sync with the snapshot it was parked at, so only the
//     changed names can differ; an ACK of an answer that left its stream
//     in sync parks without a comparison;
//   - on state of the world, sends endpoints, routes and secrets as the
//     protocol allows, only what a stream lacks at its version (clusters
//     and listeners go whole, as it requires);
//   - answers the watches in type order (the order given to New: clusters
//     before endpoints, listeners before routes), and holds a delta
//     stream's removals until it has acknowledged the updates of its other
//     types (make before break, delta.go).
//
// Per stream it keeps its parked watches and a few flags per type; what a
// stream has been sent (name and version) is the server's subscription
// state, which the cache updates in place. A watch is answered once and
// then dropped, so a stream has at most one answer per type outstanding;
// changes made meanwhile are folded into its next answer (the latest
// version wins), and a stream that reads slowly holds back only itself.
type Cache struct {
	hash  cache.NodeHash
	order []string // type URLs in the order responses go out
	ads   bool

	mu     sync.Mutex
	groups map[string]*group

	// interned holds every entry some group serves, by type, name and
	// version, weakly: groups that serve the same resource (edge groups
	// routing to the same services have the same clusters and endpoint
	// assignments, byte for byte) share one marshalled copy, and an entry
	// no group holds any more is freed (intern.go).
	internMu sync.Mutex
	interned map[internKey]weak.Pointer[entry]

	// fullCompares counts the delta requests compared with the whole
	// state (the stream's first, a subscription change, or an ACK of an
	// answer older than the states a type remembers): the expensive
	// case, which tests keep to where it belongs.
	fullCompares atomic.Int64
}

// New makes a cache keying nodes with hash. order lists the served type
// URLs in the order a change is pushed (Envoy wants clusters before their
// endpoints and listeners before their routes); SetSnapshot ignores types
// not listed. ads turns on go-control-plane's ADS rule for state of the
// world: a request naming resources is answered only once it names every
// resource of the type, so Envoy has had the clusters (or listeners) that
// the endpoints (or routes) belong to.
func New(hash cache.NodeHash, order []string, ads bool) *Cache {
	return &Cache{hash: hash, order: slices.Clone(order), ads: ads, groups: map[string]*group{}, interned: map[internKey]weak.Pointer[entry]{}}
}

// group is one node key's state: its published resources per type, and
// the watches waiting for them to change.
type group struct {
	mu    sync.Mutex
	set   bool                   // a snapshot was set (an unset group holds watches only)
	snap  cache.ResourceSnapshot // the last one set
	types map[string]*typeState
	// streams is what the cache knows of each delta stream of the group,
	// by the stream's response channel (delta.go).
	streams map[chan cache.DeltaResponse]*deltaStream
	order   []string // the cache's
}

// typeState is one type of a group: the resources, marshaled once, and
// the watches waiting for a change.
type typeState struct {
	version   string            // the type's version (state of the world)
	resources map[string]*entry // by name
	// names is every resource name, sorted, for state-of-the-world
	// answers; built on first use.
	names []string

	delta map[*deltaWatch]struct{}
	sotw  map[*sotwWatch]struct{}
	// synced holds the version maps of this state's delta answers that
	// left their stream in sync with it, by identity, until the stream's
	// next request: an ACK that comes back with one of them needs no
	// comparison (see CreateDeltaWatch).
	synced map[uintptr]map[string]string
	// fromItems and fromVersions are the snapshot maps this state was
	// last found equal to (its resources and their versions): a next
	// snapshot sharing both, with the same version, is the same, and is
	// not compared again. Held, not just their addresses, so that no new
	// map can take an address and pass for them.
	fromItems    map[string]types.ResourceWithTTL
	fromVersions map[string]string
	// base is the state this one replaced and since what changed from it
	// to this one, kept for a few states back (maxBase): a stream whose
	// last answer left it in sync with base acknowledges it after this
	// state came, and lacks only what changed since (see syncedWith).
	base  *typeState
	since change
}

// maxBase bounds how many states back a type remembers (typeState.base):
// a stream that acknowledges an answer older than that is compared in
// full.
const maxBase = 8

// setBase makes old the base of ts, with ch what changed, and forgets the
// states more than maxBase back.
func (ts *typeState) setBase(old *typeState, ch change) {
	ts.base, ts.since = old, change{typeURL: ch.typeURL, changed: ch.changed, removed: ch.removed}
	// A replaced state is read for its synced maps and what changed
	// since it, never for its resources: let them go (the snapshot maps
	// and any resource version only it held), or a type would keep
	// maxBase generations of them.
	old.resources, old.names, old.fromItems, old.fromVersions = nil, nil, nil, nil
	s := ts
	for range maxBase {
		if s.base == nil {
			return
		}
		s = s.base
	}
	s.base, s.since = nil, change{}
}

// madeFrom reports whether items and versions are the maps the state was
// last found equal to.
func (ts *typeState) madeFrom(items map[string]types.ResourceWithTTL, versions map[string]string) bool {
	return items != nil && versions != nil &&
		reflect.ValueOf(items).Pointer() == reflect.ValueOf(ts.fromItems).Pointer() &&
		reflect.ValueOf(versions).Pointer() == reflect.ValueOf(ts.fromVersions).Pointer()
}

// entry is one resource version: its delta form, whose Any is also what
// state of the world sends. Immutable, shared by every response.
type entry struct {
	version string
	res     *discoveryv3.Resource
}

func (c *Cache) group(key string, create bool) *group {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil && create {
		g = &group{types: map[string]*typeState{}, streams: map[chan cache.DeltaResponse]*deltaStream{}, order: c.order}
		c.groups[key] = g
	}
	return g
}

func (g *group) typ(typeURL string) *typeState {
	ts := g.types[typeURL]
	if ts == nil {
		ts = &typeState{resources: map[string]*entry{}, delta: map[*deltaWatch]struct{}{}, sotw: map[*sotwWatch]struct{}{}, synced: map[uintptr]map[string]string{}}
		g.types[typeURL] = ts
	}
	return ts
}

// change is what one SetSnapshot changed in one type.
type change struct {
	typeURL string
	next    *typeState // the new state (watches not yet moved over)
	changed []string   // names new or with a new version, sorted
	removed []string   // names gone, sorted
}

// SetSnapshot publishes a node key's snapshot and answers the watches the
// change concerns. Resources whose version (snapshot.GetVersionMap) is
// unchanged are not marshaled again. The snapshot must not change
// afterwards.
func (c *Cache) SetSnapshot(_ context.Context, key string, snapshot cache.ResourceSnapshot) error {
	if err := snapshot.ConstructVersionMap(); err != nil {
		return fmt.Errorf("snapshot %q: %w", key, err)
	}
	g := c.group(key, true)
	g.mu.Lock()
	defer g.mu.Unlock()
	first := !g.set
	changes := make([]change, 0, len(c.order))
	for _, typeURL := range c.order {
		old := g.typ(typeURL)
		ch, err := c.diff(typeURL, old, snapshot)
		if err != nil {
			return fmt.Errorf("snapshot %q: %w", key, err)
		}
		changes = append(changes, ch)
	}
	// Everything is marshaled: now swap and answer, type by type.
	g.set, g.snap = true, snapshot
	live := changes[:0]
	for _, ch := range changes {
		old := g.types[ch.typeURL]
		if len(ch.changed) == 0 && len(ch.removed) == 0 && ch.next.version == old.version && !first {
			// Nothing for this type's watches; the old state is as good,
			// and equal to this snapshot's maps, which the next snapshot
			// may share.
			old.fromItems, old.fromVersions = ch.next.fromItems, ch.next.fromVersions
			continue
		}
		ch.next.delta, ch.next.sotw = old.delta, old.sotw
		if !first {
			ch.next.setBase(old, ch)
		}
		g.types[ch.typeURL] = ch.next
		ch.next.answerSotw(c.ads)
		live = append(live, ch)
	}
	g.answerDelta(live, first)
	return nil
}

// diff builds a type's next state from the snapshot, reusing the entries
// whose version did not change, and lists what changed.
func (c *Cache) diff(typeURL string, old *typeState, snapshot cache.ResourceSnapshot) (change, error) {
	items := snapshot.GetResourcesAndTTL(typeURL)
	versions := snapshot.GetVersionMap(typeURL)
	if snapshot.GetVersion(typeURL) == old.version && old.madeFrom(items, versions) {
		// The very maps of the last snapshot (a snapshot that changed
		// another type shares them): nothing to compare. The old state
		// is kept, watches and all.
		return change{typeURL: typeURL, next: old}, nil
	}
	next := &typeState{version: snapshot.GetVersion(typeURL), resources: make(map[string]*entry, len(items)), synced: map[uintptr]map[string]string{},
		fromItems: items, fromVersions: versions}
	ch := change{typeURL: typeURL, next: next}
	for name, item := range items {
		v, ok := versions[name]
		if !ok {
			return ch, fmt.Errorf("%s %q has no version", typeURL, name)
		}
		if e := old.resources[name]; e != nil && e.version == v {
			next.resources[name] = e
			continue
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(item.Resource)
		if err != nil {
			return ch, fmt.Errorf("marshal %s %q: %w", typeURL, name, err)
		}
		next.resources[name] = c.intern(typeURL, name, v, b)
		ch.changed = append(ch.changed, name)
	}
	for name := range old.resources {
		if _, ok := next.resources[name]; !ok {
			ch.removed = append(ch.removed, name)
		}
	}
	sort.Strings(ch.changed)
	sort.Strings(ch.removed)
	return ch, nil
}

// ClearSnapshot forgets a node key: its resources and its waiting watches
// (which are never answered; their streams get the key's next snapshot
// only by asking again).
func (c *Cache) ClearSnapshot(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.groups, key)
}

// Fetch answers a one-off state-of-the-world request (REST xDS).
func (c *Cache) Fetch(_ context.Context, req *cache.Request) (cache.Response, error) {
	g := c.group(c.hash.ID(req.GetNode()), false)
	if g == nil {
		return nil, errors.New("no snapshot for the node")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.types[req.GetTypeUrl()]
	if !g.set || ts == nil {
		return nil, errors.New("no snapshot for the node")
	}
	if req.GetVersionInfo() == ts.version {
		return nil, errors.New("skip fetch: version up to date")
	}
	return ts.sotwResponse(req, req.GetResourceNames(), nil), nil
}

// GetSnapshot returns the snapshot last set for a node key.
func (c *Cache) GetSnapshot(key string) (cache.ResourceSnapshot, error) {
	g := c.group(key, false)
	if g != nil {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.set {
			return g.snap, nil
		}
	}
	return nil, fmt.Errorf("no snapshot found for node %s", key)
}

// GetStatusKeys lists the node keys the cache keeps state for: those with
// a snapshot, and those with only watches waiting.
func (c *Cache) GetStatusKeys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.groups))
}

var _ cache.Cache = (*Cache)(nil)

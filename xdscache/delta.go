package xdscache

import (
	"maps"
	"reflect"
	"sort"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// deltaWatch is one delta stream's open request for one type.
type deltaWatch struct {
	typeURL string
	req     *cache.DeltaRequest
	sub     cache.Subscription
	ch      chan cache.DeltaResponse
	// behind marks a watch not in sync with the state it waits on (its
	// stream's channel was full, or removals were held back from it), so
	// the next change compares it in full.
	behind bool
}

// wants reports whether the watch's subscription covers name.
func (w *deltaWatch) wants(name string) bool {
	if w.sub.IsWildcard() {
		return true
	}
	_, ok := w.sub.SubscribedResources()[name]
	return ok
}

// deltaStream is what the cache knows of one delta stream, found by its
// response channel (the server makes one per stream): its parked watches,
// the types it has an answer outstanding for, and the removals held back
// from it.
//
// Removals are made before break: a type's removals wait while the stream
// has an answer of another type that carried updates and is not yet
// acknowledged (or is about to get one in the same change). So a route
// moved from cluster a to cluster b reaches Envoy as b, then the route,
// and a's removal only once Envoy has acknowledged the route: no request
// is routed to a cluster Envoy no longer has.
type deltaStream struct {
	parked map[string]*deltaWatch
	// unacked maps each type with an answer the stream has not asked
	// again since to whether that answer carried updates.
	unacked map[string]bool
	held    map[string]bool // types whose removals wait
	// coming lists the types with updates for the stream in the change
	// being answered (scratch for answerDelta).
	coming map[string]bool
}

// busy reports whether removals of typeURL must wait.
func (st *deltaStream) busy(typeURL string) bool {
	for t, updates := range st.unacked {
		if updates && t != typeURL {
			return true
		}
	}
	for t := range st.coming {
		if t != typeURL {
			return true
		}
	}
	return false
}

func (g *group) stream(ch chan cache.DeltaResponse) *deltaStream {
	st := g.streams[ch]
	if st == nil {
		st = &deltaStream{parked: map[string]*deltaWatch{}, unacked: map[string]bool{}, held: map[string]bool{}}
		g.streams[ch] = st
	}
	return st
}

// CreateDeltaWatch answers at once what the stream lacks of the node's
// snapshot, or parks the request until a SetSnapshot changes something it
// subscribes to. The first request of a wildcard subscription is answered
// even when there is nothing to send, as Envoy waits for it to finish
// initializing. A request acknowledges (or rejects) the stream's last
// answer of its type, which may release removals held back.
func (c *Cache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	g := c.group(c.hash.ID(req.GetNode()), true)
	typeURL := req.GetTypeUrl()
	w := &deltaWatch{typeURL: typeURL, req: req, sub: sub, ch: ch}
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.typ(typeURL)
	st := g.stream(ch)
	delete(st.unacked, typeURL)
	answered := false
	base := ts.syncedWith(req, sub)
	if base == ts {
		// An ACK (or NACK) of an answer that left the stream in sync:
		// nothing changed since, or the answer would have been sent.
	} else if g.set {
		var updates []*discoveryv3.Resource
		var removed []string
		if base != nil {
			// In sync with an earlier state: only what changed since.
			updates, removed = ts.deltaSince(w, base)
		} else {
			c.fullCompares.Add(1)
			updates, removed = ts.deltaFull(w)
		}
		held := len(removed) > 0 && st.busy(typeURL)
		if held {
			removed = nil
			st.held[typeURL] = true
		}
		if len(updates)+len(removed) > 0 || sub.IsWildcard() && req.GetResponseNonce() == "" {
			answered = ts.respondDelta(w, st, updates, removed, held)
		} else {
			w.behind = held
		}
	}
	if !answered {
		ts.delta[w] = struct{}{}
		st.parked[typeURL] = w
	}
	g.release(st)
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if ts := g.types[typeURL]; ts != nil {
			delete(ts.delta, w)
		}
		// The server cancels a type's watch when the stream asks again,
		// and every watch when the stream ends.
		if st := g.streams[ch]; st != nil {
			if st.parked[typeURL] == w {
				delete(st.parked, typeURL)
			}
			delete(st.unacked, typeURL)
			if len(st.parked) == 0 && len(st.unacked) == 0 {
				delete(g.streams, ch)
			}
		}
	}, nil
}

// release sends a stream the removals held back from it that need wait no
// longer, removals of the later types (the referrers) first.
func (g *group) release(st *deltaStream) {
	for i := len(g.order) - 1; i >= 0 && len(st.held) > 0; i-- {
		typeURL := g.order[i]
		w := st.parked[typeURL]
		if !st.held[typeURL] || w == nil || st.busy(typeURL) {
			continue
		}
		delete(st.held, typeURL)
		ts := g.types[typeURL]
		updates, removed := ts.deltaFull(w)
		if len(updates)+len(removed) > 0 && ts.respondDelta(w, st, updates, removed, false) {
			delete(ts.delta, w)
			delete(st.parked, typeURL)
		}
	}
}

// syncedWith returns the state (ts, or one of the states it replaced,
// see typeState.base) that the request's version map was left in sync
// with by an answer, and forgets the map there (the stream holds it
// until its next answer; a request that changes the subscription may have
// changed the map, and always takes the full comparison); nil when there
// is none. A map is recognized by identity: the server hands each
// stream's map back unchanged unless the subscription changes.
//
// A stream acknowledges its answer a round trip after it went out: under
// a steady stream of changes the state has often moved on by then, and
// comparing every such stream in full would make each change cost the
// size of the type times the number of streams.
func (ts *typeState) syncedWith(req *cache.DeltaRequest, sub cache.Subscription) *typeState {
	returned := sub.ReturnedResources()
	if returned == nil {
		return nil
	}
	id := reflect.ValueOf(returned).Pointer()
	for s := ts; s != nil; s = s.base {
		if _, ok := s.synced[id]; ok {
			delete(s.synced, id)
			if len(req.GetResourceNamesSubscribe())+len(req.GetResourceNamesUnsubscribe())+len(req.GetInitialResourceVersions()) > 0 {
				return nil
			}
			return s
		}
	}
	return nil
}

// deltaSince is what a watch in sync with base, a state ts replaced,
// lacks: base's changes since, compared with the stream's versions.
func (ts *typeState) deltaSince(w *deltaWatch, base *typeState) (updates []*discoveryv3.Resource, removed []string) {
	names := map[string]bool{}
	for s := ts; s != base; s = s.base {
		for _, n := range s.since.changed {
			names[n] = true
		}
		for _, n := range s.since.removed {
			names[n] = true
		}
	}
	returned := w.sub.ReturnedResources()
	for name := range names {
		if w.wants(name) {
			updates, removed = ts.compare(name, returned, updates, removed)
		}
	}
	sortDelta(updates, removed)
	return updates, removed
}

// compare adds name to updates when the stream (its versions returned)
// lacks this state's version of it, or to removed when the stream has it
// and this state does not.
func (ts *typeState) compare(name string, returned map[string]string, updates []*discoveryv3.Resource, removed []string) ([]*discoveryv3.Resource, []string) {
	v, had := returned[name]
	if e := ts.resources[name]; e != nil {
		if !had || v != e.version {
			updates = append(updates, e.res)
		}
	} else if had {
		removed = append(removed, name)
	}
	return updates, removed
}

// sortDelta puts an answer's updates and removals in name order.
func sortDelta(updates []*discoveryv3.Resource, removed []string) {
	sort.Slice(updates, func(i, j int) bool { return updates[i].GetName() < updates[j].GetName() })
	sort.Strings(removed)
}

// maxSynced bounds typeState.synced: entries of streams that closed
// before their next request stay until the type changes. Past the bound
// it starts again empty, which costs a full comparison per stream at
// worst.
const maxSynced = 1 << 16

// answerDelta answers the parked delta watches of the types a change
// touched, in type order. A parked watch is in sync with the state before
// the change, so only the changed and removed names can differ (unless it
// is behind, or this is the group's first snapshot: then it is compared in
// full). What every watch gets is worked out first, so that a stream's
// removals can wait for the updates it gets in the same change.
func (g *group) answerDelta(changes []change, first bool) {
	type answer struct {
		ts      *typeState
		w       *deltaWatch
		st      *deltaStream
		updates []*discoveryv3.Resource
		removed []string
		initial bool // a wildcard's first answer, due even when empty
	}
	var answers []answer
	removals := false
	for _, ch := range changes {
		ts := g.types[ch.typeURL]
		for w := range ts.delta {
			var a answer
			if first || w.behind {
				a.updates, a.removed = ts.deltaFull(w)
			} else {
				a.updates, a.removed = ts.deltaChanged(w, ch)
			}
			a.initial = first && w.sub.IsWildcard() && w.req.GetResponseNonce() == ""
			if len(a.updates)+len(a.removed) == 0 && !a.initial {
				continue
			}
			a.ts, a.w, a.st = ts, w, g.stream(w.ch)
			answers = append(answers, a)
			removals = removals || len(a.removed) > 0
		}
	}
	if removals {
		for _, a := range answers {
			if len(a.updates) > 0 {
				if a.st.coming == nil {
					a.st.coming = map[string]bool{}
				}
				a.st.coming[a.w.typeURL] = true
			}
		}
	}
	for _, a := range answers {
		held := len(a.removed) > 0 && a.st.busy(a.w.typeURL)
		if held {
			a.removed = nil
			a.st.held[a.w.typeURL] = true
		}
		delete(a.st.coming, a.w.typeURL)
		if len(a.updates)+len(a.removed) == 0 && !a.initial {
			a.w.behind = true
			continue
		}
		if a.ts.respondDelta(a.w, a.st, a.updates, a.removed, held) {
			delete(a.ts.delta, a.w)
			delete(a.st.parked, a.w.typeURL)
		}
	}
}

// deltaChanged is what a watch in sync with the previous state lacks,
// given what changed.
func (ts *typeState) deltaChanged(w *deltaWatch, ch change) (updates []*discoveryv3.Resource, removed []string) {
	returned := w.sub.ReturnedResources()
	for _, name := range ch.changed {
		if e := ts.resources[name]; w.wants(name) && returned[name] != e.version {
			updates = append(updates, e.res)
		}
	}
	for _, name := range ch.removed {
		if _, had := returned[name]; had && w.wants(name) {
			removed = append(removed, name)
		}
	}
	return updates, removed
}

// deltaFull compares what a watch's stream has with the whole state, as
// go-control-plane's SnapshotCache does on every request.
func (ts *typeState) deltaFull(w *deltaWatch) (updates []*discoveryv3.Resource, removed []string) {
	returned := w.sub.ReturnedResources()
	if w.sub.IsWildcard() {
		for name, e := range ts.resources {
			if v, ok := returned[name]; !ok || v != e.version {
				updates = append(updates, e.res)
			}
		}
		for name := range returned {
			if _, ok := ts.resources[name]; !ok {
				removed = append(removed, name)
			}
		}
	} else {
		for name := range w.sub.SubscribedResources() {
			updates, removed = ts.compare(name, returned, updates, removed)
		}
	}
	sortDelta(updates, removed)
	return updates, removed
}

// respondDelta sends a watch its answer: the resources, shared with every
// other stream, in a response message of its own (the server sets the
// nonce in it).
//
// The version map handed back is the stream's own, updated in place: the
// server keeps one per stream and type, passes it to each watch, and,
// between a watch's creation and its cancellation, leaves it to the cache
// (its cancel takes the group's lock, under which this runs). Updating it
// rather than copying it keeps a change's cost to what changed: a copy
// per stream of a thousand versions was most of the work of a flip. The
// only map copied is the one a stream's first request brought
// (initial_resource_versions), which belongs to the request.
//
// It reports whether the answer went out. The stream's channel holds one
// answer per type, so it is never full unless the server changes; then
// the watch stays parked, marked behind, rather than blocking every other
// stream. The map is updated after the send: the server stores it on
// receipt and reads it only through the cache (a watch's cancel, or the
// next watch), under the group's lock.
func (ts *typeState) respondDelta(w *deltaWatch, st *deltaStream, updates []*discoveryv3.Resource, removed []string, held bool) bool {
	next := w.sub.ReturnedResources()
	if next == nil || sameMap(next, w.req.GetInitialResourceVersions()) {
		next = maps.Clone(next)
		if next == nil {
			next = make(map[string]string, len(updates))
		}
	}
	resp := &cache.DeltaPassthroughResponse{
		DeltaRequest:   w.req,
		NextVersionMap: next,
		DeltaDiscoveryResponse: &discoveryv3.DeltaDiscoveryResponse{
			TypeUrl:           w.typeURL,
			Resources:         updates,
			RemovedResources:  removed,
			SystemVersionInfo: ts.version,
		},
	}
	select {
	case w.ch <- resp:
	default:
		w.behind = true
		return false
	}
	for _, r := range updates {
		next[r.GetName()] = r.GetVersion()
	}
	for _, name := range removed {
		delete(next, name)
	}
	st.unacked[w.typeURL] = st.unacked[w.typeURL] || len(updates) > 0
	w.behind = held
	if held {
		return true // not in sync: the next request compares in full
	}
	if len(ts.synced) >= maxSynced {
		clear(ts.synced)
	}
	ts.synced[reflect.ValueOf(next).Pointer()] = next
	return true
}

// sameMap reports whether a and b are the same map (not equal contents).
func sameMap(a, b map[string]string) bool {
	return a != nil && b != nil && reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

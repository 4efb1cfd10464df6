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
	req *cache.DeltaRequest
	sub cache.Subscription
	ch  chan cache.DeltaResponse
	// behind marks a watch that could not be answered (its stream's
	// channel was full): it is no longer in sync with the state it waits
	// on, so the next change compares it in full.
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

// CreateDeltaWatch answers at once what the stream lacks of the node's
// snapshot, or parks the request until a SetSnapshot changes something it
// subscribes to. The first request of a wildcard subscription is answered
// even when there is nothing to send, as Envoy waits for it to finish
// initializing.
func (c *Cache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	g := c.group(c.hash.ID(req.GetNode()), true)
	typeURL := req.GetTypeUrl()
	w := &deltaWatch{req: req, sub: sub, ch: ch}
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.typ(typeURL)
	if ts.stillSynced(req, sub) {
		// An ACK (or NACK) of an answer that left the stream in sync:
		// nothing changed since, or the answer would have been sent.
	} else if g.set {
		updates, removed := ts.deltaFull(w)
		if len(updates)+len(removed) > 0 || sub.IsWildcard() && req.GetResponseNonce() == "" {
			if ts.respondDelta(w, typeURL, updates, removed) {
				return func() {}, nil
			}
		}
	}
	ts.delta[w] = struct{}{}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if ts := g.types[typeURL]; ts != nil {
			delete(ts.delta, w)
		}
	}, nil
}

// stillSynced reports whether a request comes back with the version map
// of an answer that left its stream in sync with this state, and forgets
// the map (the stream holds it until its next answer; a request that
// changes the subscription may have changed the map, and always takes the
// full comparison). A map is recognized by identity: the server hands each
// stream's map back unchanged unless the subscription changes.
func (ts *typeState) stillSynced(req *cache.DeltaRequest, sub cache.Subscription) bool {
	returned := sub.ReturnedResources()
	if returned == nil {
		return false
	}
	id := reflect.ValueOf(returned).Pointer()
	if _, ok := ts.synced[id]; !ok {
		return false
	}
	delete(ts.synced, id)
	return len(req.GetResourceNamesSubscribe())+len(req.GetResourceNamesUnsubscribe())+len(req.GetInitialResourceVersions()) == 0
}

// maxSynced bounds typeState.synced: entries of streams that closed
// before their next request stay until the type changes. Past the bound
// it starts again empty, which costs a full comparison per stream at
// worst.
const maxSynced = 1 << 16

// answerDelta answers this type's parked delta watches after a change: a
// parked watch is in sync with the state before it, so only the changed
// and removed names can differ (unless it is behind, or this is the
// group's first snapshot: then it is compared in full).
func (ts *typeState) answerDelta(ch change, first bool) {
	for w := range ts.delta {
		var updates []*discoveryv3.Resource
		var removed []string
		if first || w.behind {
			updates, removed = ts.deltaFull(w)
		} else {
			updates, removed = ts.deltaChanged(w, ch)
		}
		if len(updates)+len(removed) == 0 && !(first && w.sub.IsWildcard() && w.req.GetResponseNonce() == "") {
			continue
		}
		if ts.respondDelta(w, ch.typeURL, updates, removed) {
			delete(ts.delta, w)
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
			v, had := returned[name]
			if e := ts.resources[name]; e != nil {
				if !had || v != e.version {
					updates = append(updates, e.res)
				}
			} else if had {
				removed = append(removed, name)
			}
		}
	}
	sort.Slice(updates, func(i, j int) bool { return updates[i].GetName() < updates[j].GetName() })
	sort.Strings(removed)
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
func (ts *typeState) respondDelta(w *deltaWatch, typeURL string, updates []*discoveryv3.Resource, removed []string) bool {
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
			TypeUrl:           typeURL,
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
	w.behind = false
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

package xdscache

import (
	"maps"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// sotwWatch is one state-of-the-world stream's open request for one type.
type sotwWatch struct {
	req *cache.Request
	sub cache.Subscription
	ch  chan cache.Response
}

// CreateWatch answers a state-of-the-world request at once when the
// stream's version differs from the node's, or when it subscribes to
// resources it has not been sent; otherwise it parks the request until the
// type's version changes. The rules are SnapshotCache's.
func (c *Cache) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	g := c.group(c.hash.ID(req.GetNode()), true)
	typeURL := req.GetTypeUrl()
	w := &sotwWatch{req: req, sub: sub, ch: ch}
	g.mu.Lock()
	defer g.mu.Unlock()
	ts := g.typ(typeURL)
	if g.set && (req.GetVersionInfo() != ts.version || ts.lacks(sub)) {
		ts.respondSotw(w, c.ads)
		return func() {}, nil
	}
	ts.sotw[w] = struct{}{}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if ts := g.types[typeURL]; ts != nil {
			delete(ts.sotw, w)
		}
	}, nil
}

// lacks reports whether a subscription covers a resource its stream has
// not been sent (newly subscribed, or newly wildcard).
func (ts *typeState) lacks(sub cache.Subscription) bool {
	returned := sub.ReturnedResources()
	if sub.IsWildcard() {
		for name := range ts.resources {
			if _, ok := returned[name]; !ok {
				return true
			}
		}
		return false
	}
	for name := range sub.SubscribedResources() {
		if _, ok := returned[name]; !ok {
			if _, ok := ts.resources[name]; ok {
				return true
			}
		}
	}
	return false
}

// answerSotw answers this type's parked state-of-the-world watches after
// its version changed.
func (ts *typeState) answerSotw(ads bool) {
	for w := range ts.sotw {
		if w.req.GetVersionInfo() == ts.version {
			continue
		}
		if ts.respondSotw(w, ads) {
			delete(ts.sotw, w)
		}
	}
}

// respondSotw sends a watch the type's resources (those it names, or all),
// and reports whether the watch is done with. Under the ADS rule a request
// that does not name every resource of the type is dropped unanswered:
// Envoy asks again once it knows them all.
func (ts *typeState) respondSotw(w *sotwWatch, ads bool) bool {
	names := w.req.GetResourceNames()
	if ads && len(names) > 0 && !ts.namedAll(names) {
		return true
	}
	select {
	case w.ch <- ts.sotwResponse(w.req, names, w.sub.ReturnedResources()):
		return true
	default:
		return false // the stream's channel is full: answer at the next change
	}
}

// namedAll reports whether names lists every resource of the type.
func (ts *typeState) namedAll(names []string) bool {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	for name := range ts.resources {
		if _, ok := set[name]; !ok {
			return false
		}
	}
	return true
}

// sotwResponse is the type's resources named (all when names is empty),
// in a response of its own around Anys shared with every stream.
//
// Clusters and listeners go whole, as the protocol requires. Other types
// (endpoints, routes, secrets) go as the protocol allows: only what the
// stream has not got at its current version (known, the versions sent
// before; nil: everything), so a health flip sends one assignment to each
// stream, not all of them. An answer may then carry no resource at all: it
// moves the stream to the new version.
func (ts *typeState) sotwResponse(req *cache.Request, names []string, known map[string]string) cache.Response {
	full := known == nil || cache.ResourceRequiresFullStateInSotw(req.GetTypeUrl())
	if len(names) == 0 {
		names = ts.sortedNames()
	} else {
		names = slices.Compact(slices.Sorted(slices.Values(names)))
	}
	var list []*anypb.Any
	returned := make(map[string]string, len(names))
	for _, name := range names {
		e := ts.resources[name]
		if e == nil {
			continue
		}
		returned[name] = e.version
		if full || known[name] != e.version {
			list = append(list, e.res.GetResource())
		}
	}
	return &cache.PassthroughResponse{
		Request:           req,
		ReturnedResources: returned,
		DiscoveryResponse: &discoveryv3.DiscoveryResponse{
			VersionInfo: ts.version,
			Resources:   list,
			TypeUrl:     req.GetTypeUrl(),
		},
	}
}

// sortedNames is every resource name of the type, sorted, built once per
// state.
func (ts *typeState) sortedNames() []string {
	if ts.names == nil {
		ts.names = slices.Sorted(maps.Keys(ts.resources))
	}
	return ts.names
}

package xdscache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
)

func set(tb testing.TB, c *Cache, e *estate) {
	tb.Helper()
	if err := c.SetSnapshot(context.Background(), "edge", e.snapshot()); err != nil {
		tb.Fatal(err)
	}
}

func has(typ, name, version string) func(map[string]map[string]string) bool {
	return func(h map[string]map[string]string) bool { return h[typ][name] == version }
}

func count(typ string, n int) func(map[string]map[string]string) bool {
	return func(h map[string]map[string]string) bool { return len(h[typ]) == n }
}

// lastOf is the last response of a type.
func lastOf(got []*discoveryv3.DeltaDiscoveryResponse, typ string) *discoveryv3.DeltaDiscoveryResponse {
	for i := len(got) - 1; i >= 0; i-- {
		if got[i].GetTypeUrl() == typ {
			return got[i]
		}
	}
	return nil
}

func names(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	return out
}

// A wildcard delta stream gets everything, then only what changed, with
// the snapshot's per-resource versions, and removals as removals.
func TestDeltaWildcard(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(50, 3)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", true)
	cl.subscribe(t, resource.ClusterType, nil, nil)
	cl.subscribe(t, resource.EndpointType, nil, nil)
	cl.waitFor(t, "initial clusters", count(resource.ClusterType, 50))
	cl.waitFor(t, "initial endpoints", count(resource.EndpointType, 50))

	e.gen["svc-0007"]++
	set(t, c, e)
	cl.waitFor(t, "the flip", has(resource.EndpointType, "svc-0007", "e1"))
	got := cl.responses()
	if n := names(lastOf(got, resource.EndpointType)); !slices.Equal(n, []string{"svc-0007"}) {
		t.Errorf("the flip's response carries %v; want [svc-0007] only", n)
	}
	if v := e.snapshot().GetVersionMap(resource.EndpointType)["svc-0007"]; v != "e1" {
		t.Fatalf("estate version %q", v) // the test's own sanity
	}

	delete(e.gen, "svc-0003")
	set(t, c, e)
	cl.waitFor(t, "the removal", func(h map[string]map[string]string) bool {
		_, c := h[resource.ClusterType]["svc-0003"]
		_, e := h[resource.EndpointType]["svc-0003"]
		return !c && !e
	})
	got = cl.responses()
	cds, eds := -1, -1
	for i, r := range got {
		if slices.Contains(r.GetRemovedResources(), "svc-0003") {
			if len(r.GetResources()) != 0 {
				t.Errorf("%s removal also carries %v", r.GetTypeUrl(), names(r))
			}
			switch r.GetTypeUrl() {
			case resource.ClusterType:
				cds = i
			case resource.EndpointType:
				eds = i
			}
		}
	}
	if cds < 0 || eds < 0 {
		t.Fatalf("removal responses: cluster at %d, endpoints at %d; want both", cds, eds)
	}
}

// A named delta subscription gets what it names only, follows
// subscription changes, and hears of a named resource's removal.
func TestDeltaNamed(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(20, 2)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", true)
	cl.subscribe(t, resource.EndpointType, []string{"svc-0001", "svc-0002"}, nil)
	cl.waitFor(t, "the two named", count(resource.EndpointType, 2))

	e.gen["svc-0005"]++
	e.gen["svc-0001"]++
	set(t, c, e)
	cl.waitFor(t, "svc-0001's change", has(resource.EndpointType, "svc-0001", "e1"))
	if n := names(lastOf(cl.responses(), resource.EndpointType)); !slices.Equal(n, []string{"svc-0001"}) {
		t.Errorf("response carries %v; want [svc-0001] only (svc-0005 is not subscribed)", n)
	}

	cl.subscribe(t, resource.EndpointType, []string{"svc-0003"}, []string{"svc-0002"})
	cl.waitFor(t, "newly subscribed svc-0003", has(resource.EndpointType, "svc-0003", "e0"))
	e.gen["svc-0002"]++
	e.gen["svc-0001"]++
	set(t, c, e)
	cl.waitFor(t, "svc-0001's second change", has(resource.EndpointType, "svc-0001", "e2"))
	for _, r := range cl.responses() {
		for _, n := range names(r) {
			if n == "svc-0002" && r.GetResources()[0].GetVersion() != "e0" {
				t.Errorf("unsubscribed svc-0002 was sent again: %v", names(r))
			}
		}
	}

	delete(e.gen, "svc-0001")
	set(t, c, e)
	cl.waitFor(t, "svc-0001 removed", func(h map[string]map[string]string) bool {
		_, ok := h[resource.EndpointType]["svc-0001"]
		return !ok
	})
	if r := lastOf(cl.responses(), resource.EndpointType); !slices.Equal(r.GetRemovedResources(), []string{"svc-0001"}) {
		t.Errorf("removal response removes %v; want [svc-0001]", r.GetRemovedResources())
	}
}

// A delta NACK is not answered by sending the rejected resources again;
// the next change is delivered.
func TestDeltaNACK(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(5, 2)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", false)
	cl.subscribe(t, resource.EndpointType, nil, nil)
	cl.waitFor(t, "initial", count(resource.EndpointType, 5))
	nonce := cl.responses()[0].GetNonce()
	if err := cl.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: nonce,
		ErrorDetail: &statuspb.Status{Code: 3, Message: "rejected"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(cl.responses()); n != 1 {
		t.Fatalf("%d responses after the NACK; want 1 (nothing resent)", n)
	}
	e.gen["svc-0002"]++
	set(t, c, e)
	cl.waitFor(t, "the change after the NACK", has(resource.EndpointType, "svc-0002", "e1"))
}

// State of the world: a wildcard type gets all its resources at the
// type's version; a change re-sends only the changed type, and of
// endpoints only the changed assignment (clusters go whole: see
// TestSotwClustersGoWhole); under the ADS rule a request naming some
// endpoint assignments only waits until it names them all.
func TestSotw(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(10, 2)
	set(t, c, e)
	addr := serve(t, c, nil)
	cl := newSotwClient(t, dial(t, addr), "a")
	var all []string
	for s := range 10 {
		all = append(all, svc(s))
	}
	cl.request(t, resource.ClusterType, nil)
	snap := e.snapshot()
	cds := cl.waitFor(t, resource.ClusterType, "clusters", func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) == 10 })
	if want := snap.GetVersion(resource.ClusterType); cds.GetVersionInfo() != want {
		t.Errorf("cluster version %q; want the type's %q", cds.GetVersionInfo(), want)
	}
	cl.request(t, resource.EndpointType, all)
	cl.waitFor(t, resource.EndpointType, "endpoints", func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) == 10 })
	cl.mu.Lock()
	before := cl.count
	cl.mu.Unlock()

	e.gen["svc-0004"]++
	set(t, c, e)
	want := e.snapshot().GetVersion(resource.EndpointType)
	flip := cl.waitFor(t, resource.EndpointType, "the flip", func(r *discoveryv3.DiscoveryResponse) bool {
		return r.GetVersionInfo() == want
	})
	var cla endpointv3.ClusterLoadAssignment
	if len(flip.GetResources()) != 1 || flip.GetResources()[0].UnmarshalTo(&cla) != nil || cla.GetClusterName() != "svc-0004" {
		t.Errorf("the flip's endpoints answer carries %d resources (first %q); want svc-0004's alone", len(flip.GetResources()), cla.GetClusterName())
	}
	time.Sleep(100 * time.Millisecond)
	cl.mu.Lock()
	after := cl.count
	cl.mu.Unlock()
	if after-before != 1 {
		t.Errorf("%d responses for an endpoints-only change; want 1", after-before)
	}

	other := newSotwClient(t, dial(t, addr), "b")
	other.request(t, resource.EndpointType, all[:2])
	time.Sleep(300 * time.Millisecond)
	other.mu.Lock()
	n := other.count
	other.mu.Unlock()
	if n != 0 {
		t.Errorf("a request naming 2 of 10 endpoint assignments was answered (%d responses); the ADS rule holds it", n)
	}
	other.request(t, resource.EndpointType, all)
	other.waitFor(t, resource.EndpointType, "all named", func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) == 10 })
}

// A stream that does not read holds back only itself, and once it reads
// it gets the latest versions, in few responses rather than one per
// change.
func TestSlowStreamBlocksNoOne(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(200, 10) // the first answer is larger than a stream's flow-control window
	set(t, c, e)
	addr := serve(t, c, nil)
	gate := make(chan struct{})
	slow := newGatedDeltaClient(t, dial(t, addr), "slow", true, gate)
	slow.subscribe(t, resource.EndpointType, nil, nil)
	fast := newDeltaClient(t, dial(t, addr), "fast", true)
	fast.subscribe(t, resource.EndpointType, nil, nil)
	fast.waitFor(t, "initial", count(resource.EndpointType, 200))

	for i := range 30 {
		name := svc(i % 7)
		e.gen[name]++
		set(t, c, e)
		start := time.Now()
		fast.waitFor(t, "flip "+name, has(resource.EndpointType, name, e.snapshot().GetVersionMap(resource.EndpointType)[name]))
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("flip %d took %s to reach the fast stream", i, d)
		}
	}
	close(gate)
	slow.waitFor(t, "the slow stream catching up", func(h map[string]map[string]string) bool {
		for s := range 7 {
			if h[resource.EndpointType][svc(s)] != e.snapshot().GetVersionMap(resource.EndpointType)[svc(s)] {
				return false
			}
		}
		return len(h[resource.EndpointType]) == 200
	})
	if n := len(slow.responses()); n > 4 {
		t.Errorf("the slow stream got %d responses for 30 changes; want the latest state in a few", n)
	}
}

// One change that adds a service reaches an ADS stream as clusters, then
// endpoints, then routes.
func TestOrder(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(5, 2)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", true)
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		cl.subscribe(t, typ, nil, nil)
	}
	cl.waitFor(t, "initial", func(h map[string]map[string]string) bool {
		return len(h[resource.ClusterType]) == 5 && len(h[resource.EndpointType]) == 5 && len(h[resource.RouteType]) == 1
	})
	n := len(cl.responses())
	e.gen["svc-new"] = 0
	set(t, c, e)
	cl.waitFor(t, "the new service", func(h map[string]map[string]string) bool {
		return h[resource.ClusterType]["svc-new"] != "" && h[resource.EndpointType]["svc-new"] != "" &&
			h[resource.RouteType]["routes"] == e.snapshot().GetVersionMap(resource.RouteType)["routes"]
	})
	var types []string
	for _, r := range cl.responses()[n:] {
		types = append(types, r.GetTypeUrl())
	}
	if want := []string{resource.ClusterType, resource.EndpointType, resource.RouteType}; !slices.Equal(types, want) {
		t.Errorf("responses in order %v; want %v", types, want)
	}
}

// ClearSnapshot forgets a group; GetSnapshot and GetStatusKeys say what is
// kept.
func TestClearSnapshot(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(3, 1)
	set(t, c, e)
	if _, err := c.GetSnapshot("edge"); err != nil {
		t.Fatal(err)
	}
	if keys := c.GetStatusKeys(); !slices.Equal(keys, []string{"edge"}) {
		t.Errorf("keys %v; want [edge]", keys)
	}
	c.ClearSnapshot("edge")
	if _, err := c.GetSnapshot("edge"); err == nil {
		t.Error("GetSnapshot after ClearSnapshot: no error")
	}
	if keys := c.GetStatusKeys(); len(keys) != 0 {
		t.Errorf("keys %v after ClearSnapshot; want none", keys)
	}
}

// Removals wait for what replaces them: when a service goes, its route
// goes first, and its cluster and endpoints are removed only once Envoy
// has acknowledged the routes without it (make before break).
func TestRemovalsWaitForTheRoutes(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(3, 1)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", false)
	ack := func(r *discoveryv3.DeltaDiscoveryResponse) {
		t.Helper()
		if err := cl.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		cl.subscribe(t, typ, nil, nil)
	}
	cl.waitFor(t, "initial", func(h map[string]map[string]string) bool {
		return len(h[resource.ClusterType]) == 3 && len(h[resource.EndpointType]) == 3 && len(h[resource.RouteType]) == 1 && len(h[resource.ListenerType]) == 1
	})
	for _, r := range cl.responses() {
		ack(r)
	}
	time.Sleep(100 * time.Millisecond)
	n := len(cl.responses())

	delete(e.gen, "svc-0002")
	set(t, c, e)
	routes := e.snapshot().GetVersionMap(resource.RouteType)["routes"]
	cl.waitFor(t, "the routes without svc-0002", has(resource.RouteType, "routes", routes))
	time.Sleep(300 * time.Millisecond)
	got := cl.responses()[n:]
	if len(got) != 1 || got[0].GetTypeUrl() != resource.RouteType {
		var types []string
		for _, r := range got {
			types = append(types, r.GetTypeUrl()+" removes "+strings.Join(r.GetRemovedResources(), ","))
		}
		t.Fatalf("before the routes are acknowledged the stream got %v; want the routes only", types)
	}
	ack(got[0])
	cl.waitFor(t, "svc-0002's cluster and endpoints removed", func(h map[string]map[string]string) bool {
		_, c := h[resource.ClusterType]["svc-0002"]
		_, e := h[resource.EndpointType]["svc-0002"]
		return !c && !e
	})
}

// A request that acknowledges an answer and changes the subscription at
// once is compared in full: a wildcard stream that unsubscribes a name in
// its ACK gets the resource again (the protocol's way to ask whether it
// still exists).
func TestACKWithSubscriptionChange(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(4, 1)
	set(t, c, e)
	cl := newDeltaClient(t, dial(t, serve(t, c, nil)), "a", false)
	cl.subscribe(t, resource.EndpointType, []string{"*"}, nil) // explicit: a legacy wildcard ignores unsubscriptions
	cl.waitFor(t, "initial", count(resource.EndpointType, 4))
	first := cl.responses()[0]
	cl.mu.Lock()
	delete(cl.have[resource.EndpointType], "svc-0001")
	cl.mu.Unlock()
	if err := cl.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: first.GetNonce(),
		ResourceNamesUnsubscribe: []string{"svc-0001"}}); err != nil {
		t.Fatal(err)
	}
	cl.waitFor(t, "svc-0001 sent again", has(resource.EndpointType, "svc-0001", "e0"))
}

// Fetch (REST xDS) answers with the type's resources at its version, and
// with an error when the client is up to date.
func TestFetch(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(3, 1)
	set(t, c, e)
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Cluster: "edge"}, TypeUrl: resource.ClusterType}
	resp, err := c.Fetch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := resp.GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	if want := e.snapshot().GetVersion(resource.ClusterType); out.GetVersionInfo() != want || len(out.GetResources()) != 3 {
		t.Errorf("fetch: version %q with %d clusters; want %q with 3", out.GetVersionInfo(), len(out.GetResources()), want)
	}
	req.VersionInfo = out.GetVersionInfo()
	if _, err := c.Fetch(context.Background(), req); err == nil {
		t.Error("fetch at the current version: no error")
	}
}

// State of the world sends clusters whole, as the protocol requires: a
// cluster added reaches the stream with every other cluster.
func TestSotwClustersGoWhole(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(5, 1)
	set(t, c, e)
	cl := newSotwClient(t, dial(t, serve(t, c, nil)), "a")
	cl.request(t, resource.ClusterType, nil)
	cl.waitFor(t, resource.ClusterType, "clusters", func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) == 5 })
	e.gen["svc-new"] = 0
	set(t, c, e)
	want := e.snapshot().GetVersion(resource.ClusterType)
	r := cl.waitFor(t, resource.ClusterType, "the new cluster", func(r *discoveryv3.DiscoveryResponse) bool { return r.GetVersionInfo() == want })
	if n := len(r.GetResources()); n != 6 {
		t.Errorf("the clusters answer after one was added carries %d; want all 6", n)
	}
}

// Streams that come and go leave nothing behind: no stream state, no
// watch.
func TestClosedStreamsLeaveNoState(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(5, 1)
	set(t, c, e)
	conn := dial(t, serve(t, c, nil))
	for i := range 50 {
		ctx, cancel := context.WithCancel(t.Context())
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ}
			if typ == resource.ClusterType {
				req.Node = &corev3.Node{Id: fmt.Sprint(i), Cluster: "edge"}
			}
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := stream.Recv(); err != nil { // answered; the other may be in flight
			t.Fatal(err)
		}
		cancel()
	}
	g := c.group("edge", false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		streams, watches := len(g.streams), 0
		for _, ts := range g.types {
			watches += len(ts.delta) + len(ts.sotw)
		}
		g.mu.Unlock()
		if streams == 0 && watches == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 50 streams closed the group keeps %d streams and %d watches; want none", streams, watches)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Under ADS, a state-of-the-world request for some secrets is answered
// with those: Envoy asks for a cluster's secrets before it knows the
// listeners' (holding it would stall its start until its fetch timeout).
func TestSotwSecretsAnsweredAsNamed(t *testing.T) {
	c := New(nodeKey{}, order, true)
	snap := newEstate(2, 1).snapshot()
	snap.VersionMap[resource.SecretType] = map[string]string{"mesh.leaf": "s1", "listener-cert": "s1"}
	snap.Resources[cache.GetResponseType(resource.SecretType)] = cache.NewResources("s1", []types.Resource{
		&tlsv3.Secret{Name: "listener-cert"}, &tlsv3.Secret{Name: "mesh.leaf"},
	})
	if err := c.SetSnapshot(context.Background(), "edge", snap); err != nil {
		t.Fatal(err)
	}
	cl := newSotwClient(t, dial(t, serve(t, c, nil)), "a")
	cl.request(t, resource.SecretType, []string{"mesh.leaf"})
	got := cl.waitFor(t, resource.SecretType, "the named secret", func(r *discoveryv3.DiscoveryResponse) bool { return len(r.GetResources()) == 1 })
	var s tlsv3.Secret
	if err := got.GetResources()[0].UnmarshalTo(&s); err != nil || s.GetName() != "mesh.leaf" {
		t.Errorf("answered %q (%v); want mesh.leaf", s.GetName(), err)
	}
}

// A snapshot that shares a type's maps with the last one (as a health
// patch shares every type but the endpoints) is not compared for that
// type; one with new maps is, and so is one whose maps are shared but
// whose version differs (the maps alone do not make a type the same).
// After a snapshot with new maps but nothing changed in a type (a full
// rebuild), the next one sharing those maps is not compared either.
func TestSetSnapshotSkipsSharedTypes(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(20, 2)
	set := func(s *cache.Snapshot) {
		t.Helper()
		if err := c.SetSnapshot(context.Background(), "g", s); err != nil {
			t.Fatal(err)
		}
	}
	g := c.group("g", true)
	// skipped reports, per type, whether diff would skip s.
	skipped := func(s *cache.Snapshot) map[string]bool {
		t.Helper()
		out := map[string]bool{}
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, typ := range order {
			old := g.typ(typ)
			ch, err := c.diff(typ, old, s)
			if err != nil {
				t.Fatal(err)
			}
			out[typ] = ch.next == old
		}
		return out
	}
	// patch is last with the estate's current endpoints, sharing the rest.
	patch := func(last *cache.Snapshot) *cache.Snapshot {
		fresh := e.snapshot()
		next := &cache.Snapshot{Resources: last.Resources, VersionMap: maps.Clone(last.VersionMap)}
		rt := cache.GetResponseType(resource.EndpointType)
		next.Resources[rt] = fresh.Resources[rt]
		next.VersionMap[resource.EndpointType] = fresh.VersionMap[resource.EndpointType]
		return next
	}
	onlyEndpointsCompared := func(step string, s *cache.Snapshot) {
		t.Helper()
		for typ, skip := range skipped(s) {
			if want := typ != resource.EndpointType; skip != want {
				t.Errorf("%s: %s skipped %v, want %v", step, typ, skip, want)
			}
		}
	}

	first := e.snapshot()
	if got := skipped(first); slices.Contains(slices.Collect(maps.Values(got)), true) {
		t.Errorf("first snapshot: skipped %v, want every type compared", got)
	}
	set(first)
	e.gen[svc(3)]++
	next := patch(first)
	onlyEndpointsCompared("a patch", next)
	set(next)
	if v := g.types[resource.EndpointType].resources[svc(3)].version; v != "e1" {
		t.Errorf("svc-0003's endpoints at version %q, want e1", v)
	}

	// A full rebuild: new maps, only the endpoints changed. The patch
	// after it shares the rebuild's maps.
	e.gen[svc(4)]++
	rebuilt := e.snapshot()
	set(rebuilt)
	e.gen[svc(5)]++
	onlyEndpointsCompared("a patch after a rebuild", patch(rebuilt))

	// Shared maps under another version: compared.
	again := &cache.Snapshot{Resources: rebuilt.Resources, VersionMap: rebuilt.VersionMap}
	ct := cache.GetResponseType(resource.ClusterType)
	again.Resources[ct].Version = "other"
	if skipped(again)[resource.ClusterType] {
		t.Errorf("clusters under a new version with the same maps: skipped")
	}
}

// A stream acknowledges its answer a round trip after it went out; when
// changes came meanwhile, the ACK gets what they changed (and only that),
// without comparing the stream's whole state: up to maxBase changes back.
// Older than that, or after a subscription change, it is compared in
// full, with the same result.
func TestLateACKGetsWhatChangedSince(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(50, 2)
	set := func() {
		t.Helper()
		if err := c.SetSnapshot(context.Background(), "g", e.snapshot()); err != nil {
			t.Fatal(err)
		}
	}
	set()
	node := &corev3.Node{Id: "n", Cluster: "g"}
	sub := streamv3.NewDeltaSubscription(nil, nil, nil, true)
	ch := make(chan cache.DeltaResponse, 4)
	nonce := 0
	// request opens the stream's next watch, as its ACK does, and returns
	// the names of the answer's updates (nil: no answer).
	request := func(subscribe []string) []string {
		t.Helper()
		req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: subscribe}
		if nonce > 0 {
			req.ResponseNonce = strconv.Itoa(nonce)
		}
		if _, err := c.CreateDeltaWatch(req, sub, ch); err != nil {
			t.Fatal(err)
		}
		select {
		case resp := <-ch:
			nonce++
			sub.SetReturnedResources(resp.GetNextVersionMap())
			r, err := resp.GetDeltaDiscoveryResponse()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, res := range r.GetResources() {
				names = append(names, res.GetName())
			}
			return names
		default:
			return nil
		}
	}
	if got := request(nil); len(got) != 50 {
		t.Fatalf("first answer: %d endpoints, want 50", len(got))
	}
	full := c.fullCompares.Load()
	for _, n := range []int{3, 7} {
		e.gen[svc(n)]++
		set()
	}
	if got, want := request(nil), []string{svc(3), svc(7)}; !slices.Equal(got, want) {
		t.Errorf("ACK after two changes: updates %v, want %v", got, want)
	}
	if got := request(nil); got != nil {
		t.Errorf("ACK in sync: updates %v, want no answer", got)
	}
	if n := c.fullCompares.Load() - full; n != 0 {
		t.Errorf("%d full comparisons for ACKs within %d changes, want 0", n, maxBase)
	}

	// The in-sync ACK parked a watch: the next change answers it at once.
	e.gen[svc(9)]++
	set()
	select {
	case resp := <-ch:
		nonce++
		sub.SetReturnedResources(resp.GetNextVersionMap())
	default:
		t.Fatal("a change did not answer the parked watch")
	}
	// More changes than the type remembers: compared in full, same result.
	var want []string
	for n := range maxBase + 1 {
		e.gen[svc(10+n)]++
		want = append(want, svc(10+n))
		set()
	}
	if got := request(nil); !slices.Equal(got, want) {
		t.Errorf("ACK after %d changes: updates %v, want %v", maxBase+1, got, want)
	}
	if n := c.fullCompares.Load() - full; n != 1 {
		t.Errorf("%d full comparisons for an ACK %d changes late, want 1", n, maxBase+1)
	}
}

// Through go-control-plane's own server, a stream's ACKs are recognized
// without comparing its whole state: the server hands each stream's
// version map back as the cache gave it (the cache relies on this, see
// syncedWith). Only each type's first request is compared in full. A
// server that copied the maps would still be served right, at the cost of
// a full comparison per ACK; this fails then, so an upgrade that changes
// it is noticed.
func TestServerHandsBackVersionMaps(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(40, 2)
	set(t, c, e)
	addr := serve(t, c, nil)
	client := newDeltaClient(t, dial(t, addr), "n", true)
	client.subscribe(t, resource.ClusterType, nil, nil)
	client.subscribe(t, resource.EndpointType, nil, nil)
	client.waitFor(t, "the first sync", func(h map[string]map[string]string) bool {
		return len(h[resource.ClusterType]) == 40 && len(h[resource.EndpointType]) == 40
	})
	base := c.fullCompares.Load()
	for i := range 10 {
		e.gen[svc(i)]++
		set(t, c, e)
		want := e.snapshot().GetVersionMap(resource.EndpointType)
		client.waitFor(t, fmt.Sprintf("flip %d", i), func(h map[string]map[string]string) bool {
			return maps.Equal(h[resource.EndpointType], want)
		})
	}
	if n := c.fullCompares.Load() - base; n != 0 {
		t.Errorf("%d full comparisons after the first sync over 10 flips; want 0 (every ACK recognized by its version map)", n)
	}
	if base > 2 {
		t.Errorf("%d full comparisons for the first sync of 2 types; want at most 2", base)
	}
}

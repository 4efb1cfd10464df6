package xdscache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// order is the push order the tests use: Switchyard's.
var order = []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteType}

// nodeKey keys nodes by node.cluster, as Switchyard does.
type nodeKey struct{}

func (nodeKey) ID(n *corev3.Node) string { return n.GetCluster() }

// estate is a group's config: services, each a cluster and an endpoint
// assignment of instances endpoints, a listener and a route config. A
// service's endpoints change with its generation.
type estate struct {
	instances int
	gen       map[string]int // service -> generation; absent: no such service
}

func newEstate(services, instances int) *estate {
	e := &estate{instances: instances, gen: map[string]int{}}
	for s := range services {
		e.gen[svc(s)] = 0
	}
	return e
}

func svc(s int) string { return fmt.Sprintf("svc-%04d", s) }

// snapshot builds the estate's snapshot, versions included, the way
// Switchyard's publisher does: per-resource versions from content, type
// versions from those.
func (e *estate) snapshot() *cache.Snapshot {
	names := make([]string, 0, len(e.gen))
	for n := range e.gen {
		names = append(names, n)
	}
	sort.Strings(names)
	items := map[string][]types.Resource{}
	versions := map[string]map[string]string{}
	for _, typ := range order {
		versions[typ] = map[string]string{}
	}
	add := func(typ, name, version string, r types.Resource) {
		items[typ] = append(items[typ], r)
		versions[typ][name] = version
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	var vhosts []*routev3.VirtualHost
	for _, name := range names {
		add(resource.ClusterType, name, "c1", &clusterv3.Cluster{Name: name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}})
		add(resource.EndpointType, name, fmt.Sprintf("e%d", e.gen[name]), e.cla(name))
		vhosts = append(vhosts, &routev3.VirtualHost{Name: name, Domains: []string{name}})
	}
	add(resource.ListenerType, "http", "l1", &listenerv3.Listener{Name: "http"})
	add(resource.RouteType, "routes", digest(names), &routev3.RouteConfiguration{Name: "routes", VirtualHosts: vhosts})
	snap := &cache.Snapshot{VersionMap: versions}
	for _, typ := range order {
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(typeVersion(versions[typ]), items[typ])
	}
	return snap
}

// cla is a service's endpoints: its generation shows in the first
// endpoint's health (odd: unhealthy) and weight.
func (e *estate) cla(name string) *endpointv3.ClusterLoadAssignment {
	gen := e.gen[name]
	var lbs []*endpointv3.LbEndpoint
	for i := range e.instances {
		health := corev3.HealthStatus_HEALTHY
		if i == 0 && gen%2 == 1 {
			health = corev3.HealthStatus_UNHEALTHY
		}
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Hostname: fmt.Sprintf("%s-%d", name, i),
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.0.%d.%d", len(name), i+1), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
			}},
			HealthStatus: health,
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func digest(names []string) string {
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n + ";"))
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func typeVersion(versions map[string]string) string {
	names := make([]string, 0, len(versions))
	for n := range versions {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n + "=" + versions[n] + ";"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// serve runs go-control-plane's xDS server (ADS) on c, on loopback, and
// returns its address.
func serve(tb testing.TB, c cache.Cache, cb serverv3.Callbacks) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	if cb == nil {
		cb = serverv3.CallbackFuncs{}
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, c, cb))
	go gs.Serve(lis)
	tb.Cleanup(func() { cancel(); gs.Stop() })
	return lis.Addr().String()
}

func dial(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// deltaClient is a delta ADS stream. It records what it holds per type
// (name -> version) and, when ack is set, ACKs every response like Envoy.
type deltaClient struct {
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *corev3.Node

	mu       sync.Mutex
	changed  *sync.Cond
	have     map[string]map[string]string
	got      []*discoveryv3.DeltaDiscoveryResponse // every response, in order
	gate     chan struct{}                         // closed when the client may read
	onChange func(*deltaClient)                    // after each response, without mu
}

func newDeltaClient(tb testing.TB, conn *grpc.ClientConn, id string, ack bool) *deltaClient {
	tb.Helper()
	open := make(chan struct{})
	close(open)
	return newGatedDeltaClient(tb, conn, id, ack, open)
}

// newGatedDeltaClient is a delta client that reads only once gate is
// closed.
func newGatedDeltaClient(tb testing.TB, conn *grpc.ClientConn, id string, ack bool, gate chan struct{}) *deltaClient {
	tb.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	c := &deltaClient{stream: stream, node: &corev3.Node{Id: id, Cluster: "edge"}, have: map[string]map[string]string{}, gate: gate}
	c.changed = sync.NewCond(&c.mu)
	go c.run(ack)
	return c
}

func (c *deltaClient) run(ack bool) {
	for {
		<-c.gate
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		c.mu.Lock()
		typ := resp.GetTypeUrl()
		if c.have[typ] == nil {
			c.have[typ] = map[string]string{}
		}
		for _, r := range resp.GetResources() {
			c.have[typ][r.GetName()] = r.GetVersion()
		}
		for _, n := range resp.GetRemovedResources() {
			delete(c.have[typ], n)
		}
		c.got = append(c.got, resp)
		c.changed.Broadcast()
		c.mu.Unlock()
		if c.onChange != nil {
			c.onChange(c)
		}
		if ack {
			if c.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}) != nil {
				return
			}
		}
	}
}

// subscribe sends a delta request (the first carries the node).
func (c *deltaClient) subscribe(tb testing.TB, typ string, sub, unsub []string) {
	tb.Helper()
	c.mu.Lock()
	first := len(c.got) == 0 && c.node != nil
	c.mu.Unlock()
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}
	if first {
		req.Node = c.node
	}
	if err := c.stream.Send(req); err != nil {
		tb.Fatal(err)
	}
}

// waitFor blocks until ok holds of what the client has, or fails.
func (c *deltaClient) waitFor(tb testing.TB, what string, ok func(have map[string]map[string]string) bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	timer := time.AfterFunc(10*time.Second, func() { c.mu.Lock(); c.changed.Broadcast(); c.mu.Unlock() })
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !ok(c.have) {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: never happened; client has %v", what, summary(c.have))
		}
		c.changed.Wait()
	}
}

// responses returns the responses received so far.
func (c *deltaClient) responses() []*discoveryv3.DeltaDiscoveryResponse {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*discoveryv3.DeltaDiscoveryResponse(nil), c.got...)
}

func summary(have map[string]map[string]string) map[string]int {
	out := map[string]int{}
	for typ, m := range have {
		out[typ[len("type.googleapis.com/"):]] = len(m)
	}
	return out
}

// sotwClient is a state-of-the-world ADS stream that ACKs every response.
type sotwClient struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node

	mu      sync.Mutex
	changed *sync.Cond
	last    map[string]*discoveryv3.DiscoveryResponse // by type
	names   map[string][]string                       // what each type subscribes to
	count   int
	// have is what the client holds, like Envoy: clusters and listeners
	// replaced by each answer, other types merged (name -> bytes).
	have map[string]map[string][]byte
}

func newSotwClient(tb testing.TB, conn *grpc.ClientConn, id string) *sotwClient {
	tb.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	c := &sotwClient{stream: stream, node: &corev3.Node{Id: id, Cluster: "edge"}, last: map[string]*discoveryv3.DiscoveryResponse{},
		names: map[string][]string{}, have: map[string]map[string][]byte{}}
	c.changed = sync.NewCond(&c.mu)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.last[resp.GetTypeUrl()] = resp
			c.count++
			typ := resp.GetTypeUrl()
			if c.have[typ] == nil || cache.ResourceRequiresFullStateInSotw(typ) {
				c.have[typ] = map[string][]byte{}
			}
			for _, r := range resp.GetResources() {
				c.have[typ][nameOf(typ, r.GetValue())] = r.GetValue()
			}
			names := c.names[resp.GetTypeUrl()]
			c.changed.Broadcast()
			c.mu.Unlock()
			if stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
				ResponseNonce: resp.GetNonce(), ResourceNames: names}) != nil {
				return
			}
		}
	}()
	return c
}

// request asks for a type's resources by name (none: all), with the
// version and nonce last received.
func (c *sotwClient) request(tb testing.TB, typ string, names []string) {
	tb.Helper()
	c.mu.Lock()
	c.names[typ] = names
	last := c.last[typ]
	c.mu.Unlock()
	if err := c.stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typ, ResourceNames: names,
		VersionInfo: last.GetVersionInfo(), ResponseNonce: last.GetNonce()}); err != nil {
		tb.Fatal(err)
	}
}

// waitFor blocks until ok holds of the last response of typ, or fails.
func (c *sotwClient) waitFor(tb testing.TB, typ, what string, ok func(*discoveryv3.DiscoveryResponse) bool) *discoveryv3.DiscoveryResponse {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	timer := time.AfterFunc(10*time.Second, func() { c.mu.Lock(); c.changed.Broadcast(); c.mu.Unlock() })
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.last[typ] == nil || !ok(c.last[typ]) {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: never happened; last %s response has %d resources, version %q", what, typ,
				len(c.last[typ].GetResources()), c.last[typ].GetVersionInfo())
		}
		c.changed.Wait()
	}
	return c.last[typ]
}

// nameOf is the name of a marshaled cluster or endpoint assignment.
func nameOf(typ string, b []byte) string {
	if typ == resource.EndpointType {
		var cla endpointv3.ClusterLoadAssignment
		_ = proto.Unmarshal(b, &cla)
		return cla.GetClusterName()
	}
	var cl clusterv3.Cluster
	_ = proto.Unmarshal(b, &cl)
	return cl.GetName()
}

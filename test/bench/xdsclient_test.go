package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-io/switchyard/envoy"
)

// xdsClient is a delta xDS client standing in for one Envoy (thousands of
// real Envoys do not fit on one machine). It ACKs every response, as
// Envoy does, and keeps each endpoint's health and when that last changed,
// so a benchmark reads when each client saw a change, not when it got
// round to asking. When its stream ends it opens another, as Envoy does,
// keeping what it knows.
type xdsClient struct {
	id   string
	opts clientOptions

	mu       sync.Mutex
	changed  *sync.Cond
	clusters map[string][]string      // cluster -> its endpoints, as last assigned
	eps      map[string]endpointState // "ip:port" -> what the client knows of it
	routes   map[string]time.Time     // watched route path prefix -> when the client first had it (zero: not yet)
	stream   int                      // streams opened: 1, and one more per reconnect
	got      map[string]int           // resources received on the current stream, by type
	gotAt    map[string]time.Time     // when the current stream last brought resources, by type
	fullAt   time.Time                // when it ACKed the response that made the current stream's config full
}

// clientOptions say what an xdsClient asks for and how it answers.
type clientOptions struct {
	// wildcard lists the types the stream asks for by wildcard.
	wildcard []string
	// routes names route configurations to ask for (RDS), as an Envoy does
	// once its listeners name them.
	routes []string
	// followCDS asks, as an Envoy sidecar does, for the endpoints of every
	// EDS cluster that CDS brings (following CDS changes).
	followCDS bool
	// lean keeps no endpoint or route state, only counts: for thousands
	// of clients in one process.
	lean bool
	// want is, by type, how many resources a stream must bring before the
	// client's config counts as full (fullAt).
	want map[string]int
	// answer is how the client answers each response.
	answer answer
	// stuck makes a client that never reads its stream once it has asked.
	stuck bool
	// pause makes a slow reader: after each response it stops reading for
	// this long, so gRPC flow control holds back what the server sends.
	pause time.Duration
}

// answer is how a client answers a response.
type answer int

const (
	ackAll   answer = iota // ACK every response, as Envoy does
	neverACK               // read every response, answer none
	nackAll                // reject every response, with an error detail
)

type endpointState struct {
	usable bool      // healthy or health unknown: Envoy sends it traffic
	since  time.Time // when the client saw usable change, or the endpoint first
}

// Envoy's xDS retry: jittered exponential back-off from 500 ms to 30 s,
// reset once a stream brings a response.
const (
	retryBase = 500 * time.Millisecond
	retryMax  = 30 * time.Second
)

// dial opens a plaintext gRPC connection to a loopback xDS server, closed
// at cleanup. It reconnects within a second of the server coming back, so
// the clients' own back-off (Envoy's) paces their reconnects, not gRPC's.
func dial(b *testing.B, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	b.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}, MinConnectTimeout: 5 * time.Second})}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// startXDSClient opens a delta ADS stream as node. With viaCDS it asks, as
// an Envoy sidecar does, for every cluster and then for the endpoints of
// its EDS clusters (following CDS changes); without, for every endpoint
// assignment (an edge group, whose clusters are all EDS). The client stops
// with ctx.
func startXDSClient(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, viaCDS bool) (*xdsClient, error) {
	if viaCDS {
		return startClient(ctx, conn, node, clientOptions{wildcard: []string{resource.ClusterType}, followCDS: true})
	}
	return startClient(ctx, conn, node, clientOptions{wildcard: []string{resource.EndpointType}})
}

// startClient opens a delta ADS stream as node, asking for what opts say,
// and serves it, and the streams after it, until ctx ends.
func startClient(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, opts clientOptions) (*xdsClient, error) {
	c := &xdsClient{id: node.GetId(), opts: opts, clusters: map[string][]string{}, eps: map[string]endpointState{},
		routes: map[string]time.Time{}}
	c.changed = sync.NewCond(&c.mu)
	stream, err := c.open(ctx, conn, node)
	if err != nil {
		return nil, err
	}
	go func() {
		attempt := 0
		for {
			if c.serve(stream) {
				attempt = 0
			}
			for {
				if ctx.Err() != nil {
					return
				}
				wait := min(retryBase<<attempt, retryMax)
				attempt = min(attempt+1, 6)
				time.Sleep(rand.N(wait))
				if stream, err = c.open(ctx, conn, node); err == nil {
					break
				}
			}
		}
	}()
	return c, nil
}

// open starts a stream (waiting for the connection) and sends its first
// requests; no names is a wildcard subscription.
func (c *xdsClient) open(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node) (grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse], error) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.stream++
	c.got, c.gotAt = map[string]int{}, map[string]time.Time{}
	c.fullAt = time.Time{}
	c.mu.Unlock()
	reqs := make([]*discoveryv3.DeltaDiscoveryRequest, 0, len(c.opts.wildcard)+1)
	for _, t := range c.opts.wildcard {
		reqs = append(reqs, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t})
	}
	if len(c.opts.routes) > 0 {
		reqs = append(reqs, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: c.opts.routes})
	}
	reqs[0].Node = node
	for _, r := range reqs {
		if err := stream.Send(r); err != nil {
			return nil, err
		}
	}
	return stream, nil
}

// serve reads and answers responses until the stream ends, and reports
// whether any came.
func (c *xdsClient) serve(stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) (got bool) {
	if c.opts.stuck {
		<-stream.Context().Done()
		return false
	}
	eds := map[string]string{} // EDS cluster -> the assignment name it asked for
	for {
		if got && c.opts.pause > 0 {
			time.Sleep(c.opts.pause)
		}
		resp, err := stream.Recv()
		if err != nil {
			return got
		}
		got = true
		var follow *discoveryv3.DeltaDiscoveryRequest
		switch t := resp.GetTypeUrl(); {
		case t == resource.ClusterType && c.opts.followCDS:
			follow = followClusters(resp, eds)
		case t == resource.EndpointType && !c.opts.lean:
			c.assign(resp)
		case t == resource.RouteType && !c.opts.lean:
			c.route(resp)
		}
		reply := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		switch c.opts.answer {
		case neverACK:
			reply = nil
		case nackAll:
			reply.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: "benchmark client rejects everything"}
		}
		if reply != nil && stream.Send(reply) != nil {
			return got
		}
		c.count(resp, reply != nil && reply.ErrorDetail == nil)
		if follow != nil && stream.Send(follow) != nil {
			return got
		}
	}
}

// count adds a response's resources to the stream's counts and, once they
// reach opts.want and the response was ACKed, marks the config full.
func (c *xdsClient) count(resp *discoveryv3.DeltaDiscoveryResponse, acked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(resp.GetResources()) > 0 {
		c.got[resp.GetTypeUrl()] += len(resp.GetResources())
		c.gotAt[resp.GetTypeUrl()] = time.Now()
		c.changed.Broadcast()
	}
	if !acked || !c.fullAt.IsZero() {
		return
	}
	for t, n := range c.opts.want {
		if c.got[t] < n {
			return
		}
	}
	c.fullAt = time.Now()
	c.changed.Broadcast()
}

// route records when an RDS response first brought a route for each path
// prefix watched (watchRoute). It looks for the prefix in the resource's
// bytes rather than decoding 1,000 routes per client per response: the
// benchmark would otherwise time its own decoding on the same cores.
func (c *xdsClient) route(resp *discoveryv3.DeltaDiscoveryResponse) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range resp.GetResources() {
		for prefix, at := range c.routes {
			if at.IsZero() && bytes.Contains(r.GetResource().GetValue(), []byte(prefix)) {
				c.routes[prefix] = now
			}
		}
	}
	c.changed.Broadcast()
}

// watchRoute makes the client note when a route for the path prefix
// arrives (waitRoute).
func (c *xdsClient) watchRoute(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.routes[prefix]; !ok {
		c.routes[prefix] = time.Time{}
	}
}

// followClusters updates eds (the EDS clusters known, and the assignment
// each uses) from a CDS response and returns the EDS request that
// subscribes to new assignments and drops gone ones, or nil.
func followClusters(resp *discoveryv3.DeltaDiscoveryResponse, eds map[string]string) *discoveryv3.DeltaDiscoveryRequest {
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType}
	drop := func(cluster string) {
		if name, ok := eds[cluster]; ok {
			req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, name)
			delete(eds, cluster)
		}
	}
	for _, r := range resp.GetResources() {
		var cl clusterv3.Cluster
		if r.GetResource().UnmarshalTo(&cl) != nil {
			continue
		}
		name := cl.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = cl.GetName()
		}
		if cl.GetType() != clusterv3.Cluster_EDS || eds[cl.GetName()] != name {
			drop(cl.GetName())
		}
		if cl.GetType() == clusterv3.Cluster_EDS && eds[cl.GetName()] == "" {
			eds[cl.GetName()] = name
			req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, name)
		}
	}
	for _, name := range resp.GetRemovedResources() {
		drop(name)
	}
	if len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 {
		return nil
	}
	return req
}

// assign applies an EDS response: each assignment replaces its cluster's
// endpoints; an endpoint gone, or a removed assignment's, is not usable.
func (c *xdsClient) assign(resp *discoveryv3.DeltaDiscoveryResponse) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range resp.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if r.GetResource().UnmarshalTo(&cla) != nil {
			continue
		}
		usable := map[string]bool{}
		for _, loc := range cla.GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				h := e.GetHealthStatus()
				usable[net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))] = h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN
			}
		}
		c.replace(cla.GetClusterName(), usable, now)
	}
	for _, name := range resp.GetRemovedResources() {
		c.replace(name, nil, now)
	}
	c.changed.Broadcast()
}

// replace sets a cluster's endpoints; c.mu is held.
func (c *xdsClient) replace(cluster string, usable map[string]bool, now time.Time) {
	set := func(addr string, u bool) {
		if st, ok := c.eps[addr]; !ok || st.usable != u {
			c.eps[addr] = endpointState{usable: u, since: now}
		}
	}
	for _, addr := range c.clusters[cluster] {
		if _, ok := usable[addr]; !ok {
			set(addr, false)
		}
	}
	addrs := make([]string, 0, len(usable))
	for addr, u := range usable {
		set(addr, u)
		addrs = append(addrs, addr)
	}
	c.clusters[cluster] = addrs
}

// wait blocks until the client has endpoint addr usable (or known and not
// usable) and returns since when, or false once the deadline passes.
func (c *xdsClient) wait(addr string, usable bool, deadline time.Time) (time.Time, bool) {
	return c.until(deadline, func() (time.Time, bool) {
		st, ok := c.eps[addr]
		return st.since, ok && st.usable == usable
	})
}

// waitRoute blocks until the client has a route matching the path prefix
// (watched with watchRoute before it could arrive) and returns since when,
// or false once the deadline passes.
func (c *xdsClient) waitRoute(prefix string, deadline time.Time) (time.Time, bool) {
	return c.until(deadline, func() (time.Time, bool) {
		at := c.routes[prefix]
		return at, !at.IsZero()
	})
}

// waitFull blocks until a stream numbered stream or later has brought the
// client's full config, ACKed, and returns when, or false once the
// deadline passes.
func (c *xdsClient) waitFull(stream int, deadline time.Time) (time.Time, bool) {
	return c.until(deadline, func() (time.Time, bool) {
		return c.fullAt, c.stream >= stream && !c.fullAt.IsZero()
	})
}

// received is how many resources of typeURL the current stream has
// brought.
func (c *xdsClient) received(typeURL string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[typeURL]
}

// waitMore blocks until the current stream has brought more than n
// resources of typeURL and returns when it last brought one, or false once
// the deadline passes: how a lean client sees a change.
func (c *xdsClient) waitMore(typeURL string, n int, deadline time.Time) (time.Time, bool) {
	return c.until(deadline, func() (time.Time, bool) {
		return c.gotAt[typeURL], c.got[typeURL] > n
	})
}

// until blocks until done (called with c.mu held) is true and returns its
// time, or false once the deadline passes.
func (c *xdsClient) until(deadline time.Time, done func() (time.Time, bool)) (time.Time, bool) {
	c.mu.Lock()
	at, ok := done()
	c.mu.Unlock()
	if ok { // most often: no timer needed
		return at, true
	}
	timer := time.AfterFunc(time.Until(deadline), func() {
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if at, ok := done(); ok {
			return at, true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		c.changed.Wait()
	}
}

// waitAll waits until every client has endpoint addr usable (or not) and
// returns when the last of them saw it.
func waitAll(clients []*xdsClient, addr string, usable bool, timeout time.Duration) (time.Time, error) {
	at, err := waitEach(clients, timeout, func(c *xdsClient, deadline time.Time) (time.Time, bool) {
		return c.wait(addr, usable, deadline)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%w see endpoint %s usable=%t within %s", err, addr, usable, timeout)
	}
	return latest(at), nil
}

// waitEach waits on every client in turn, with one deadline, and returns
// when each was done; an error names the first client that was not.
func waitEach(clients []*xdsClient, timeout time.Duration, wait func(c *xdsClient, deadline time.Time) (time.Time, bool)) ([]time.Time, error) {
	deadline := time.Now().Add(timeout)
	at := make([]time.Time, len(clients))
	for i, c := range clients {
		var ok bool
		if at[i], ok = wait(c, deadline); !ok {
			return nil, fmt.Errorf("client %s did not", c.id)
		}
	}
	return at, nil
}

// latest is the last of times.
func latest(times []time.Time) time.Time {
	var last time.Time
	for _, t := range times {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// since is how long after t0 each of times is.
func since(t0 time.Time, times []time.Time) []time.Duration {
	d := make([]time.Duration, len(times))
	for i, t := range times {
		d[i] = t.Sub(t0)
	}
	return d
}

// startClients starts n clients of the xDS server at xds, node(i) naming
// client i, 100 streams to a gRPC connection (Switchyard's default cap a
// connection; Envoys share none, but 1,000s of connections would measure
// this process). They stop with the benchmark.
func startClients(b *testing.B, xds string, n int, node func(i int) *corev3.Node, opts clientOptions, dialOpts ...grpc.DialOption) []*xdsClient {
	b.Helper()
	clients := make([]*xdsClient, n)
	var conn *grpc.ClientConn
	for i := range clients {
		if i%100 == 0 {
			conn = dial(b, xds, dialOpts...)
		}
		c, err := startClient(b.Context(), conn, node(i), opts)
		if err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		clients[i] = c
	}
	return clients
}

// edgeNode names client i of edge group g as an Envoy would.
func edgeNode(g int) func(i int) *corev3.Node {
	return func(i int) *corev3.Node {
		return &corev3.Node{Id: fmt.Sprintf("%s-%d", groupName(g), i), Cluster: groupName(g)}
	}
}

// edgeEnvoy asks for everything an edge Envoy of a group routing to
// services asks for: every cluster, endpoint assignment and listener by
// wildcard, and the route configuration its listener names. Its config is
// full once a stream has brought a cluster and an assignment for each
// service, the listener and the routes.
func edgeEnvoy(services int) clientOptions {
	return clientOptions{
		wildcard: []string{resource.ClusterType, resource.EndpointType, resource.ListenerType},
		routes:   []string{envoy.RouteConfigName("http")},
		want:     map[string]int{resource.ClusterType: services, resource.EndpointType: services, resource.ListenerType: 1, resource.RouteType: 1},
	}
}

// waitAllFull waits until every client has its full config on stream
// stream[i] or later (nil: any) and returns when each had it.
func waitAllFull(clients []*xdsClient, stream []int, timeout time.Duration) ([]time.Time, error) {
	i := 0
	at, err := waitEach(clients, timeout, func(c *xdsClient, deadline time.Time) (time.Time, bool) {
		n := 1
		if stream != nil {
			n = stream[i]
		}
		i++
		return c.waitFull(n, deadline)
	})
	if err != nil {
		return nil, fmt.Errorf("%w have its full config within %s", err, timeout)
	}
	return at, nil
}

package bench

import (
	"context"
	"fmt"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// xdsClient is a delta xDS client standing in for one Envoy (thousands of
// real Envoys do not fit on one machine). It ACKs every response, as
// Envoy does, and keeps each endpoint's health and when that last changed,
// so a benchmark reads when each client saw a change, not when it got
// round to asking.
type xdsClient struct {
	id string

	mu       sync.Mutex
	changed  *sync.Cond
	clusters map[string][]string      // cluster -> its endpoints, as last assigned
	eps      map[string]endpointState // "ip:port" -> what the client knows of it
}

type endpointState struct {
	usable bool      // healthy or health unknown: Envoy sends it traffic
	since  time.Time // when the client saw usable change, or the endpoint first
}

// dial opens a plaintext gRPC connection to a loopback xDS server, closed
// at cleanup.
func dial(b *testing.B, addr string) *grpc.ClientConn {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// startXDSClient opens a delta ADS stream as node. With viaCDS it asks, as
// an Envoy sidecar does, for every cluster and then for the endpoints of
// its EDS clusters (following CDS changes); without, for every endpoint
// assignment (an edge group, whose clusters are all EDS). The stream ends
// with ctx.
func startXDSClient(ctx context.Context, conn *grpc.ClientConn, node *corev3.Node, viaCDS bool) (*xdsClient, error) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	c := &xdsClient{id: node.GetId(), clusters: map[string][]string{}, eps: map[string]endpointState{}}
	c.changed = sync.NewCond(&c.mu)
	first := resource.EndpointType
	if viaCDS {
		first = resource.ClusterType
	}
	// No names: a wildcard subscription.
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: first}); err != nil {
		return nil, err
	}
	go func() {
		eds := map[string]string{} // EDS cluster -> the assignment name it asked for
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			var follow *discoveryv3.DeltaDiscoveryRequest
			switch resp.GetTypeUrl() {
			case resource.EndpointType:
				c.assign(resp)
			case resource.ClusterType:
				follow = followClusters(resp, eds)
			}
			if stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}) != nil {
				return
			}
			if follow != nil && stream.Send(follow) != nil {
				return
			}
		}
	}()
	return c, nil
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
	timer := time.AfterFunc(time.Until(deadline), func() {
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st, ok := c.eps[addr]; ok && st.usable == usable {
			return st.since, true
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
	deadline := time.Now().Add(timeout)
	var last time.Time
	for _, c := range clients {
		at, ok := c.wait(addr, usable, deadline)
		if !ok {
			return last, fmt.Errorf("client %s did not see endpoint %s usable=%t within %s", c.id, addr, usable, timeout)
		}
		if at.After(last) {
			last = at
		}
	}
	return last, nil
}

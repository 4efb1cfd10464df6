package bench

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var proxies = flag.Int("proxies", 200, "xDS clients in BenchmarkFanout")

// BenchmarkFanout measures pushing one change to many proxies: -proxies
// delta xDS clients (small Go clients that subscribe to every endpoint
// assignment and ACK like Envoy; thousands of real Envoys do not fit on
// one machine) of one proxy group. Each op flips one instance's check in
// Consul and times until the last client has the new endpoint health.
func BenchmarkFanout(b *testing.B) {
	w, _, xds := startControlPlane(b)
	conns := make([]*grpc.ClientConn, 0, *proxies/100+1)
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	clients := make([]*edsClient, *proxies)
	start := time.Now()
	for i := range clients {
		if i%100 == 0 { // one connection per 100 streams, as many Envoys share none
			conn, err := grpc.NewClient(xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, conn)
		}
		c, err := newEDSClient(ctx, conns[len(conns)-1], fmt.Sprintf("fake-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	waitAll := func(what string, svc int, want corev3.HealthStatus) time.Duration {
		b.Helper()
		t0 := time.Now()
		for _, c := range clients {
			if !c.wait(serviceName(svc), want, time.Minute) {
				b.Fatalf("%s: client %s never saw %s instance 0 %s", what, c.id, serviceName(svc), want)
			}
		}
		return time.Since(t0)
	}
	waitAll("initial sync", *services-1, corev3.HealthStatus_HEALTHY)
	synced := time.Since(start)
	for i := range 10 { // warm up
		w.setCheck(b, *services-1-i/2, i%2 == 0)
		want := corev3.HealthStatus_UNHEALTHY
		if i%2 == 1 {
			want = corev3.HealthStatus_HEALTHY
		}
		waitAll("warm-up", *services-1-i/2, want)
	}

	b.Run("health-flip", func(b *testing.B) {
		var took []time.Duration
		for i := range b.N {
			svc := i % *services
			critical := (i / *services)%2 == 0
			want := corev3.HealthStatus_HEALTHY
			if critical {
				want = corev3.HealthStatus_UNHEALTHY
			}
			t0 := time.Now()
			w.setCheck(b, svc, critical)
			waitAll("flip", svc, want)
			took = append(took, time.Since(t0))
		}
		report(b, took)
		b.ReportMetric(float64(*proxies), "proxies")
		b.ReportMetric(synced.Seconds()*1e3, "all-synced-ms")
		b.ReportMetric(w.memory(b)/1e6, "switchyard-MB")
	})
}

// edsClient is a delta xDS client that keeps the health of each
// ClusterLoadAssignment's first endpoint, ACKing every response.
type edsClient struct {
	id string

	mu      sync.Mutex
	changed *sync.Cond
	health  map[string]corev3.HealthStatus // cluster -> first endpoint's health
}

func newEDSClient(ctx context.Context, conn *grpc.ClientConn, id string) (*edsClient, error) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	c := &edsClient{id: id, health: map[string]corev3.HealthStatus{}}
	c.changed = sync.NewCond(&c.mu)
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:    &corev3.Node{Id: id, Cluster: "edge"},
		TypeUrl: resource.EndpointType, // no names: every assignment
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			c.mu.Lock()
			for _, r := range resp.GetResources() {
				var cla endpointv3.ClusterLoadAssignment
				if r.GetResource().UnmarshalTo(&cla) == nil && len(cla.GetEndpoints()) > 0 && len(cla.GetEndpoints()[0].GetLbEndpoints()) > 0 {
					// Instance 0 sorts first in its locality.
					c.health[cla.GetClusterName()] = firstHealth(&cla)
				}
			}
			c.changed.Broadcast()
			c.mu.Unlock()
			if stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}) != nil {
				return
			}
		}
	}()
	return c, nil
}

// firstHealth is the health of the endpoint whose host name (Consul's
// instance id) ends in "-0".
func firstHealth(cla *endpointv3.ClusterLoadAssignment) corev3.HealthStatus {
	for _, loc := range cla.GetEndpoints() {
		for _, e := range loc.GetLbEndpoints() {
			if h := e.GetEndpoint().GetHostname(); len(h) > 2 && h[len(h)-2:] == "-0" {
				return e.GetHealthStatus()
			}
		}
	}
	return corev3.HealthStatus_UNKNOWN
}

// wait blocks until the cluster's first endpoint has the health, or the
// timeout passes.
func (c *edsClient) wait(cluster string, want corev3.HealthStatus, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.health[cluster] != want {
		if time.Now().After(deadline) {
			return false
		}
		c.changed.Wait()
	}
	return true
}

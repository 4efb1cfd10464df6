package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	proxies = flag.Int("proxies", 200, "xDS clients in BenchmarkFanout")
	profile = flag.String("switchyard-profile", "", "write Switchyard's CPU profile over BenchmarkFanout's flips to this file, its heap profile after them to FILE.heap")
	stuck   = flag.Int("stuck-proxies", 0, "extra BenchmarkFanout clients that subscribe and never read their stream (a stuck Envoy)")
	nacking = flag.Int("nacking-proxies", 0, "extra BenchmarkFanout clients that reject (NACK) every response")
)

// BenchmarkFanout measures pushing one change to many proxies: -proxies
// delta xDS clients (small Go clients that subscribe to every endpoint
// assignment and ACK like Envoy; thousands of real Envoys do not fit on
// one machine) of one proxy group. Each op flips one instance's check in
// Consul and times until the last client has the new endpoint health.
// -stuck-proxies and -nacking-proxies add clients of the same group, each
// on a connection of its own, that never read or reject everything: the
// others' figures show what they cost.
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
		c, err := newEDSClient(ctx, conns[len(conns)-1], fmt.Sprintf("fake-%d", i), ackAll)
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	for i := range *stuck + *nacking {
		conn, err := grpc.NewClient(xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		mode := readNothing
		if i >= *stuck {
			mode = nackAll
		}
		if _, err := newEDSClient(ctx, conn, fmt.Sprintf("bad-%d", i), mode); err != nil {
			b.Fatal(err)
		}
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
		var took, first []time.Duration
		cpu0 := w.cpuSeconds(b)
		stopProfile := w.startProfile(b, *profile)
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
			first = append(first, firstSeen(clients, serviceName(svc)).Sub(t0))
		}
		stopProfile()
		b.ReportMetric(1e3*(w.cpuSeconds(b)-cpu0)/float64(b.N), "switchyard-cpu-ms/flip")
		slices.Sort(first)
		b.ReportMetric(float64(first[len(first)/2].Microseconds())/1e3, "first-p50-ms")
		b.ReportMetric(float64(first[len(first)-1].Microseconds())/1e3, "first-max-ms")
		report(b, took)
		b.ReportMetric(float64(*proxies), "proxies")
		b.ReportMetric(float64(*stuck), "stuck-proxies")
		b.ReportMetric(float64(*nacking), "nacking-proxies")
		b.ReportMetric(synced.Seconds()*1e3, "all-synced-ms")
		b.ReportMetric(w.memory(b)/1e6, "switchyard-MB")
		b.ReportMetric(w.memoryAfterGC(b)/1e6, "switchyard-MB-after-gc")
	})
}

// memoryAfterGC is Switchyard's resident set after a garbage collection
// (its admin /debug/pprof/heap?gc=1 runs one) and ten seconds for the
// runtime to hand freed memory back. Without it the figure can still hold
// the garbage of the clients' first full sync: once synced, Switchyard
// allocates so little that its next collection may be Go's forced one, two
// minutes on.
func (w *world) memoryAfterGC(b *testing.B) float64 {
	b.Helper()
	if err := get(w.switchyard, "/debug/pprof/heap?gc=1", nil); err != nil {
		b.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	return w.memory(b)
}

// firstSeen is when the first client saw the cluster's latest change.
func firstSeen(clients []*edsClient, cluster string) time.Time {
	var first time.Time
	for _, c := range clients {
		c.mu.Lock()
		at := c.at[cluster]
		c.mu.Unlock()
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first
}

// cpuSeconds is the CPU time Switchyard has used, user and system.
func (w *world) cpuSeconds(b *testing.B) float64 {
	b.Helper()
	var text string
	if err := get(w.switchyard, "/metrics", &text); err != nil {
		b.Fatal(err)
	}
	return metricValue(b, text, "process_cpu_seconds_total")
}

// startProfile starts Switchyard's CPU profiler (its admin
// /debug/pprof/profile) when file is set; the returned func stops it,
// writes the profile to file and a heap profile to file.heap.
func (w *world) startProfile(b *testing.B, file string) (stop func()) {
	b.Helper()
	if file == "" {
		return func() {}
	}
	done := make(chan error, 1)
	// The profile runs for a fixed time: long enough for the flips of a
	// -benchtime 20x run at 1,000 proxies.
	go func() {
		var body string
		err := get(w.switchyard, "/debug/pprof/profile?seconds=15", &body)
		if err == nil {
			err = os.WriteFile(file, []byte(body), 0o644)
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			b.Errorf("cpu profile: %v", err)
		}
		var heap string
		if err := get(w.switchyard, "/debug/pprof/heap", &heap); err != nil {
			b.Errorf("heap profile: %v", err)
			return
		}
		if err := os.WriteFile(file+".heap", []byte(heap), 0o644); err != nil {
			b.Error(err)
		}
	}
}

// edsClient is a delta xDS client that keeps the health of each
// ClusterLoadAssignment's first endpoint, ACKing every response.
type edsClient struct {
	id string

	mu      sync.Mutex
	changed *sync.Cond
	health  map[string]corev3.HealthStatus // cluster -> first endpoint's health
	at      map[string]time.Time           // cluster -> when that health last changed
}

// clientMode is how an edsClient answers.
type clientMode int

const (
	ackAll      clientMode = iota // like Envoy
	nackAll                       // rejects every response
	readNothing                   // never reads its stream (stuck)
)

func newEDSClient(ctx context.Context, conn *grpc.ClientConn, id string, mode clientMode) (*edsClient, error) {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	c := &edsClient{id: id, health: map[string]corev3.HealthStatus{}, at: map[string]time.Time{}}
	c.changed = sync.NewCond(&c.mu)
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:    &corev3.Node{Id: id, Cluster: "edge"},
		TypeUrl: resource.EndpointType, // no names: every assignment
	}); err != nil {
		return nil, err
	}
	if mode == readNothing {
		return c, nil
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
					if h := firstHealth(&cla); h != c.health[cla.GetClusterName()] {
						c.health[cla.GetClusterName()] = h
						c.at[cla.GetClusterName()] = time.Now()
					}
				}
			}
			c.changed.Broadcast()
			c.mu.Unlock()
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
			if mode == nackAll {
				req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bench: rejected"}
			}
			if stream.Send(req) != nil {
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

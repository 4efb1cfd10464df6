package bench

import (
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

var (
	proxies = flag.Int("proxies", 200, "xDS clients in BenchmarkFanout")
	profile = flag.String("switchyard-profile", "", "write Switchyard's CPU profile over BenchmarkFanout's flips to this file, its heap profile after them to FILE.heap")
	stuck   = flag.Int("stuck-proxies", 0, "extra BenchmarkFanout clients that subscribe and never read their stream (a stuck Envoy)")
	nacking = flag.Int("nacking-proxies", 0, "extra BenchmarkFanout clients that reject (NACK) every response")
)

// BenchmarkFanout measures pushing one change to many proxies: -proxies
// delta xDS clients (xdsClient: subscribed to every endpoint assignment,
// ACKing like Envoy) of one proxy group. Each op flips one instance's check
// in Consul and times until the last client has the new endpoint health.
// -stuck-proxies and -nacking-proxies add clients of the same group, each
// on a connection of its own, that never read or reject everything: the
// others' figures show what they cost.
func BenchmarkFanout(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances})
	clients := make([]*xdsClient, *proxies)
	var conn *grpc.ClientConn
	start := time.Now()
	for i := range clients {
		if i%100 == 0 { // one connection per 100 streams, as many Envoys share none
			conn = dial(b, xds)
		}
		c, err := startXDSClient(b.Context(), conn, &corev3.Node{Id: fmt.Sprintf("fake-%d", i), Cluster: "edge"}, false)
		if err != nil {
			b.Fatal(err)
		}
		clients[i] = c
	}
	for i := range *stuck + *nacking {
		opts := clientOptions{wildcard: []string{resource.EndpointType}, stuck: i < *stuck}
		if !opts.stuck {
			opts.answer = nackAll
		}
		if _, err := startClient(b.Context(), dial(b, xds), &corev3.Node{Id: fmt.Sprintf("bad-%d", i), Cluster: "edge"}, opts); err != nil {
			b.Fatal(err)
		}
	}
	// flip sets instance 0 of svc critical (or passing) and returns when
	// the last client saw it.
	flip := func(b *testing.B, what string, svc int, critical bool) time.Time {
		b.Helper()
		w.setCheck(b, w.check(svc, 0, health(critical)))
		return w.waitEdge(b, what, clients, svc, !critical)
	}
	synced := w.waitEdge(b, "initial sync", clients, w.services-1, true).Sub(start)
	for i := range 10 { // warm up
		flip(b, "warm-up", w.services-1-i/2, i%2 == 0)
	}

	b.Run("health-flip", func(b *testing.B) {
		var took, first []time.Duration
		cpu0 := w.cpuSeconds(b)
		stopProfile := w.startProfile(b, *profile)
		for range b.N {
			svc, critical := w.nextFlip()
			t0 := time.Now()
			took = append(took, flip(b, "flip", svc, critical).Sub(t0))
			first = append(first, firstSeen(clients, edgeEndpoint(svc)).Sub(t0))
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

// waitEdge waits until every client has instance 0 of svc usable (or not)
// and returns when the last one saw it.
func (w *world) waitEdge(b *testing.B, what string, clients []*xdsClient, svc int, usable bool) time.Time {
	b.Helper()
	at, err := waitAll(clients, edgeEndpoint(svc), usable, time.Minute)
	if err != nil {
		b.Fatalf("%s of %s: %v", what, serviceName(svc), err)
	}
	return at
}

// edgeEndpoint is the endpoint of instance 0 of service svc, the one a
// flip changes.
func edgeEndpoint(svc int) string {
	return net.JoinHostPort(instanceAddress(svc, 0), strconv.Itoa(appPort))
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

// firstSeen is when the first client saw endpoint addr's latest change.
func firstSeen(clients []*xdsClient, addr string) time.Time {
	var first time.Time
	for _, c := range clients {
		c.mu.Lock()
		at := c.eps[addr].since
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

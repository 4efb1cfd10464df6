package bench

import (
	"flag"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

var (
	stormProxies = flag.Int("storm-proxies", 1000, "xDS clients in BenchmarkReconnectStorm")
	stormFlips   = flag.Int("storm-flips", 20, "health flips BenchmarkReconnectStorm times before the restart and again right after it")
)

// BenchmarkReconnectStorm measures a Switchyard restart under a fleet:
// -storm-proxies clients of one edge group, synced (edgeEnvoy: every
// cluster, assignment and listener, and the routes, as an edge Envoy asks;
// lean: they count and ACK what they get without decoding it, so their own
// CPU takes less from the two cores). Each op stops Switchyard (SIGTERM,
// its graceful shutdown), starts it again on the same ports, and times
// until every client has reconnected and received and ACKed its whole
// config on a new stream: ns/op and all-full-ms from the old process's
// exit, client-full-* each client's time, ready-to-all-full-ms from the
// new process's readiness; switchyard-cpu-s is the new process's CPU until
// then (its start, Consul sync and every client's sync), clients-cpu-s
// this process's (the clients receiving and ACKing), on the same two
// cores. Clients reconnect as fresh Envoys would (no
// initial_resource_versions), so each is sent everything: the worst case.
// They retry with Envoy's back-off (jittered, 500 ms doubling).
//
// It also times -storm-flips health flips (Consul write -> last client)
// in steady state before the first restart and right after the last
// client has resynced, to compare the first seconds after a cold start
// with steady state.
func BenchmarkReconnectStorm(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances})
	start := time.Now()
	opts := edgeEnvoy(w.services)
	opts.lean = true
	clients := startClients(b, xds, *stormProxies, edgeNode(0), opts)
	at, err := waitAllFull(clients, nil, 5*time.Minute)
	if err != nil {
		b.Fatalf("first sync: %v", err)
	}
	synced := latest(at).Sub(start)
	w.timeFlips(b, clients, 10) // warm up
	steady := w.timeFlips(b, clients, *stormFlips)

	b.Run("restart", func(b *testing.B) {
		var storm, each, fromReady, stops, cold []time.Duration
		var peak, cpu, clientCPU float64
		for range b.N {
			next := make([]int, len(clients))
			for i, c := range clients {
				next[i] = c.streams() + 1
			}
			own0 := procCPU(b, os.Getpid())
			t0 := time.Now()
			w.proc.Stop()
			stopped := time.Now()
			stops = append(stops, stopped.Sub(t0))
			w.startSwitchyard(b)
			at, err := waitAllFull(clients, next, 5*time.Minute)
			if err != nil {
				b.Fatalf("after the restart: %v", err)
			}
			last := latest(at)
			cpu += w.cpuSeconds(b) // the new process's, from its start
			clientCPU += procCPU(b, os.Getpid()) - own0
			storm = append(storm, last.Sub(stopped))
			each = append(each, since(stopped, at)...)
			fromReady = append(fromReady, last.Sub(stopped.Add(w.readyAfter)))
			_, peak = procMemory(b, w.proc.Pid())
			cold = append(cold, w.timeFlips(b, clients, *stormFlips)...)
		}
		b.ReportMetric(float64(mean(storm).Nanoseconds()), "ns/op")
		b.ReportMetric(float64(slices.Max(storm).Microseconds())/1e3, "all-full-ms")
		percentiles(b, "client-full-", each)
		b.ReportMetric(mean(stops).Seconds()*1e3, "stop-ms")
		b.ReportMetric(w.readyAfter.Seconds()*1e3, "ready-ms")
		b.ReportMetric(mean(fromReady).Seconds()*1e3, "ready-to-all-full-ms")
		b.ReportMetric(synced.Seconds()*1e3, "first-sync-ms")
		b.ReportMetric(peak/1e6, "switchyard-peak-MB")
		b.ReportMetric(cpu/float64(b.N), "switchyard-cpu-s")
		b.ReportMetric(clientCPU/float64(b.N), "clients-cpu-s")
		percentiles(b, "steady-flip-", steady)
		percentiles(b, "cold-flip-", cold)
		b.ReportMetric(float64(cold[0].Microseconds())/1e3, "cold-first-flip-ms")
		b.ReportMetric(float64(len(clients)), "proxies")
	})
}

// streams is how many streams the client has opened.
func (c *xdsClient) streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream
}

// timeFlips makes n health flips (nextFlip), one at a time, and returns
// how long each took from the Consul write to the last client. Lean
// clients keep no endpoints: for them the flip has arrived with the next
// endpoint assignment (each asks for every one, and nothing else changes).
func (w *world) timeFlips(b *testing.B, clients []*xdsClient, n int) []time.Duration {
	b.Helper()
	took := make([]time.Duration, n)
	for i := range took {
		svc, critical := w.nextFlip()
		seen := make([]int, len(clients))
		for j, c := range clients {
			seen[j] = c.received(resource.EndpointType)
		}
		t0 := time.Now()
		w.setCheck(b, w.check(svc, 0, health(critical)))
		if !clients[0].opts.lean {
			took[i] = w.waitEdge(b, "flip", clients, svc, !critical).Sub(t0)
			continue
		}
		j := 0
		at, err := waitEach(clients, time.Minute, func(c *xdsClient, deadline time.Time) (time.Time, bool) {
			j++
			return c.waitMore(resource.EndpointType, seen[j-1], deadline)
		})
		if err != nil {
			b.Fatalf("%v receive the flip of %s within a minute", err, serviceName(svc))
		}
		took[i] = latest(at).Sub(t0)
	}
	return took
}

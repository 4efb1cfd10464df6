package bench

import (
	"flag"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

var (
	groups       = flag.Int("groups", 10, "edge proxy groups in BenchmarkManyGroups, each routing to every service")
	groupProxies = flag.Int("group-proxies", 1000, "xDS clients in BenchmarkManyGroups, spread evenly over -groups")
)

// BenchmarkManyGroups measures Switchyard's memory with many proxies in
// many groups: -groups edge groups, each with a policy routing to every
// service (-services x -instances in Consul), and -group-proxies clients
// spread over them round robin. Each client counts as one proxy: one delta
// ADS stream with its own node id, asking for what an edge Envoy asks for
// (every cluster, endpoint assignment and listener, and its routes), 100
// streams to a gRPC connection. The clients are lean: they count what
// they receive and ACK it but keep none of it, so this process fits
// beside Switchyard.
//
// It reports Switchyard's RSS before the clients (after a GC), with every
// client synced, after the flips and after a GC, and its peak, and its
// live heap after that GC; each op is
// a health flip, timed from the Consul write until the last client of
// every group has received the changed assignment.
func BenchmarkManyGroups(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances, groups: *groups})
	idle := w.memoryAfterGC(b)
	opts := edgeEnvoy(w.services)
	opts.lean = true
	start := time.Now()
	clients := startClients(b, xds, *groupProxies, func(i int) *corev3.Node { return edgeNode(i % *groups)(i) }, opts)
	at, err := waitAllFull(clients, nil, 10*time.Minute)
	if err != nil {
		b.Fatalf("first sync: %v", err)
	}
	synced := latest(at).Sub(start)
	full := w.memory(b)
	w.timeFlips(b, clients, 5) // warm up

	b.Run("memory", func(b *testing.B) {
		report(b, w.timeFlips(b, clients, b.N))
		b.ReportMetric(idle/1e6, "idle-MB")
		b.ReportMetric(full/1e6, "synced-MB")
		b.ReportMetric(w.memory(b)/1e6, "switchyard-MB")
		_, peak := procMemory(b, w.proc.Pid())
		b.ReportMetric(peak/1e6, "switchyard-peak-MB")
		gc := w.memoryAfterGC(b)
		b.ReportMetric(gc/1e6, "switchyard-MB-after-gc")
		// What is live: the runtime returns freed memory to the system
		// slowly, so the resident size after a GC still shows the sync's
		// peak for a while.
		sample, err := w.readSample()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(sample.heap/1e6, "heap-MB-after-gc")
		b.ReportMetric((gc-idle)/float64(len(clients))/1e3, "kB/proxy")
		own, _ := procMemory(b, os.Getpid())
		b.ReportMetric(own/1e6, "clients-MB")
		b.ReportMetric(synced.Seconds()*1e3, "all-synced-ms")
		b.ReportMetric(float64(len(clients)), "proxies")
		b.ReportMetric(float64(*groups), "groups")
	})
}

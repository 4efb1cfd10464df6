package bench

import (
	"flag"
	"slices"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/envoy"
)

var routeProxies = flag.Int("route-proxies", 1000, "xDS clients in BenchmarkRouteAdd")

// BenchmarkRouteAdd measures a policy edit reaching a fleet: one edge
// group routing to every service (-services), -route-proxies clients of it
// asking for its route configuration (RDS) as Envoy does once its listener
// names it. Each op rewrites the group's policy file with one route more
// (written beside it and renamed over it, as a config tool would) and
// times, from the rename, until each client has the new route. ns/op and
// p* are the last client's time per op; client-* pools every client's.
// Switchyard waits for a policy file to be quiet for two checks 100 ms
// apart before it reloads (a file still being written is not loaded), so
// about 200 ms of each figure is that wait.
func BenchmarkRouteAdd(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances})
	clients := startClients(b, xds, *routeProxies, edgeNode(0), clientOptions{
		routes: []string{envoy.RouteConfigName("http")},
		want:   map[string]int{resource.RouteType: 1},
	})
	start := time.Now()
	at, err := waitAllFull(clients, nil, 5*time.Minute)
	if err != nil {
		b.Fatalf("first sync: %v", err)
	}
	synced := latest(at).Sub(start)
	added := 0
	add := func(b *testing.B) []time.Duration {
		b.Helper()
		prefix := addedPrefix(added)
		for _, c := range clients {
			c.watchRoute(prefix)
		}
		t0 := time.Now()
		added++
		w.writePolicy(b, 0, added)
		at, err := waitEach(clients, time.Minute, func(c *xdsClient, deadline time.Time) (time.Time, bool) {
			return c.waitRoute(prefix, deadline)
		})
		if err != nil {
			b.Fatalf("%v get route %s within a minute", err, prefix)
		}
		return since(t0, at)
	}
	for range 3 { // warm up
		add(b)
	}

	b.Run("route-add", func(b *testing.B) {
		var last, each []time.Duration
		sum0, count0 := w.rebuilds(b)
		for range b.N {
			took := add(b)
			last = append(last, slices.Max(took))
			each = append(each, took...)
		}
		report(b, last)
		percentiles(b, "client-", each)
		if sum, count := w.rebuilds(b); count > count0 {
			b.ReportMetric(1e3*(sum-sum0)/(count-count0), "rebuild-ms")
		}
		b.ReportMetric(synced.Seconds()*1e3, "first-sync-ms")
		b.ReportMetric(float64(len(clients)), "proxies")
		b.ReportMetric(float64(w.services+added), "routes")
	})
}

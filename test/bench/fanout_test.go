package bench

import (
	"flag"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
)

var proxies = flag.Int("proxies", 200, "xDS clients in BenchmarkFanout")

// BenchmarkFanout measures pushing one change to many proxies: -proxies
// delta xDS clients (xdsClient: subscribed to every endpoint assignment,
// ACKing like Envoy) of one proxy group. Each op flips one instance's check
// in Consul and times until the last client has the new endpoint health.
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
		var took []time.Duration
		for range b.N {
			svc, critical := w.nextFlip()
			t0 := time.Now()
			took = append(took, flip(b, "flip", svc, critical).Sub(t0))
		}
		report(b, took)
		b.ReportMetric(float64(*proxies), "proxies")
		b.ReportMetric(synced.Seconds()*1e3, "all-synced-ms")
		b.ReportMetric(w.memory(b)/1e6, "switchyard-MB")
	})
}

// waitEdge waits until every client has instance 0 of svc usable (or not)
// and returns when the last one saw it.
func (w *world) waitEdge(b *testing.B, what string, clients []*xdsClient, svc int, usable bool) time.Time {
	b.Helper()
	at, err := waitAll(clients, net.JoinHostPort(instanceAddress(svc, 0), strconv.Itoa(appPort)), usable, time.Minute)
	if err != nil {
		b.Fatalf("%s of %s: %v", what, serviceName(svc), err)
	}
	return at
}

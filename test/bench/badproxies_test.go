package bench

import (
	"flag"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
)

var badPause = flag.Duration("bad-pause", 3*time.Second, "how long BenchmarkBadProxies' slow reader stops reading after each response")

// BenchmarkBadProxies measures whether misbehaving proxies slow the others
// down: -proxies clients of one edge group asking for every endpoint
// assignment (as BenchmarkFanout's), timed on health flips (Consul write ->
// last of them) first alone ("clean") and then beside three bad clients
// of the same group ("with-bad"), which ask for everything an edge Envoy
// does: one never ACKs, one NACKs every response, and one reads slowly,
// stopping for -bad-pause after each response it reads. Each bad client
// has a connection of its own with gRPC's smallest flow-control windows
// (64 KiB), so what it does not read holds back Switchyard's sends to it
// within a response or two: its first config (1,000 clusters and
// assignments) is far bigger. After that first sync a slow reader has at
// most one answer a type outstanding (xDS answers wait for the ACK), so it
// presses hardest in the seconds after it connects, which the first flips
// of "with-bad" overlap. Both runs report Switchyard's CPU per flip; the
// second also the NACKs Switchyard counted and what the bad clients got.
func BenchmarkBadProxies(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances})
	clients := startClients(b, xds, *proxies, edgeNode(0), edgeEndpoints(w.services))
	if _, err := waitAllFull(clients, nil, 5*time.Minute); err != nil {
		b.Fatalf("first sync: %v", err)
	}
	w.timeFlips(b, clients, 10) // warm up
	run := func(b *testing.B) {
		cpu0 := w.cpuSeconds(b)
		took := w.timeFlips(b, clients, b.N)
		report(b, took)
		b.ReportMetric(1e3*(w.cpuSeconds(b)-cpu0)/float64(b.N), "switchyard-cpu-ms/flip")
		b.ReportMetric(float64(len(clients)), "proxies")
	}
	b.Run("clean", run)

	small := []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}
	bad := map[string]clientOptions{}
	for name, o := range map[string]func(*clientOptions){
		"never-acks": func(o *clientOptions) { o.answer = neverACK },
		"nacks":      func(o *clientOptions) { o.answer = nackAll },
		"slow":       func(o *clientOptions) { o.pause = *badPause },
	} {
		opts := edgeEnvoy(w.services)
		o(&opts)
		bad[name] = opts
	}
	badClients := map[string]*xdsClient{}
	nacks0 := w.metricSum(b, "switchyard_xds_nacks_total")
	for name, opts := range bad {
		node := func(int) *corev3.Node { return &corev3.Node{Id: "bad-" + name, Cluster: groupName(0)} }
		badClients[name] = startClients(b, xds, 1, node, opts, small...)[0]
	}
	b.Run("with-bad", func(b *testing.B) {
		run(b)
		b.ReportMetric(w.metricSum(b, "switchyard_xds_nacks_total")-nacks0, "nacks")
		for name, c := range badClients {
			b.ReportMetric(float64(c.received(resource.EndpointType)), name+"-assignments")
		}
	})
}

// edgeEndpoints asks, as BenchmarkFanout's clients do, for every endpoint
// assignment of an edge group routing to services: full once a stream has
// brought one for each service.
func edgeEndpoints(services int) clientOptions {
	return clientOptions{wildcard: []string{resource.EndpointType}, want: map[string]int{resource.EndpointType: services}}
}

package envoy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// BenchmarkGlobalRateLimitLatency measures what a global rate limit adds
// to a request: real Envoy (the group's rendered listener, routes and
// clusters, served statically), a real envoyproxy/ratelimit given
// RateLimitConfigs over xDS, and Redis, all on this machine. Each
// iteration sends one request to a route without a limit and one to a
// route with a global limit per client (never reached), over kept-alive
// connections, and reports the p50 and p99 of each and the difference:
// the extra hop per request.
func BenchmarkGlobalRateLimitLatency(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	b.Cleanup(backend.Close)
	redis := testenv.StartRedis(b)
	port := testenv.FreePort(b)
	backendHost, backendPort := hostPortOf(b, backend.Listener.Addr().String())

	cfg := &ir.Config{Group: "bench", Clusters: []ir.Cluster{
		{Service: "web", Endpoints: []ir.Endpoint{{ID: "web-1", Address: backendHost, Port: backendPort, Health: ir.Healthy, Weight: 1}}},
	}}
	cfg.Listeners = []ir.Listener{{Name: "public", Address: "127.0.0.1", Port: uint32(port),
		RateLimitService: &ir.RateLimitService{Cluster: ir.RateLimitCluster, Domain: ir.RateLimitDomain("bench"), Timeout: ir.D(time.Second)},
		VirtualHosts: []ir.VirtualHost{{Name: "*", Domains: []string{"*"}, Routes: []ir.Route{
			{Name: "limited", Match: ir.Match{PathPrefix: "/limited"}, Backends: []ir.Backend{{Service: "web", Weight: 1}},
				GlobalRateLimits: []ir.GlobalRateLimit{{ID: "route/public/any/limited/1", Requests: 1 << 30, Unit: ir.UnitSecond,
					By: []ir.RateLimitKey{{By: ir.RateLimitByClientIP}}}}},
			{Name: "free", Match: ir.Match{PathPrefix: "/"}, Backends: []ir.Backend{{Service: "web", Weight: 1}}},
		}}},
	}}
	rl := testenv.StartRateLimit(b, redis, testenv.RateLimitOptions{XDSAddr: serveRateLimitConfigs(b, "bench", cfg), NodeID: "bench"})
	rlHost, rlPort := hostPortOf(b, rl.GRPCAddr)
	cfg.Clusters = append(cfg.Clusters, ir.Cluster{Service: ir.RateLimitCluster, HTTP2: true,
		Endpoints: []ir.Endpoint{{ID: "ratelimit-1", Address: rlHost, Port: rlPort, Health: ir.Healthy, Weight: 1}}})
	res, err := Build(cfg)
	if err != nil {
		b.Fatal(err)
	}
	adminAddr := testenv.Addr(testenv.FreePort(b))
	envoy := testenv.StartEnvoy(b, "envoy", string(staticEdgeBootstrap(b, cfg.Group, res, adminAddr)), adminAddr)

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) time.Duration {
		start := time.Now()
		resp, err := client.Get("http://" + testenv.Addr(port) + path)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 200 { // warm connections, Redis and the service
		get("/free")
		get("/limited")
	}
	var free, limited []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		free = append(free, get("/free"))
		limited = append(limited, get("/limited"))
	}
	b.StopTimer()
	if n, err := envoy.Stat("cluster.web.ratelimit.ok"); err != nil || n < b.N {
		b.Fatalf("the rate limit service answered %d of %d requests (%v): the limited route did not ask it", n, b.N, err)
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(p*float64(len(s)-1))]
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(pct(free, .5)), "free-p50-µs")
	b.ReportMetric(us(pct(free, .99)), "free-p99-µs")
	b.ReportMetric(us(pct(limited, .5)), "limited-p50-µs")
	b.ReportMetric(us(pct(limited, .99)), "limited-p99-µs")
	b.ReportMetric(us(pct(limited, .5)-pct(free, .5)), "added-p50-µs")
	b.ReportMetric(us(pct(limited, .99)-pct(free, .99)), "added-p99-µs")
	b.ReportMetric(0, "ns/op") // the pair's time is not the point
}

func hostPortOf(b *testing.B, addr string) (string, uint32) {
	b.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		b.Fatal(fmt.Errorf("port of %s: %w", addr, err))
	}
	return host, uint32(p)
}

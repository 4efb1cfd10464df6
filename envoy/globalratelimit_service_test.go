package envoy

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-io/switchyard/test/testenv"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// TestGlobalRateLimitsWithRealService serves RateLimitConfigs of the
// golden group (its limits made small, hourly) to a real envoyproxy/ratelimit
// over xDS, and asks it, as the group's Envoys would, with the descriptors
// computed from the rendered rate limit actions and the domain of the
// rendered filter: each client, each API key, and the requests without the
// key get their own budget of the configured size, and a shadow limit
// counts without refusing.
func TestGlobalRateLimitsWithRealService(t *testing.T) {
	cfg := loadGlobalRateLimitCase(t)
	for _, vh := range cfg.Listeners[0].VirtualHosts {
		for i := range vh.Routes {
			for j := range vh.Routes[i].GlobalRateLimits {
				l := &vh.Routes[i].GlobalRateLimits[j]
				l.Unit = ir.UnitHour
				switch l.ID {
				case "route/public/shop_example_com/login/1", "route/public/shop_example_com/api/1":
					l.Requests = 2
				case "route/public/shop_example_com/login/2": // shadow
					l.Requests = 1
				}
			}
		}
	}
	res, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	domain := filterDomain(t, res)
	routes := map[string][]*routev3.RateLimit{}
	for _, vh := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			routes[r.GetName()] = append(append([]*routev3.RateLimit(nil), r.GetRoute().GetRateLimits()...), vh.GetRateLimits()...)
		}
	}

	redis := testenv.StartRedis(t)
	xdsAddr := serveRateLimitConfigs(t, "rl-test", cfg)
	rl := testenv.StartRateLimit(t, redis, testenv.RateLimitOptions{XDSAddr: xdsAddr, NodeID: "rl-test"})
	if c, err := rl.Config(); err != nil || !strings.Contains(c, "switchyard_edge.limit_route/public/shop_example_com/login/1.remote_address: unit=HOUR requests_per_unit=2") {
		t.Fatalf("the service's /rlconfig: %v\n%s", err, c)
	}
	client := rateLimitClient(t, rl.GRPCAddr)
	awayFromHourEnd()

	ask := func(route string, req request) rlsv3.RateLimitResponse_Code {
		t.Helper()
		rr := &rlsv3.RateLimitRequest{Domain: domain, HitsAddend: 1}
		for _, d := range envoyDescriptors(t, routes[route], req) {
			var entries []*commonrlv3.RateLimitDescriptor_Entry
			for _, e := range d {
				entries = append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: e[0], Value: e[1]})
			}
			rr.Descriptors = append(rr.Descriptors, &commonrlv3.RateLimitDescriptor{Entries: entries})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.ShouldRateLimit(ctx, rr)
		if err != nil {
			t.Fatalf("ShouldRateLimit %v: %v", rr, err)
		}
		return resp.GetOverallCode()
	}
	const ok, over = rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT
	login := func(ip string) request { return request{clientIP: ip, path: "/login", cluster: "api"} }
	api := func(ip, key string) request {
		r := request{clientIP: ip, path: "/api/orders", cluster: "api", headers: map[string]string{}}
		if key != "" {
			r.headers["x-api-key"] = key
		}
		return r
	}
	for i, tc := range []struct {
		what  string
		route string
		req   request
		want  rlsv3.RateLimitResponse_Code
	}{
		// login/1: 2 an hour per client; login/2 (1 an hour per client
		// and path, shadow) is over from the second call, and lets it
		// through.
		{"client A, 1st", "login", login("192.0.2.1"), ok},
		{"client A, 2nd (over the shadow limit)", "login", login("192.0.2.1"), ok},
		{"client A, 3rd", "login", login("192.0.2.1"), over},
		{"client B, 1st", "login", login("192.0.2.2"), ok},
		// api/1: 2 an hour per API key and client; requests without
		// the key share one budget per client.
		{"key k1, 1st", "api", api("192.0.2.1", "k1"), ok},
		{"key k1, 2nd", "api", api("192.0.2.1", "k1"), ok},
		{"key k1, 3rd", "api", api("192.0.2.1", "k1"), over},
		{"key k2, 1st", "api", api("192.0.2.1", "k2"), ok},
		{"no key, 1st", "api", api("192.0.2.1", ""), ok},
		{"no key, 2nd", "api", api("192.0.2.1", ""), ok},
		{"no key, 3rd", "api", api("192.0.2.1", ""), over},
		{"no key, other client", "api", api("192.0.2.2", ""), ok},
	} {
		if got := ask(tc.route, tc.req); got != tc.want {
			t.Errorf("call %d, %s: got %v; want %v", i+1, tc.what, got, tc.want)
		}
	}
	// Each limit is counted apart in the service's Prometheus stats (no
	// dot in a domain or an ID merges them): the shadow limit's two over
	// (client A's 2nd and 3rd login calls), login/1's one refusal.
	count := func(metric, id string, want float64) {
		t.Helper()
		labels := map[string]string{"domain": domain, "key1": "limit_" + id, "key2": "remote_address"}
		testenv.Eventually(t, 5*time.Second, metric+" of "+id, func() error {
			n, err := rl.Metric(metric, labels)
			if err == nil && n != want {
				err = fmt.Errorf("%s %v; want %v", metric, n, want)
			}
			return err
		})
	}
	count("ratelimit_service_rate_limit_shadow_mode", "route/public/shop_example_com/login/2", 2)
	count("ratelimit_service_rate_limit_over_limit", "route/public/shop_example_com/login/1", 1)
}

// filterDomain is the domain the rendered rate limit filter asks in.
func filterDomain(t *testing.T, res Resources) string {
	t.Helper()
	var hcm hcmv3.HttpConnectionManager
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == rateLimitFilterName {
			var rl ratelimitfilterv3.RateLimit
			if err := f.GetTypedConfig().UnmarshalTo(&rl); err != nil {
				t.Fatal(err)
			}
			return rl.GetDomain()
		}
	}
	t.Fatal("no rate limit filter")
	return ""
}

// serveRateLimitConfigs serves the group's RateLimitConfigs over
// state-of-the-world ADS to node until the test ends, and returns the
// server's address.
func serveRateLimitConfigs(t testing.TB, node string, cfg *ir.Config) string {
	t.Helper()
	var list []types.Resource
	for _, c := range RateLimitConfigs(cfg) {
		list = append(list, c)
	}
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{resource.RateLimitConfigType: list})
	if err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), cache, nil))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

func rateLimitClient(t *testing.T, addr string) rlsv3.RateLimitServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

// awayFromHourEnd waits out the last seconds of an hour, when the hourly
// counters the test fills could be reset halfway.
func awayFromHourEnd() {
	now := time.Now()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < 10*time.Second {
		time.Sleep(left + time.Second)
	}
}

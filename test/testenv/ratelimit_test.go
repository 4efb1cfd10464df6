package testenv

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-io/switchyard/xdscache"
)

// TestRateLimitOverXDS proves the installed envoyproxy/ratelimit takes a
// RateLimitConfig from a state-of-the-world xDS server and enforces it
// with Redis: a per-second limit holds, a served change takes effect
// within 2 s without a restart, shadow mode counts but allows, and a
// killed service comes back with its configuration (fetched again) and
// its counters (kept in Redis).
func TestRateLimitOverXDS(t *testing.T) {
	redis := StartRedis(t)
	x := startRLSXDS(t, Addr(FreePort(t)), cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil))
	x.set(t, "rl-test", testLimits(3))
	rl := StartRateLimit(t, redis, RateLimitOptions{
		XDSAddr: x.addr, NodeID: "rl-test", NodeMetadata: map[string]string{"group": "edge"},
		Env: []string{"LIMIT_RESPONSE_HEADERS_ENABLED=true"},
	})
	client := rlsClient(t, rl.GRPCAddr)

	// What it subscribed with: a wildcard SotW request for RateLimitConfig
	// over ADS, node.id and node.metadata as set, no node.cluster.
	req := x.firstRequest(t)
	if req.GetTypeUrl() != resource.RateLimitConfigType || len(req.GetResourceNames()) != 0 ||
		req.GetNode().GetId() != "rl-test" || req.GetNode().GetCluster() != "" ||
		req.GetNode().GetMetadata().GetFields()["group"].GetStringValue() != "edge" {
		t.Fatalf("ratelimit's first xDS request: %v", req)
	}

	expectPerSecond(t, client, "first", 3)

	// The allowed answers carry the RateLimit-* headers it was told to add.
	resp := call(t, client, "hourly", "headers")
	if got := headerNames(resp); got != "RateLimit-Limit,RateLimit-Remaining,RateLimit-Reset" {
		t.Fatalf("response headers to add: %q; want RateLimit-Limit, -Remaining, -Reset", got)
	}

	changed := time.Now()
	x.set(t, "rl-test", testLimits(6))
	attempt := 0
	Eventually(t, 2*time.Second, "the raised limit in force", func() error {
		attempt++
		return perSecondBurst(client, fmt.Sprintf("raised-%d", attempt), 6)
	})
	t.Logf("raised limit in force %s after the xDS change", time.Since(changed).Round(time.Millisecond))
	if cfg, err := rl.Config(); err != nil || !strings.Contains(cfg, "test.client: unit=SECOND requests_per_unit=6") {
		t.Fatalf("/rlconfig after the change: %v\n%s", err, cfg)
	}

	// Shadow mode: over the limit of 1 twice, allowed, counted.
	for i := range 3 {
		if c := call(t, client, "shadow", "x").GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
			t.Fatalf("shadow call %d: %v; want OK", i+1, c)
		}
	}
	shadow := map[string]string{"domain": "test", "key1": "shadow"}
	Eventually(t, 5*time.Second, "the shadow_mode count", func() error {
		n, err := rl.Metric("ratelimit_service_rate_limit_shadow_mode", shadow)
		if err == nil && n != 2 {
			err = fmt.Errorf("shadow_mode %v; want 2", n)
		}
		return err
	})

	// Killed: calls fail; restarted, it has the served limit again and the
	// hourly counter of before (2 of 2 used) from Redis.
	waitOutOfHourEnd()
	for i := range 2 {
		if c := call(t, client, "hourly", "kept").GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
			t.Fatalf("hourly call %d: %v; want OK", i+1, c)
		}
	}
	rl.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := client.ShouldRateLimit(ctx, request("hourly", "kept")); err == nil {
		t.Fatal("ShouldRateLimit answered while ratelimit was killed")
	}
	rl.Restart(t)
	if c := call(t, client, "hourly", "kept").GetOverallCode(); c != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("third hourly call after the restart: %v; want OVER_LIMIT (the count is in Redis)", c)
	}
	expectPerSecond(t, client, "restarted", 6)
}

// TestRateLimitXDSOutage proves what ratelimit does around its xDS server,
// here Switchyard's own cache: it waits at start until the server is up
// (an empty set of configs lets it start), keeps its limits while the
// server is down, and takes the next server's limits when it is back.
func TestRateLimitXDSOutage(t *testing.T) {
	redis := StartRedis(t)
	addr := Addr(FreePort(t))
	newCache := func() *xdscache.Cache {
		return xdscache.New(cachev3.IDHash{}, []string{resource.RateLimitConfigType}, true)
	}
	first := make(chan *rlsXDS, 1)
	go func() {
		// Up a second after ratelimit starts, with no RateLimitConfig yet.
		time.Sleep(time.Second)
		x := startRLSXDS(t, addr, newCache())
		x.set(t, "rl-test")
		first <- x
	}()
	started := time.Now()
	rl := StartRateLimit(t, redis, RateLimitOptions{XDSAddr: addr, NodeID: "rl-test"})
	t.Logf("ratelimit served %s after its start, the xDS server came up after 1s", time.Since(started).Round(time.Millisecond))
	x := <-first
	client := rlsClient(t, rl.GRPCAddr)
	if c := call(t, client, "hourly", "a").GetOverallCode(); c != rlsv3.RateLimitResponse_OK {
		t.Fatalf("a domain it has no config for: %v; want OK", c)
	}

	waitOutOfHourEnd()
	x.set(t, "rl-test", testLimits(1))
	expectHourly(t, client, 2, 5*time.Second)

	x.stop()
	expectHourly(t, client, 2, time.Millisecond) // the limits it holds

	back := time.Now()
	y := startRLSXDS(t, addr, newCache())
	raised := testLimits(1)
	raised.Descriptors[1].RateLimit.RequestsPerUnit = 3
	y.set(t, "rl-test", raised)
	expectHourly(t, client, 3, 10*time.Second)
	t.Logf("limits of the restarted xDS server in force after %s", time.Since(back).Round(time.Millisecond))
}

// TestRateLimitConfigs proves how ratelimit takes several RateLimitConfig
// resources: one domain each, all in force together; two of one domain
// are refused whole (a NACK naming the domain) and the limits before stay.
func TestRateLimitConfigs(t *testing.T) {
	redis := StartRedis(t)
	x := startRLSXDS(t, Addr(FreePort(t)), cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil))
	other := testLimits(1)
	other.Name, other.Domain = "other", "other"
	x.set(t, "rl-test", testLimits(1), other)
	rl := StartRateLimit(t, redis, RateLimitOptions{XDSAddr: x.addr, NodeID: "rl-test"})
	client := rlsClient(t, rl.GRPCAddr)
	waitOutOfHourEnd()
	expectHourly(t, client, 2, time.Millisecond)
	if cfg, err := rl.Config(); err != nil || !strings.Contains(cfg, "other.hourly: unit=HOUR requests_per_unit=2") {
		t.Fatalf("/rlconfig with two domains: %v\n%s", err, cfg)
	}

	dup := testLimits(1)
	dup.Name = "test-again"
	dup.Descriptors[1].RateLimit.RequestsPerUnit = 5
	x.set(t, "rl-test", testLimits(1), dup)
	Eventually(t, 2*time.Second, "a NACK of two configs of domain test", func() error {
		if d := x.lastNACK(); !strings.Contains(d, "duplicate domain 'test'") {
			return fmt.Errorf("last NACK %q", d)
		}
		return nil
	})
	loadErrors := func() error {
		n, err := rl.Metric("ratelimit_service_config_load_error", nil)
		if err == nil && n != 1 {
			err = fmt.Errorf("config_load_error %v; want 1", n)
		}
		return err
	}
	Eventually(t, 2*time.Second, "config_load_error counted", loadErrors)
	time.Sleep(300 * time.Millisecond) // three stats flushes: no NACK loop
	if err := loadErrors(); err != nil {
		t.Fatal(err)
	}
	expectHourly(t, client, 2, time.Millisecond) // not 5: the last good limits
	if cfg, _ := rl.Config(); !strings.Contains(cfg, "other.hourly") {
		t.Fatalf("after a refused update, domain other is gone:\n%s", cfg)
	}
}

// testLimits is domain "test": descriptor key "client" limited to
// perSecond per value, "hourly" to 2 an hour, and "shadow" to 1 an hour in
// shadow mode.
func testLimits(perSecond uint32) *rlconf.RateLimitConfig {
	limit := func(unit rlconf.RateLimitUnit, n uint32) *rlconf.RateLimitPolicy {
		return &rlconf.RateLimitPolicy{Unit: unit, RequestsPerUnit: n}
	}
	return &rlconf.RateLimitConfig{Name: "test", Domain: "test", Descriptors: []*rlconf.RateLimitDescriptor{
		{Key: "client", RateLimit: limit(rlconf.RateLimitUnit_SECOND, perSecond)},
		{Key: "hourly", RateLimit: limit(rlconf.RateLimitUnit_HOUR, 2)},
		{Key: "shadow", RateLimit: limit(rlconf.RateLimitUnit_HOUR, 1), ShadowMode: true},
	}}
}

// snapshotCache is what both caches offer: go-control-plane's server
// serves it, and SetSnapshot changes what it serves.
type snapshotCache interface {
	cachev3.Cache
	SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error
}

// rlsXDS is a small state-of-the-world xDS server (ADS) of RateLimitConfig.
type rlsXDS struct {
	addr    string
	cache   snapshotCache
	gs      *grpc.Server
	version int

	mu    sync.Mutex
	first *discoveryv3.DiscoveryRequest
	nack  string           // the error detail of the last NACK
	sent  map[int64]string // the version last sent, by stream
}

// startRLSXDS serves c on addr until stop or the end of the test. c is
// go-control-plane's SnapshotCache or Switchyard's xdscache.Cache.
func startRLSXDS(t testing.TB, addr string, c snapshotCache) *rlsXDS {
	x := &rlsXDS{addr: addr, cache: c, gs: grpc.NewServer(), sent: map[int64]string{}}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(stream int64, req *discoveryv3.DiscoveryRequest) error {
			x.mu.Lock()
			defer x.mu.Unlock()
			if x.first == nil {
				x.first = req
			}
			if req.GetErrorDetail() != nil {
				x.nack = req.GetErrorDetail().GetMessage()
				// As Switchyard's holdRejected does: claim the rejected
				// version, or the cache answers the NACK at once with the
				// same config, and again, thousands of times a second.
				req.VersionInfo = x.sent[stream]
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, stream int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			x.mu.Lock()
			defer x.mu.Unlock()
			x.sent[stream] = resp.GetVersionInfo()
		},
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(x.gs, serverv3.NewServer(context.Background(), c, cb))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("xDS server: %v", err)
		return x
	}
	go func() { _ = x.gs.Serve(l) }()
	t.Cleanup(x.stop)
	return x
}

// set serves cfgs to node id, as a new version.
func (x *rlsXDS) set(t testing.TB, node string, cfgs ...*rlconf.RateLimitConfig) {
	x.version++
	res := make([]types.Resource, len(cfgs))
	for i, c := range cfgs {
		res[i] = c
	}
	snap, err := cachev3.NewSnapshot(strconv.Itoa(x.version), map[resource.Type][]types.Resource{resource.RateLimitConfigType: res})
	if err == nil {
		err = x.cache.SetSnapshot(context.Background(), node, snap)
	}
	if err != nil {
		t.Errorf("set the xDS snapshot: %v", err)
	}
}

func (x *rlsXDS) stop() { x.gs.Stop() }

func (x *rlsXDS) lastNACK() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.nack
}

func (x *rlsXDS) firstRequest(t testing.TB) *discoveryv3.DiscoveryRequest {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.first == nil {
		t.Fatal("ratelimit made no xDS request")
	}
	return x.first
}

func rlsClient(t testing.TB, addr string) rlsv3.RateLimitServiceClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

func request(key, value string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "test", HitsAddend: 1, Descriptors: []*commonrl.RateLimitDescriptor{
		{Entries: []*commonrl.RateLimitDescriptor_Entry{{Key: key, Value: value}}},
	}}
}

func call(t testing.TB, c rlsv3.RateLimitServiceClient, key, value string) *rlsv3.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// WaitForReady: after a restart the connection may still be in its
	// reconnect backoff.
	resp, err := c.ShouldRateLimit(ctx, request(key, value), grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("ShouldRateLimit %s=%s: %v", key, value, err)
	}
	return resp
}

func headerNames(resp *rlsv3.RateLimitResponse) string {
	var names []string
	for _, h := range resp.GetResponseHeadersToAdd() {
		names = append(names, h.GetKey())
	}
	return strings.Join(names, ",")
}

// expectPerSecond checks that "client" allows limit calls a second: a
// fresh value's burst of limit+1 within one second is limit times OK,
// then OVER_LIMIT. A burst that straddles a second is tried again.
func expectPerSecond(t testing.TB, c rlsv3.RateLimitServiceClient, value string, limit int) {
	t.Helper()
	var err error
	for i := range 5 {
		if err = perSecondBurst(c, fmt.Sprintf("%s-%d", value, i), limit); err == nil {
			return
		}
	}
	t.Fatal(err)
}

// errStraddled: the burst crossed a second, so it counted in two windows.
var errStraddled = fmt.Errorf("the burst crossed a second boundary")

func perSecondBurst(c rlsv3.RateLimitServiceClient, value string, limit int) error {
	if ns := time.Now().Nanosecond(); ns > 700_000_000 {
		time.Sleep(time.Duration(1_000_000_000-ns) + 5*time.Millisecond)
	}
	second := time.Now().Unix()
	var codes []rlsv3.RateLimitResponse_Code
	for range limit + 1 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.ShouldRateLimit(ctx, request("client", value))
		cancel()
		if err != nil {
			return err
		}
		codes = append(codes, resp.GetOverallCode())
	}
	if time.Now().Unix() != second {
		return errStraddled
	}
	for i, code := range codes {
		want := rlsv3.RateLimitResponse_OK
		if i == limit {
			want = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		if code != want {
			return fmt.Errorf("burst of %d for a limit of %d a second: %v", limit+1, limit, codes)
		}
	}
	return nil
}

// expectHourly waits until "hourly" allows limit calls for a fresh value,
// then OVER_LIMIT.
func expectHourly(t testing.TB, c rlsv3.RateLimitServiceClient, limit int, within time.Duration) {
	t.Helper()
	Eventually(t, within, fmt.Sprintf("an hourly limit of %d", limit), func() error {
		value := fmt.Sprintf("h%d-%d", limit, fresh.Add(1))
		var codes []rlsv3.RateLimitResponse_Code
		for range limit + 1 {
			codes = append(codes, call(t, c, "hourly", value).GetOverallCode())
		}
		for i, code := range codes {
			if (i < limit) != (code == rlsv3.RateLimitResponse_OK) {
				return fmt.Errorf("%d calls: %v", limit+1, codes)
			}
		}
		return nil
	})
}

// fresh numbers descriptor values, so that each check starts at 0.
var fresh atomic.Int64

// waitOutOfHourEnd waits past the end of the hour when it is less than 15 s
// away, so that hourly counts a test makes fall in one window.
func waitOutOfHourEnd() {
	now := time.Now()
	if next := now.Truncate(time.Hour).Add(time.Hour); next.Sub(now) < 15*time.Second {
		time.Sleep(next.Sub(now) + 10*time.Millisecond)
	}
}

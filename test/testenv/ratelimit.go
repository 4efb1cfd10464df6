package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RateLimitService is a real envoyproxy/ratelimit taking its limits over
// xDS (CONFIG_TYPE=GRPC_XDS_SOTW) and counting in Redis.
//
// It listens only once it holds a configuration: it blocks at start until
// its xDS server has answered once (an empty set of RateLimitConfigs
// counts). From then on it keeps its last configuration while the xDS
// stream is down, and reconnects after XDS_CLIENT_BACKOFF_INITIAL_INTERVAL
// (the helper sets 250 ms; ratelimit's own default is 10 s).
type RateLimitService struct {
	GRPCAddr    string // the RateLimitService (envoy.service.ratelimit.v3) and gRPC health
	HTTPAddr    string // /healthcheck and /json
	DebugAddr   string // /rlconfig (the configuration it holds), /stats (Go expvars only)
	MetricsAddr string // Prometheus /metrics: its counters, see Metric
	env         []string
	proc        *Process
}

// RateLimitOptions says where a RateLimitService takes its configuration.
type RateLimitOptions struct {
	// XDSAddr is the xDS server (host:port, plaintext gRPC, ADS).
	XDSAddr string
	// NodeID is the node.id it sends (CONFIG_GRPC_XDS_NODE_ID); "" is
	// ratelimit's default, "default".
	NodeID string
	// NodeMetadata is sent as node.metadata, every value a string
	// (CONFIG_GRPC_XDS_NODE_METADATA; keys and values must not hold ','
	// and keys not '=').
	NodeMetadata map[string]string
	// Env is more of ratelimit's settings (NAME=value), after the helper's
	// own, so they win: e.g. LIMIT_RESPONSE_HEADERS_ENABLED=true.
	Env []string
}

// StartRateLimit starts ratelimit (installed by hack/tools.sh) on free
// loopback ports against redis and waits until it serves, which it does
// only after its first configuration from opts.XDSAddr.
func StartRateLimit(t testing.TB, redis *Redis, opts RateLimitOptions) *RateLimitService {
	t.Helper()
	r := &RateLimitService{
		GRPCAddr:    Addr(FreePort(t)),
		HTTPAddr:    Addr(FreePort(t)),
		DebugAddr:   Addr(FreePort(t)),
		MetricsAddr: Addr(FreePort(t)),
	}
	r.env = r.settings(redis, opts)
	r.start(t)
	return r
}

// settings is ratelimit's environment: every listener on loopback,
// counters in redis, configuration over xDS, stats to Prometheus.
func (r *RateLimitService) settings(redis *Redis, opts RateLimitOptions) []string {
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	env := []string{
		"HOST=127.0.0.1", "PORT=" + port(r.HTTPAddr),
		"GRPC_HOST=127.0.0.1", "GRPC_PORT=" + port(r.GRPCAddr),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + port(r.DebugAddr),
		"LOG_LEVEL=info",
		"BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=SINGLE", "REDIS_URL=" + redis.Addr,
		"CONFIG_TYPE=GRPC_XDS_SOTW",
		"CONFIG_GRPC_XDS_SERVER_URL=" + opts.XDSAddr,
		"CONFIG_GRPC_XDS_NODE_METADATA=" + joinMetadata(opts.NodeMetadata),
		// Reconnect to a restarted xDS server within a test's patience.
		"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL=250ms", "XDS_CLIENT_BACKOFF_MAX_INTERVAL=1s",
		// Its stats are readable only through a sink: the debug port's
		// /stats shows Go's expvars, not ratelimit's counters.
		"USE_STATSD=false", "USE_PROMETHEUS=true", "PROMETHEUS_ADDR=" + r.MetricsAddr,
		"STATS_FLUSH_INTERVAL=100ms",
	}
	if opts.NodeID != "" {
		env = append(env, "CONFIG_GRPC_XDS_NODE_ID="+opts.NodeID)
	}
	return append(env, opts.Env...)
}

// joinMetadata writes node metadata the way ratelimit reads it: k=v,k=v.
func joinMetadata(md map[string]string) string {
	pairs := make([]string, 0, len(md))
	for k, v := range md {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

func (r *RateLimitService) start(t testing.TB) {
	t.Helper()
	r.proc = Start(t, "ratelimit", r.env, Bin(t, "ratelimit"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if r.proc.Exited() {
			t.Fatalf("ratelimit exited early:\n%s", tail(r.proc.Output(), 50))
		}
		err := r.ready()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ratelimit never became ready (it listens only once its xDS server has given it a configuration): %v\n%s",
				err, tail(r.proc.Output(), 50))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ready asks the HTTP /healthcheck, which answers once the service holds
// a configuration, and checks the gRPC and debug ports, which it opens at
// the same moment in goroutines of their own.
func (r *RateLimitService) ready() error {
	for _, addr := range []string{r.GRPCAddr, r.DebugAddr} {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		c.Close()
	}
	body, err := httpGet("http://" + r.HTTPAddr + "/healthcheck")
	if err != nil {
		return err
	}
	if strings.TrimSpace(body) != "OK" {
		return fmt.Errorf("healthcheck answered %q", body)
	}
	return nil
}

// Kill ends ratelimit at once (SIGKILL), as a crash would.
func (r *RateLimitService) Kill() { r.proc.Kill() }

// Stop ends ratelimit (SIGTERM).
func (r *RateLimitService) Stop() { r.proc.Stop() }

// Restart starts ratelimit again on the same ports with the same settings
// (ending it first if it still runs) and waits until it serves: it fetches
// its configuration from xDS again, and finds its counters in Redis.
func (r *RateLimitService) Restart(t testing.TB) {
	t.Helper()
	r.proc.Kill()
	r.start(t)
}

// Output is what ratelimit logged.
func (r *RateLimitService) Output() string { return r.proc.Output() }

// Config is the configuration ratelimit holds, as its debug /rlconfig
// prints it: one line per limit, e.g.
// "test.client: unit=SECOND requests_per_unit=3, shadow_mode: false".
func (r *RateLimitService) Config() (string, error) {
	return httpGet("http://" + r.DebugAddr + "/rlconfig")
}

// Metric reads one sample from ratelimit's Prometheus /metrics: the series
// name and every given label must match. Its counters are flushed every
// 100 ms, so a test polls. A series it does not have is an error wrapping
// ErrNoStat. Names, for a limit on descriptor key k in domain d:
// ratelimit_service_rate_limit_{total_hits,over_limit,near_limit,
// within_limit,shadow_mode} with labels domain="d", key1="k".
func (r *RateLimitService) Metric(name string, labels map[string]string) (float64, error) {
	body, err := httpGet("http://" + r.MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	return parseMetric(body, name, labels)
}

// parseMetric finds a sample in Prometheus's text format.
func parseMetric(body, name string, labels map[string]string) (float64, error) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, set, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
		if n != name || !hasLabels(set, labels) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("ratelimit metric %s: %q: %w", series, value, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("ratelimit metric %s%v: %w", name, labels, ErrNoStat)
}

// hasLabels reports whether a label set (a="x",b="y") has every label
// wanted. Values with commas or escaped quotes are not expected here.
func hasLabels(set string, want map[string]string) bool {
	have := map[string]string{}
	for _, kv := range strings.Split(set, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			have[k] = strings.Trim(v, `"`)
		}
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	return string(b), nil
}

package e2e

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// globalRateLimitPolicy limits /login per client and /api per API key
// (hourly, so a window rarely ends mid-test), and tries a shadow limit on
// /shadow; the rate limit service is found in Consul as "ratelimit".
const globalRateLimitPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { service: ratelimit, timeout: 1s }
listeners:
  - name: public
    address: 127.0.0.1
    port: {{port}}
    rateLimitResponse: { body: slow down }
    hosts:
      - domains: ["*"]
        routes:
          - name: login
            match: { pathPrefix: /login }
            service: web
            globalRateLimit: { requests: REQUESTS, per: hour, by: clientIP }
          - name: api
            match: { pathPrefix: /api }
            service: web
            globalRateLimit: { requests: 2, per: hour, by: { header: x-api-key } }
          - name: shadow
            match: { pathPrefix: /shadow }
            service: web
            globalRateLimit: { requests: 1, per: hour, shadow: true }
`

// TestGlobalRateLimit runs a policy's global limits through real Envoy,
// Switchyard, envoyproxy/ratelimit (configured by Switchyard over xDS,
// found through Consul) and Redis: a client's budget holds and the 429
// carries the listener's body; each API key, and the requests without
// one, have their own; a shadow limit forwards everything; a policy edit
// raises a limit without a restart; with the service down, failureMode
// allow forwards, deny answers 500, and the limit holds again when it is
// back.
func TestGlobalRateLimit(t *testing.T) {
	redis := testenv.StartRedis(t)
	e := NewEnvWith(t, false, map[string]string{"edge.yaml": strings.Replace(globalRateLimitPolicy, "REQUESTS", "3", 1)}, Options{NoEnvoy: true})
	rl := testenv.StartRateLimit(t, redis, testenv.RateLimitOptions{XDSAddr: e.XDSAddr, NodeID: "ratelimit-1"})
	registerRateLimit(t, e, rl)
	e.StartBackend("web", "web-1")
	e.StartEnvoy("edge")
	testenv.Eventually(t, settle, "the ratelimit service holds the group's limits", func() error {
		c, err := rl.Config()
		if err == nil && !strings.Contains(c, "switchyard_edge.limit_route/public/*/login/1.remote_address: unit=HOUR requests_per_unit=3") {
			return errString("config: " + c)
		}
		return err
	})
	// Switchyard shows what it serves the service.
	if n := e.Metric("switchyard_ratelimit_domains", ""); n != 1 {
		t.Errorf("switchyard_ratelimit_domains = %v; want 1 (edge's)", n)
	}
	// login, shadow, and api's twice: with the header and without it.
	if n := e.Metric("switchyard_ratelimit_limits", `domain="switchyard_edge"`); n != 4 {
		t.Errorf("switchyard_ratelimit_limits of switchyard_edge = %v; want 4 (login, api with and without a key, shadow)", n)
	}
	if code, body, err := httpGet("http://"+e.AdminAddr+"/debug/config?group=ratelimit:service", nil); err != nil || code != http.StatusOK ||
		!strings.Contains(body, `"domain": "switchyard_edge"`) || !strings.Contains(body, `"requestsPerUnit": 3`) {
		t.Errorf("/debug/config of the rate limit service: %d %v\n%s", code, err, body)
	}
	// The instance registered after Switchyard's start reaches Envoy's
	// switchyard:ratelimit cluster, healthy.
	waitRateLimitCluster(t, e.Envoy, rl)
	awayFromHourEnd()

	codes := func(n int, path string, headers map[string]string) []int {
		t.Helper()
		var out []int
		for range n {
			code, body, err := e.Get(path, headers)
			if err != nil {
				t.Fatal(err)
			}
			if code == http.StatusTooManyRequests && body != "slow down" {
				t.Errorf("429 body %q; want the listener's rateLimitResponse", body)
			}
			out = append(out, code)
		}
		return out
	}
	if got := codes(4, "/login", nil); !equalInts(got, []int{200, 200, 200, 429}) {
		t.Errorf("/login x4: %v; want 3 passed, then 429", got)
	}
	if got := codes(3, "/api", map[string]string{"x-api-key": "a"}); !equalInts(got, []int{200, 200, 429}) {
		t.Errorf("/api key a x3: %v; want 2 passed, then 429", got)
	}
	if got := codes(2, "/api", map[string]string{"x-api-key": "b"}); !equalInts(got, []int{200, 200}) {
		t.Errorf("/api key b x2: %v; want both passed (its own budget)", got)
	}
	if got := codes(3, "/api", nil); !equalInts(got, []int{200, 200, 429}) {
		t.Errorf("/api without a key x3: %v; want 2 passed, then 429 (the keyless share one budget)", got)
	}
	if got := codes(3, "/shadow", nil); !equalInts(got, []int{200, 200, 200}) {
		t.Errorf("/shadow x3: %v; want all passed (shadow mode)", got)
	}
	testenv.Eventually(t, settle, "the shadow limit counted", func() error {
		n, err := rl.Metric("ratelimit_service_rate_limit_shadow_mode", map[string]string{"domain": "switchyard_edge", "key1": "limit_route/public/*/shadow/1"})
		if err == nil && n != 2 {
			return errString("shadow_mode " + strconv.FormatFloat(n, 'f', -1, 64))
		}
		return err
	})

	// Raised from 3 to 5: two more pass, without restarting anything.
	// (Polling /login would spend the budget: the service counts refused
	// requests too. Its configuration says when the edit is in force.)
	e.WritePolicy("edge.yaml", strings.Replace(globalRateLimitPolicy, "REQUESTS", "5", 1))
	edited := time.Now()
	// The bound: in force within 2 s of the edit (it takes about
	// 0.3 s here: a file event, a rebuild, one xDS push).
	testenv.Eventually(t, 2*time.Second, "the raised limit at the ratelimit service within 2s", func() error {
		c, err := rl.Config()
		if err == nil && !strings.Contains(c, "login/1.remote_address: unit=HOUR requests_per_unit=5") {
			return errString("config: " + c)
		}
		return err
	})
	t.Logf("raised limit in force %s after the edit", time.Since(edited).Round(time.Millisecond))
	if got := codes(2, "/login", nil); !equalInts(got, []int{200, 429}) {
		t.Errorf("/login after raising to 5: %v; want the 5th passed, then 429", got)
	}

	// The service killed: failureMode allow forwards what it would refuse;
	// back (its counters are in Redis), the limit holds again.
	rl.Kill()
	if got := codes(2, "/login", nil); !equalInts(got, []int{200, 200}) {
		t.Errorf("/login with the rate limit service down: %v; want passed (failureMode allow)", got)
	}
	rl.Restart(t)
	e.WaitFor("the limit enforced again", settle, "/login", nil, func(code int, _ string) bool { return code == http.StatusTooManyRequests })

	// failureMode deny: with the service down, Envoy answers 500.
	e.WritePolicy("edge.yaml", strings.Replace(strings.Replace(globalRateLimitPolicy, "REQUESTS", "5", 1), "timeout: 1s", "timeout: 1s, failureMode: deny", 1))
	testenv.Eventually(t, settle, "envoy's rate limit filter denies on failure", func() error {
		out, err := e.Envoy.Admin("/config_dump?resource=dynamic_listeners")
		if err == nil && !strings.Contains(out, `"failure_mode_deny": true`) {
			err = errString("no failure_mode_deny in the listener yet")
		}
		return err
	})
	rl.Kill()
	// (Until the old listener's connections drain, a kept-alive one may
	// still allow.)
	e.WaitFor("500 with the service down and failureMode deny", settle, "/api", nil, func(code int, _ string) bool {
		return code == http.StatusInternalServerError
	})
	rl.Restart(t)
	e.WaitFor("traffic back after the service", settle, "/shadow", nil, func(code int, _ string) bool { return code == http.StatusOK })
	e.requireNoNACKs()
}

type errString string

func (e errString) Error() string { return string(e) }

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// awayFromHourEnd waits out the last seconds of an hour, when hourly
// counters could reset mid-test.
func awayFromHourEnd() {
	now := time.Now()
	if left := now.Truncate(time.Hour).Add(time.Hour).Sub(now); left < 20*time.Second {
		time.Sleep(left + time.Second)
	}
}

// TestGlobalRateLimitAcrossEnvoys: two Envoys of one group share one
// budget. The limit is 10 a minute per client; 40 requests from one
// client (127.0.0.2), each on a new connection, which the kernel spreads
// over both Envoys (they share the listener's port with SO_REUSEPORT), get
// 10 answers 200 in total, not 10 from each. Another client (127.0.0.3)
// has a budget of its own.
func TestGlobalRateLimitAcrossEnvoys(t *testing.T) {
	redis := testenv.StartRedis(t)
	e := NewEnvWith(t, false, map[string]string{"edge.yaml": `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { service: ratelimit, timeout: 1s }
listeners:
  - name: public
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - service: web
            globalRateLimit: { requests: 10, per: minute, by: clientIP }
`}, Options{NoEnvoy: true})
	rl := testenv.StartRateLimit(t, redis, testenv.RateLimitOptions{XDSAddr: e.XDSAddr, NodeID: "ratelimit-1"})
	registerRateLimit(t, e, rl)
	e.StartBackend("web", "web-1")
	e.StartEnvoy("edge")
	first := e.Envoy
	second := e.StartEnvoyAs("edge", "edge-b")
	for _, envoy := range []*testenv.Envoy{first, second} {
		waitRateLimitCluster(t, envoy, rl)
	}
	awayFromMinuteEnd()

	// from sends n requests from a loopback source address, each on a new
	// connection, and counts the answers by status.
	from := func(source string, n int) map[int]int {
		t.Helper()
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
		got := map[int]int{}
		for range n {
			resp, err := client.Get(e.URL("/"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got[resp.StatusCode]++
		}
		return got
	}
	if got := from("127.0.0.2", 40); got[http.StatusOK] != 10 || got[http.StatusTooManyRequests] != 30 {
		t.Errorf("40 requests from 127.0.0.2 over two Envoys: %v; want 10 passed and 30 answered 429", got)
	}
	if got := from("127.0.0.3", 15); got[http.StatusOK] != 10 || got[http.StatusTooManyRequests] != 5 {
		t.Errorf("15 requests from 127.0.0.3: %v; want 10 passed (its own budget) and 5 answered 429", got)
	}
	for i, envoy := range []*testenv.Envoy{first, second} {
		n, err := envoy.Stat("http.public.downstream_rq_total")
		if err != nil || n == 0 {
			t.Errorf("envoy %d served %d of the requests (%v); want some: the test needs both", i+1, n, err)
		}
	}
	e.requireNoNACKs()
}

// registerRateLimit registers the rate limit service's gRPC address in
// Consul as service "ratelimit".
func registerRateLimit(t *testing.T, e *Env, rl *testenv.RateLimitService) {
	t.Helper()
	host, port, _ := strings.Cut(rl.GRPCAddr, ":")
	p, _ := strconv.Atoi(port)
	if err := e.consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "ratelimit-1", Name: "ratelimit", Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
}

// waitRateLimitCluster waits until an Envoy's switchyard:ratelimit
// cluster has the service's instance, healthy.
func waitRateLimitCluster(t *testing.T, envoy *testenv.Envoy, rl *testenv.RateLimitService) {
	t.Helper()
	testenv.Eventually(t, settle, "envoy's rate limit cluster has the registered instance", func() error {
		out, err := envoy.Admin("/clusters")
		if err == nil && !strings.Contains(out, "switchyard:ratelimit::"+rl.GRPCAddr+"::health_flags::healthy") {
			err = errString("envoy /clusters: " + out)
		}
		return err
	})
}

// awayFromMinuteEnd waits out the last seconds of a minute, when
// per-minute counters could reset mid-test.
func awayFromMinuteEnd() {
	now := time.Now()
	if left := now.Truncate(time.Minute).Add(time.Minute).Sub(now); left < 10*time.Second {
		time.Sleep(left + time.Second)
	}
}

// TestGlobalRateLimitHost: a host's limit counts every forwarded request
// of the host, on routes with limits of their own too, and with
// rateLimitService headers the responses tell the client its budget.
func TestGlobalRateLimitHost(t *testing.T) {
	redis := testenv.StartRedis(t)
	e := NewEnvWith(t, false, map[string]string{"edge.yaml": `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { service: ratelimit, timeout: 1s, headers: true }
listeners:
  - name: public
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        globalRateLimit: { requests: 3, per: hour }
        routes:
          - match: { pathPrefix: /own }
            service: web
            globalRateLimit: { requests: 100, per: hour }
          - service: web
`}, Options{NoEnvoy: true})
	// The service's own RateLimit-* headers off: the x-ratelimit-* ones
	// checked below are Envoy's (enable_x_ratelimit_headers).
	rl := testenv.StartRateLimit(t, redis, testenv.RateLimitOptions{XDSAddr: e.XDSAddr, NodeID: "ratelimit-1",
		Env: []string{"LIMIT_RESPONSE_HEADERS_ENABLED=false"}})
	registerRateLimit(t, e, rl)
	e.StartBackend("web", "web-1")
	e.StartEnvoy("edge")
	waitRateLimitCluster(t, e.Envoy, rl)
	awayFromHourEnd()

	var got []string
	for _, path := range []string{"/own", "/other", "/own", "/own", "/other"} {
		req, err := http.NewRequest(http.MethodGet, e.URL(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, path+" "+strconv.Itoa(resp.StatusCode))
		if resp.Header.Get("x-ratelimit-limit") == "" {
			t.Errorf("%s: no x-ratelimit-limit header; got %v", path, resp.Header)
		}
	}
	want := []string{"/own 200", "/other 200", "/own 200", "/own 429", "/other 429"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("got %v; want %v (the host's 3 an hour over both routes)", got, want)
	}
	e.requireNoNACKs()
}

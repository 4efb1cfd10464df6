package e2e

import (
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

const splitPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: web
            match: { pathPrefix: / }
            split:
              - { service: web, weight: 80 }
              - { service: web-canary, weight: 20 }
`

// Scenario 5: a weighted split sends each service its share of requests.
func TestWeightedSplit(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": splitPolicy})
		e.StartBackend("web", "web-1")
		e.StartBackend("web-canary", "canary-1")
		e.WaitHosts("web", 1, 1)
		e.WaitHosts("web-canary", 1, 1)
		const n = 1000
		got := e.Tally(n, "/")
		web, canary := got["web-1"], got["canary-1"]
		if web+canary != n {
			t.Fatalf("got %v over %d requests; want every request answered by web-1 or canary-1", got, n)
		}
		// Binomial(1000, 0.8) has a standard deviation of 12.6 requests:
		// 5 points is 4 of them.
		if share := float64(web) / n * 100; share < 75 || share > 85 {
			t.Fatalf("web got %.1f%% of %d requests (%v); want 80%% +- 5", share, n, got)
		}
		t.Logf("split over %d requests: web %d, web-canary %d", n, web, canary)
	})
}

const resiliencePolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: retried
            match: { pathPrefix: /retried }
            service: flaky
            retries: { attempts: 2, on: [5xx] }
          - name: not-retried
            match: { pathPrefix: /not-retried }
            service: flaky
          - name: slow
            match: { pathPrefix: /slow }
            service: slow
            timeout: 300ms
`

// Scenario 6: a failed attempt is retried, and a slow backend times out at
// the route timeout.
func TestRetriesAndTimeout(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": resiliencePolicy})
		flaky := e.StartBackend("flaky", "flaky-1")
		slow := e.StartBackend("slow", "slow-1")
		e.WaitHosts("flaky", 1, 1)
		e.WaitHosts("slow", 1, 1)
		e.WaitFor("flaky reachable", settle, "/retried", nil,
			func(code int, body string) bool { return code == http.StatusOK && body == "flaky-1" })

		// Without a retry policy the failure reaches the client: the
		// backend's 503 is real.
		flaky.FailNext(1)
		hits := flaky.Hits()
		if code, body, err := e.Get("/not-retried", nil); err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("GET /not-retried with one failure: %d %q (err %v); want the backend's 503", code, body, err)
		}
		if got := flaky.Hits() - hits; got != 1 {
			t.Fatalf("backend saw %d requests for /not-retried; want 1", got)
		}

		// With retries { attempts: 2, on: [5xx] } the client gets 200.
		retriesBefore := e.envoyCounterValue("cluster.flaky.upstream_rq_retry")
		flaky.FailNext(1)
		hits = flaky.Hits()
		if code, body, err := e.Get("/retried", nil); err != nil || code != http.StatusOK || body != "flaky-1" {
			t.Fatalf("GET /retried with one failure: %d %q (err %v); want 200 from flaky-1 after a retry", code, body, err)
		}
		if got := flaky.Hits() - hits; got != 2 {
			t.Fatalf("backend saw %d requests for /retried; want 2 (the failed try and the retry)", got)
		}
		if got := e.envoyCounterValue("cluster.flaky.upstream_rq_retry"); got != retriesBefore+1 {
			t.Fatalf("envoy cluster.flaky.upstream_rq_retry went from %d to %d; want one retry", retriesBefore, got)
		}

		// A backend slower than the 300ms route timeout: Envoy gives up
		// and answers 504 itself. No clock is read: the backend waits
		// longer than Envoy's default route timeout (15s) would let it, so
		// only the route's own timeout can produce Envoy's 504 before the
		// client's 10s timeout, and Envoy counts it as a timeout.
		if code, body, err := e.Get("/slow", nil); err != nil || code != http.StatusOK || body != "slow-1" {
			t.Fatalf("GET /slow with no delay: %d %q (err %v); want 200 from slow-1", code, body, err)
		}
		timeoutsBefore := e.envoyCounterValue("cluster.slow.upstream_rq_timeout")
		slow.SetDelay(time.Minute)
		start := time.Now()
		code, body, err := e.Get("/slow", nil)
		if err != nil || code != http.StatusGatewayTimeout || body != "upstream request timeout" {
			t.Fatalf("GET /slow with a backend that takes a minute: %d %q (err %v); want Envoy's 504 \"upstream request timeout\" from the 300ms route timeout", code, body, err)
		}
		if got := e.envoyCounterValue("cluster.slow.upstream_rq_timeout"); got != timeoutsBefore+1 {
			t.Fatalf("envoy cluster.slow.upstream_rq_timeout went from %d to %d; want one timeout", timeoutsBefore, got)
		}
		t.Logf("504 after %s", time.Since(start).Round(time.Millisecond))
	})
}

const rateLimitPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: limited
            match: { pathPrefix: /limited }
            service: web
            rateLimit: { requests: 5, per: 1s, burst: 5 }
          - name: web
            match: { pathPrefix: / }
            service: web
`

// Scenario 7: a local rate limit answers 429 beyond the burst, and lets
// requests through again once the bucket refills.
func TestLocalRateLimit(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": rateLimitPolicy})
		e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)
		// Check routing on the unlimited route only: the bucket of
		// /limited must be full when the burst starts.
		e.WaitFor("web reachable", settle, "/", nil,
			func(code int, body string) bool { return code == http.StatusOK && body == "web-1" })

		start := time.Now()
		got := rateLimitBurst(e, 20, "/limited")
		took := time.Since(start)
		// The bucket starts with 5 tokens and gains 5 a second while the
		// burst runs, which on a loaded machine can take a while: allow
		// what it can have gained, plus one.
		most := 5 + int(5*took/time.Second) + 1
		if got["200"] < 5 || got["200"] > most || got["200"]+got["429"] != 20 {
			t.Fatalf("a burst of 20 requests at 5/s with burst 5, over %s, got %v; want 5 to %d 200s and the rest 429", took, got, most)
		}
		t.Logf("burst of 20 over %s: %v", took.Round(time.Millisecond), got)
		stat := "ratelimit_http_any_limited.http_local_rate_limit.rate_limited"
		if n := e.envoyCounterValue(stat); n != got["429"] {
			t.Errorf("envoy %s = %d; want %d, the 429s", stat, n, got["429"])
		}
		// Other routes are not limited.
		if got := e.Tally(10, "/"); got["web-1"] != 10 {
			t.Fatalf("10 requests to the unlimited route while /limited is exhausted got %v; want 10 200s", got)
		}
		// 1.2s later (at least) the bucket has refilled: waiting longer
		// only adds tokens, up to the burst of 5.
		time.Sleep(1200 * time.Millisecond)
		for i := range 5 {
			if code, body, err := e.Get("/limited", nil); err != nil || code != http.StatusOK || body != "web-1" {
				t.Fatalf("request %d to /limited 1.2s after the burst: %d %q (err %v); want 200 (the bucket refilled)", i+1, code, body, err)
			}
		}
	})
}

// rateLimitBurst sends n requests at once and counts the responses by
// status ("error" for transport errors).
func rateLimitBurst(e *Env, n int, path string) map[string]int {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = map[string]int{}
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key := "error"
			if code, _, err := e.Get(path, nil); err == nil {
				key = strconv.Itoa(code)
			}
			mu.Lock()
			out[key]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return out
}

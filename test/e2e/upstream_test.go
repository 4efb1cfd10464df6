package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const stickyPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: web
            match: { pathPrefix: / }
            service: web
---
apiVersion: switchyard.io/v1
kind: Service
name: web
loadBalancer:
  hashOn:
    cookie: { name: sticky, ttl: 1h, path: / }
---
# Every other upstream setting, so that real Envoy is shown to accept them.
apiVersion: switchyard.io/v1
kind: Service
name: api
loadBalancer: { policy: least_request, slowStart: 10s }
connectTimeout: 500ms
idleTimeout: 30s
circuitBreakers: { maxConnections: 100, maxPendingRequests: 100, maxRequests: 100, maxRetries: 5 }
outlierDetection:
  consecutive5xx: 5
  consecutiveGatewayErrors: 3
  consecutiveLocalOriginFailures: 2
  interval: 2s
  baseEjectionTime: 5s
  maxEjectionTime: 1m
  maxEjectionPercent: 30
healthCheck: { path: /healthz, interval: 1s, timeout: 500ms }
`

// Sticky sessions by cookie: Envoy sets the cookie on a request without
// one, and 1,000 requests that send it back all reach one instance, while
// requests without it (each on a new connection, so each gets a new
// cookie) spread over every instance. The other Service settings are
// accepted by Envoy and the service they tune answers.
func TestStickySessionByCookie(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": stickyPolicy})
		for _, id := range []string{"web-1", "web-2", "web-3"} {
			e.StartBackend("web", id)
		}
		e.StartBackend("api", "api-1")
		e.WaitHosts("web", 3, 3)
		e.WaitHosts("api", 1, 1)
		e.WaitFor("api through its tuned cluster", settle, "/api", nil, func(code int, body string) bool {
			return code == http.StatusOK && body == "api-1"
		})
		e.requireNoNACKs()

		// A fresh connection per request: Envoy derives a generated
		// cookie from the client's address and port.
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		get := func(cookie *http.Cookie) (string, *http.Cookie) {
			t.Helper()
			req, err := http.NewRequest(http.MethodGet, e.URL("/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if cookie != nil {
				req.AddCookie(cookie)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body := strings.TrimSpace(string(b))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET / answered %d %q", resp.StatusCode, body)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "sticky" {
					return body, c
				}
			}
			return body, nil
		}

		first, cookie := get(nil)
		if cookie == nil {
			t.Fatal("the first response set no sticky cookie; want Envoy to generate one")
		}
		if cookie.MaxAge != 3600 || cookie.Path != "/" {
			t.Errorf("sticky cookie Max-Age %d, Path %q; want 3600 and /", cookie.MaxAge, cookie.Path)
		}
		const n = 1000
		with := map[string]int{}
		for range n {
			id, again := get(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
			if again != nil {
				t.Fatalf("a request with the cookie got a new one (%q)", again.Value)
			}
			with[id]++
		}
		if len(with) != 1 || with[first] != n {
			t.Fatalf("%d requests with the cookie reached %v; want all %d on %s", n, with, n, first)
		}
		without := map[string]int{}
		for range n {
			id, _ := get(nil)
			without[id]++
		}
		for _, id := range []string{"web-1", "web-2", "web-3"} {
			if without[id] < n/10 {
				t.Fatalf("%d requests without the cookie reached %v; want each instance at least %d", n, without, n/10)
			}
		}
		t.Logf("with the cookie: %v; without: %v", with, without)
	})
}

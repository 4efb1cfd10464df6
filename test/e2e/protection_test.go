package e2e

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// These scenarios prove the gateway's protections through real Envoy:
// request limits, IP lists and per-client rate limits.

const requestLimitsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: limited
    address: 127.0.0.1
    port: {{port}}
    requestLimits: { maxHeadersKB: 8, maxBodyBytes: 1024 }
    hosts:
      - domains: ["*"]
        routes:
          - name: live
            match: { pathPrefix: /live }
            service: web
            websocket: true
          - name: web
            service: web
  - name: open
    address: 127.0.0.1
    port: {{port2}}
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`

// post sends body to addr+path; chunked sends it without a
// Content-Length, so that only reading it can tell its size.
func post(t *testing.T, addr, path string, body []byte, chunked bool) reply {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // hides the length from net/http
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s (%d bytes): %v", path, len(body), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

// Request limits: headers over the listener's bound get 431 and bodies
// over it 413, whether the client announces the length or not; requests
// within the bounds, a WebSocket route's bodies, and a listener without
// limits pass.
func TestRequestLimits(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": requestLimitsPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr, open := testenv.Addr(e.Port), testenv.Addr(e.Port2)

	for _, c := range []struct {
		name   string
		addr   string
		header int // bytes of one extra header's value
		code   int
	}{
		{"no extra header", addr, 0, 200},
		{"4 KiB header under 8 KiB", addr, 4 << 10, 200},
		{"10 KiB header over 8 KiB", addr, 10 << 10, 431},
		{"10 KiB header, listener without limits", open, 10 << 10, 200},
	} {
		h := map[string]string{}
		if c.header > 0 {
			h["X-Big"] = strings.Repeat("a", c.header)
		}
		if got := send(t, http.MethodGet, c.addr, "www.example.com", "/", h); got.code != c.code {
			t.Errorf("%s: got %d; want %d", c.name, got.code, c.code)
		}
	}

	for _, c := range []struct {
		name    string
		addr    string
		path    string
		size    int
		chunked bool
		code    int
	}{
		{"1000 bytes under 1024", addr, "/", 1000, false, 200},
		{"1024 bytes, the bound", addr, "/", 1024, true, 200},
		{"2000 bytes with Content-Length", addr, "/", 2000, false, 413},
		{"2000 bytes chunked", addr, "/", 2000, true, 413},
		{"2000 bytes to the WebSocket route", addr, "/live", 2000, false, 200},
		{"2000 bytes, listener without limits", open, "/", 2000, false, 200},
	} {
		got := post(t, c.addr, c.path, bytes.Repeat([]byte("b"), c.size), c.chunked)
		if got.code != c.code {
			t.Errorf("%s: got %d; want %d", c.name, got.code, c.code)
		}
		if c.code == 200 && got.body != "web-1" {
			t.Errorf("%s: got body %q; want web-1", c.name, got.body)
		}
	}
}

const ipAccessPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: direct
    address: 127.0.0.1
    port: {{port}}
    ipAccess: { deny: [127.0.0.0/8] }
    hosts:
      - domains: ["*"]
        routes:
          - name: local
            match: { pathPrefix: /local }
            service: web
            ipAccess: { allow: [127.0.0.0/8, "::1"] }
          - name: office
            match: { pathPrefix: /office }
            service: web
            ipAccess: { allow: [10.0.0.0/8] }
          - name: web
            service: web
  - name: proxied
    address: 127.0.0.1
    port: {{port2}}
    xffTrustedHops: 1
    hosts:
      - domains: [partners.example.com]
        ipAccess: { allow: [198.51.100.0/24], deny: [198.51.100.66] }
        routes:
          - service: web
      - domains: ["*"]
        ipAccess: { deny: [203.0.113.0/24] }
        routes:
          - service: web
`

// IP access: a listener's deny list refuses 127.0.0.1 with 403, a route's
// own allow list replaces it; behind one trusted proxy, the address that
// proxy appended to X-Forwarded-For decides, and without the header the
// connection's peer does.
func TestIPAccess(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": ipAccessPolicy})
	backend := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	direct, proxied := testenv.Addr(e.Port), testenv.Addr(e.Port2)
	for _, c := range []struct {
		name, addr, host, path, xff string
		code                        int
	}{
		{"listener deny list", direct, "www.example.com", "/", "", 403},
		{"X-Forwarded-For ignored without trusted hops", direct, "www.example.com", "/", "198.51.100.7", 403},
		{"route allow list replaces the listener's", direct, "www.example.com", "/local", "", 200},
		{"route allow list without the client", direct, "www.example.com", "/office", "", 403},
		{"trusted hop: denied address", proxied, "www.example.com", "/", "203.0.113.9", 403},
		{"trusted hop: other address", proxied, "www.example.com", "/", "198.51.100.7", 200},
		{"trusted hop: a client's own X-Forwarded-For is not trusted", proxied, "www.example.com", "/", "203.0.113.9, 192.0.2.1", 200},
		{"no X-Forwarded-For: the peer", proxied, "www.example.com", "/", "", 200},
		{"host allow list: allowed", proxied, "partners.example.com", "/", "198.51.100.7", 200},
		{"host allow list: denied within it", proxied, "partners.example.com", "/", "198.51.100.66", 403},
		{"host allow list: outside it", proxied, "partners.example.com", "/", "192.0.2.1", 403},
		{"host allow list: the peer", proxied, "partners.example.com", "/", "", 403},
	} {
		h := map[string]string{}
		if c.xff != "" {
			h["X-Forwarded-For"] = c.xff
		}
		before := backend.Hits()
		got := send(t, http.MethodGet, c.addr, c.host, c.path, h)
		if got.code != c.code {
			t.Errorf("%s: got %d; want %d", c.name, got.code, c.code)
		}
		if reached := backend.Hits() > before; reached != (c.code == 200) {
			t.Errorf("%s: reached the backend: %v; want %v", c.name, reached, c.code == 200)
		}
	}
	// Envoy counts each listener's refusals, as docs/policy.md says.
	stats, err := e.Envoy.Admin("/stats?filter=rbac%5C.denied$")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"http.direct.rbac.denied: 3", "http.proxied.rbac.denied: 4"} {
		if !strings.Contains(stats, want) {
			t.Errorf("Envoy stats %q; want %q", stats, want)
		}
	}
}

const clientRateLimitPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    rateLimitResponse: { body: '{"error":"slow down"}', contentType: application/json }
    hosts:
      - domains: ["*"]
        routes:
          - name: keys
            match: { pathPrefix: /keys }
            service: web
            rateLimit: { requests: 2, per: 1h, by: header, header: x-api-key, headers: true }
          - name: ips
            match: { pathPrefix: /ips }
            service: web
            rateLimit: { requests: 2, per: 1h, by: clientIP }
          - name: paths
            match: { pathPrefix: /paths }
            service: web
            rateLimit: { requests: 1, per: 1h, by: path }
          - name: shadow
            match: { pathPrefix: /shadow }
            service: web
            rateLimit: { requests: 1, per: 1h, shadow: true }
          - name: web
            service: web
`

// statuses sends n GETs to path with the headers and lists the statuses.
func statuses(t *testing.T, addr, path string, n int, h map[string]string) []int {
	t.Helper()
	var out []int
	for range n {
		out = append(out, send(t, http.MethodGet, addr, "www.example.com", path, h).code)
	}
	return out
}

// Per-client rate limits: two API keys have a budget each, and requests
// without the key share one; clients are told by address (a client's own
// X-Forwarded-For does not get it a new budget) and paths by path; a 429
// carries the listener's body, and x-ratelimit-* headers when asked; in
// shadow mode every request passes and Envoy counts the would-be 429s.
func TestClientRateLimits(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": clientRateLimitPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	want := []int{200, 200, 429}
	for _, c := range []struct {
		name, path string
		h          map[string]string
		want       []int
	}{
		{"API key alice", "/keys", map[string]string{"X-Api-Key": "alice"}, want},
		{"API key bob, a budget of its own", "/keys", map[string]string{"X-Api-Key": "bob"}, want},
		{"no API key: one shared budget", "/keys", nil, want},
		{"client 127.0.0.1", "/ips", nil, want},
		{"client 127.0.0.1 claiming another address", "/ips", map[string]string{"X-Forwarded-For": "192.0.2.1"}, []int{429}},
		{"path /paths/a", "/paths/a", nil, []int{200, 429}},
		{"path /paths/b, a budget of its own", "/paths/b", nil, []int{200, 429}},
		{"shadow mode", "/shadow", nil, []int{200, 200, 200, 200}},
	} {
		if got := statuses(t, addr, c.path, len(c.want), c.h); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v; want %v", c.name, got, c.want)
		}
	}

	got := send(t, http.MethodGet, addr, "www.example.com", "/keys", map[string]string{"X-Api-Key": "alice"})
	if got.code != 429 || got.body != `{"error":"slow down"}` || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("limited request: got %d %q Content-Type %q; want 429 with the policy's JSON body", got.code, got.body, got.header.Get("Content-Type"))
	}
	if got.header.Get("X-Ratelimit-Limit") == "" || got.header.Get("X-Ratelimit-Remaining") != "0" {
		t.Errorf("limited request: x-ratelimit headers %v; want a limit and 0 remaining", got.header)
	}
	got = send(t, http.MethodGet, addr, "www.example.com", "/keys", map[string]string{"X-Api-Key": "carol"})
	if got.code != 200 || got.header.Get("X-Ratelimit-Remaining") != "1" {
		t.Errorf("carol's first request: got %d, x-ratelimit-remaining %q; want 200 and 1", got.code, got.header.Get("X-Ratelimit-Remaining"))
	}

	// The shadow route forwarded all 4 and counted the 3 beyond its budget.
	stat := "ratelimit_http_any_shadow.http_local_rate_limit.rate_limited"
	if n := e.envoyCounterValue(stat); n != 3 {
		t.Errorf("envoy %s = %d; want 3", stat, n)
	}
}

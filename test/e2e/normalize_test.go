package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

const normalizePolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: login
            match: { path: /api/login }
            service: login
            rateLimit: { requests: 1, per: 1h }
          - name: account
            match: { path: /api/account }
            service: login
          - name: web
            match: { pathPrefix: / }
            service: web
`

// Another spelling of a path must not get past the route (and so the rate
// limit) written for it: Envoy normalizes every request path (RFC 3986 dot
// segments, escaped unreserved characters, repeated slashes) before routing,
// forwards the normalized path, and redirects a path with an escaped slash
// to its unescaped form instead of routing it as written.
func TestNormalizedPathsShareTheirRoute(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": normalizePolicy})
	login := e.startPathEcho("login", "login-1")
	web := e.startPathEcho("web", "web-1")
	e.WaitHosts("login", 1, 1)
	e.WaitHosts("web", 1, 1)
	e.WaitFor("web reachable", 10*time.Second, "/", nil,
		func(code int, body string) bool { return code == http.StatusOK && body == "web-1 /" })

	// Every spelling reaches the route of the normalized path, and the
	// upstream gets the normalized path.
	for _, target := range []string{"/api/account", "/api//account", "/api/./account", "/api/x/../account", "/api/%61ccount", "//api///account"} {
		code, body, _ := rawGet(t, e, target)
		if code != http.StatusOK || body != "login-1 /api/account" {
			t.Errorf("GET %s: got %d %q; want 200 %q (the account route, normalized path)", target, code, body, "login-1 /api/account")
		}
	}

	// The limit is one request per hour: the first spelling takes the only
	// token, and every other spelling is counted against the same bucket.
	if code, body, _ := rawGet(t, e, "/api//login"); code != http.StatusOK || body != "login-1 /api/login" {
		t.Fatalf("GET /api//login (the first request): got %d %q; want 200 %q", code, body, "login-1 /api/login")
	}
	hits := login.Hits()
	for _, target := range []string{"/api/login", "/api//login", "/api/./login", "/api/%6cogin", "/api/x/../login", "/api/%6Cogin"} {
		if code, body, _ := rawGet(t, e, target); code != http.StatusTooManyRequests {
			t.Errorf("GET %s after the only token was taken: got %d %q; want 429 (the same rate limit as /api/login)", target, code, body)
		}
	}
	if n := login.Hits() - hits; n != 0 {
		t.Errorf("the login backend served %d requests past the limit; want 0", n)
	}

	// An escaped slash is not routed as written: the client is sent to the
	// unescaped path, which is then routed (and rate limited) as usual.
	hits, webHits := login.Hits(), web.Hits()
	code, body, loc := rawGet(t, e, "/api%2Flogin")
	if code != http.StatusTemporaryRedirect || loc != "/api/login" {
		t.Errorf("GET /api%%2Flogin: got %d %q, location %q; want 307 to /api/login", code, body, loc)
	}
	if login.Hits() != hits || web.Hits() != webHits {
		t.Errorf("GET /api%%2Flogin reached a backend (login %d -> %d, web %d -> %d); want the redirect only",
			hits, login.Hits(), webHits, web.Hits())
	}
}

// startPathEcho starts a backend that answers "<id> <path as received>",
// and registers it in Consul like StartBackend.
func (e *Env) startPathEcho(service, id string) *Backend {
	e.t.Helper()
	return e.startHandlerBackend(service, id, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, id, r.RequestURI)
	})
}

// rawGet sends "GET target HTTP/1.1" to Envoy's first listener exactly as
// written (Go's client would clean or re-escape some paths) and returns the
// status, the trimmed body and the Location header.
func rawGet(t *testing.T, e *Env, target string) (code int, body, location string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", testenv.Addr(e.Port), 5*time.Second)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n", target); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", target, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Location")
}

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// These scenarios prove the route actions and request changes of a proxy
// group through real Envoy. They run on delta xDS only: what they prove is
// carried in the RouteConfiguration, which both protocols deliver alike.

// reply is a response as the client sees it, redirects not followed.
type reply struct {
	code   int
	header http.Header
	body   string
}

// send sends one request to addr (host:port) with the given Host header
// and extra headers, without following redirects.
func send(t *testing.T, method, addr, host, path string, headers map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

const redirectPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: [shop.example.com]
        httpsRedirect: true
      - domains: ["*"]
        routes:
          - name: moved
            match: { path: /old }
            redirect: { path: /new, code: 308 }
          - name: docs
            match: { pathPrefix: /docs }
            redirect: { host: docs.example.com, prefix: /, code: 302 }
          - name: legacy
            match: { pathPrefix: /v1/ }
            redirect: { scheme: https, host: "[2001:db8::1]", port: 8443, prefix: /v2/, stripQuery: true, code: 307 }
          - name: form
            match: { path: /form }
            redirect: { path: "/done?ok=1", code: 303 }
          - name: web
            service: web
  - name: plain
    address: 127.0.0.1
    port: {{port2}}
    httpsRedirect: true
`

// Redirects: HTTP to HTTPS with one line on a host or a listener, and
// route redirects that change the path, prefix, host, port and scheme,
// with each status code; other routes still forward.
func TestRedirect(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": redirectPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr, plain := testenv.Addr(e.Port), testenv.Addr(e.Port2)
	for _, c := range []struct {
		addr, host, path string
		code             int
		location         string
	}{
		// httpsRedirect on the host: the same URL, query included, with https.
		{addr, "shop.example.com", "/cart?item=3", 301, "https://shop.example.com/cart?item=3"},
		// httpsRedirect on the listener: any host.
		{plain, "any.example.org", "/x/y?z=1", 301, "https://any.example.org/x/y?z=1"},
		{plain, "shop.example.com", "/", 301, "https://shop.example.com/"},
		// A new path; the query is kept.
		{addr, "www.example.com", "/old?q=1", 308, "http://www.example.com/new?q=1"},
		// The matched prefix /docs stripped to /, both with and without
		// the slash after it.
		{addr, "www.example.com", "/docs/guide/intro", 302, "http://docs.example.com/guide/intro"},
		{addr, "www.example.com", "/docs", 302, "http://docs.example.com/"},
		// Scheme, host, port and prefix at once, the query dropped.
		{addr, "www.example.com", "/v1/items/7?debug=1", 307, "https://[2001:db8::1]:8443/v2/items/7"},
		// A path with its own query replaces the request's.
		{addr, "www.example.com", "/form?a=b", 303, "http://www.example.com/done?ok=1"},
	} {
		got := send(t, http.MethodGet, c.addr, c.host, c.path, nil)
		if got.code != c.code || got.header.Get("Location") != c.location {
			t.Errorf("GET %s%s: got %d Location %q; want %d %q", c.host, c.path, got.code, got.header.Get("Location"), c.code, c.location)
		}
	}
	if got := send(t, http.MethodGet, addr, "www.example.com", "/other", nil); got.code != 200 || got.body != "web-1" {
		t.Errorf("GET /other: got %d %q; want 200 web-1 (forwarded)", got.code, got.body)
	}
	e.requireNoNACKs()
}

const rewritePolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: orders
            match: { pathPrefix: /orders }
            service: web
            rewrite: { prefix: / }
          - name: internal
            match: { pathPrefix: /api/ }
            service: web
            rewrite: { prefix: /internal/, host: "web.internal:8080" }
          - name: versioned
            match: { pathRegex: "/v[0-9]+/.*" }
            service: web
            rewrite: { regex: { pattern: "^/v([0-9]+)/", substitution: "/version-\\1/" }, host: web.internal }
          - name: web
            service: web
`

// Rewrites: the path and Host the backend receives, after a prefix is
// stripped (/orders/x to /x), replaced, or rewritten by a regex, and the
// Host replaced by a literal.
func TestRewrite(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": rewritePolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	for _, c := range []struct {
		path, wantPath, wantHost string
	}{
		{"/orders/42?full=1", "/42?full=1", "shop.example.com"},
		{"/orders", "/", "shop.example.com"},
		{"/orders/", "/", "shop.example.com"},
		{"/api/users/7", "/internal/users/7", "web.internal:8080"},
		{"/v2/items", "/version-2/items", "web.internal"},
		{"/plain/path", "/plain/path", "shop.example.com"},
	} {
		got := send(t, http.MethodGet, addr, "shop.example.com", c.path, nil)
		if got.code != 200 || got.body != "web-1" ||
			got.header.Get("X-Seen-Path") != c.wantPath || got.header.Get("X-Seen-Host") != c.wantHost {
			t.Errorf("GET %s: backend saw path %q host %q (%d %q); want path %q host %q",
				c.path, got.header.Get("X-Seen-Path"), got.header.Get("X-Seen-Host"), got.code, got.body, c.wantPath, c.wantHost)
		}
	}
	e.requireNoNACKs()
}

const directResponsePolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: healthz
            match: { path: /healthz }
            directResponse: { status: 200, body: "ok\n" }
          - name: maintenance
            match: { pathPrefix: /checkout }
            directResponse: { status: 503, body: "<h1>Back soon</h1>\n", contentType: "text/html; charset=utf-8" }
          - name: gone
            match: { path: /gone }
            directResponse: { status: 410 }
          - name: web
            service: web
`

// Direct responses: Envoy answers itself with the status, body and
// content type of the route; the backend never sees those requests.
func TestDirectResponse(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": directResponsePolicy})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	for _, c := range []struct {
		method, path, body, contentType string
		code                            int
	}{
		{http.MethodGet, "/healthz", "ok", "text/plain", 200},
		{http.MethodPost, "/checkout/pay", "<h1>Back soon</h1>", "text/html; charset=utf-8", 503},
		{http.MethodGet, "/gone", "", "", 410},
	} {
		got := send(t, c.method, addr, "shop.example.com", c.path, nil)
		if got.code != c.code || got.body != c.body || got.header.Get("Content-Type") != c.contentType {
			t.Errorf("%s %s: got %d %q Content-Type %q; want %d %q %q",
				c.method, c.path, got.code, got.body, got.header.Get("Content-Type"), c.code, c.body, c.contentType)
		}
	}
	if n := web.Hits(); n != 0 {
		t.Errorf("the backend served %d requests; want 0: direct responses never reach it", n)
	}
	if got := send(t, http.MethodGet, addr, "shop.example.com", "/other", nil); got.code != 200 || got.body != "web-1" {
		t.Errorf("GET /other: got %d %q; want 200 web-1 (forwarded)", got.code, got.body)
	}
	e.requireNoNACKs()
}

const headersPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        requestHeaders:
          set: { x-client-ip: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", x-env: prod }
          remove: [x-debug]
        responseHeaders:
          set: { x-request-id: "%REQ(x-request-id)%" }
          remove: [x-powered-by]
        routes:
          - name: internal
            match: { pathPrefix: /internal }
            service: web
            requestHeaders:
              set: { x-env: internal }
              add: { x-via: "switchyard 100%%" }
            responseHeaders: { add: { cache-control: no-store } }
          - name: healthz
            match: { path: /healthz }
            directResponse: { status: 200, body: "ok" }
            responseHeaders: { set: { x-served-by: edge } }
          - name: web
            service: web
`

// Request and response headers set, added and removed per host and per
// route, as the backend and the client see them: the client's address
// and the request ID as dynamic values, a route's change winning over its
// host's, and response headers on a direct response too.
func TestHeaders(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": headersPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q; want %q", what, got, want)
		}
	}

	got := send(t, http.MethodGet, addr, "shop.example.com", "/x", map[string]string{"X-Debug": "1", "X-Env": "client"})
	check("GET /x status", strconv.Itoa(got.code), "200")
	check("backend's X-Client-Ip", got.header.Get("X-Seen-Req-X-Client-Ip"), "127.0.0.1")
	check("backend's X-Env (host set)", got.header.Get("X-Seen-Req-X-Env"), "prod")
	check("backend's X-Debug (host removed)", got.header.Get("X-Seen-Req-X-Debug"), "")
	id := got.header.Get("X-Seen-Req-X-Request-Id")
	if id == "" {
		t.Errorf("the backend got no X-Request-Id")
	}
	check("client's X-Request-Id (the backend's)", got.header.Get("X-Request-Id"), id)
	check("client's X-Powered-By (host removed)", got.header.Get("X-Powered-By"), "")

	got = send(t, http.MethodGet, addr, "shop.example.com", "/internal/a", map[string]string{"X-Via": "client"})
	check("backend's X-Env (the route's wins)", got.header.Get("X-Seen-Req-X-Env"), "internal")
	check("backend's X-Via (route added)", got.header.Get("X-Seen-Req-X-Via"), "client,switchyard 100%")
	check("backend's X-Client-Ip (host set)", got.header.Get("X-Seen-Req-X-Client-Ip"), "127.0.0.1")
	check("client's Cache-Control (route added)", got.header.Get("Cache-Control"), "no-store")
	if got.header.Get("X-Request-Id") == "" {
		t.Errorf("GET /internal/a: no X-Request-Id in the response (the host's)")
	}

	got = send(t, http.MethodGet, addr, "shop.example.com", "/healthz", nil)
	check("GET /healthz body", got.body, "ok")
	check("direct response's X-Served-By (route set)", got.header.Get("X-Served-By"), "edge")
	if got.header.Get("X-Request-Id") == "" {
		t.Errorf("GET /healthz: no X-Request-Id in the direct response (the host's)")
	}
	e.requireNoNACKs()
}

const matchPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: write
            match: { pathPrefix: /items, methods: [POST, PUT] }
            directResponse: { status: 200, body: write }
          - name: search-debug
            match: { pathPrefix: /search, queryParams: [{ name: debug, exact: "1" }] }
            directResponse: { status: 200, body: search-debug }
          - name: search-id
            match:
              pathPrefix: /search
              queryParams: [{ name: id, regex: "[0-9]+" }, { name: preview, present: true }]
            directResponse: { status: 200, body: search-id }
          - name: beta
            match: { headers: [{ name: x-version, suffix: "-beta" }] }
            directResponse: { status: 200, body: beta }
          - name: mobile
            match: { headers: [{ name: user-agent, contains: Mobile }] }
            directResponse: { status: 200, body: mobile }
          - name: anonymous
            match: { pathPrefix: /account, headers: [{ name: authorization, absent: true }] }
            directResponse: { status: 401, body: login first }
          - name: not-eu
            match: { pathPrefix: /region, headers: [{ name: x-region, exact: eu, invert: true }] }
            directResponse: { status: 200, body: not eu }
          - name: docs
            match: { pathPrefix: /docs, caseInsensitive: true }
            directResponse: { status: 200, body: docs }
          - name: web
            service: web
`

// Matches by method, query parameter (exact, regex, present), header
// (suffix, contains, absent, inverted) and path prefix whatever its case,
// each shown by which route answers a real request.
func TestMatch(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": matchPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	for _, c := range []struct {
		method, path string
		headers      map[string]string
		want         string // the body: which route answered
	}{
		{"POST", "/items", nil, "write"},
		{"PUT", "/items/3", nil, "write"},
		{"GET", "/items", nil, "web-1"},
		{"GET", "/search?debug=1", nil, "search-debug"},
		{"GET", "/search?debug=2", nil, "web-1"},
		{"GET", "/search?q=x&id=42&preview=1", nil, "search-id"},
		{"GET", "/search?id=4x2&preview=1", nil, "web-1"}, // the regex matches the whole value
		{"GET", "/search?id=42", nil, "web-1"},            // preview absent
		{"GET", "/v", map[string]string{"X-Version": "2.0-beta"}, "beta"},
		{"GET", "/v", map[string]string{"X-Version": "2.0-beta.1"}, "web-1"},
		{"GET", "/m", map[string]string{"User-Agent": "Foo/1 Mobile Safari"}, "mobile"},
		{"GET", "/account", nil, "login first"},
		{"GET", "/account", map[string]string{"Authorization": "Bearer x"}, "web-1"},
		{"GET", "/region", map[string]string{"X-Region": "us"}, "not eu"},
		{"GET", "/region", map[string]string{"X-Region": "eu"}, "web-1"},
		// An inverted match needs the header: a request without it does
		// not match either (Envoy's rule, in docs/policy.md).
		{"GET", "/region", nil, "web-1"},
		{"GET", "/DOCS/intro", nil, "docs"},
		{"GET", "/Docs", nil, "docs"},
	} {
		got := send(t, c.method, addr, "shop.example.com", c.path, c.headers)
		if got.body != c.want {
			t.Errorf("%s %s %v: got %d %q; want %q", c.method, c.path, c.headers, got.code, got.body, c.want)
		}
	}
	e.requireNoNACKs()
}

const corsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        cors:
          allowOrigins: ["https://shop.example.com", "https://*.example.org"]
          allowMethods: [GET, PUT]
          allowHeaders: [content-type, x-api-key]
          exposeHeaders: [x-request-id]
          maxAge: 10m
          allowCredentials: true
        routes:
          - name: public
            match: { pathPrefix: /public }
            service: web
            cors: { allowOrigins: ["*"] }
          - name: web
            service: web
`

// CORS on a host and a route: Envoy answers preflights itself with the
// policy's headers, adds Access-Control-Allow-Origin for allowed origins
// only (exact, subdomain wildcard, any), and a route's policy replaces its
// host's.
func TestCORS(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": corsPolicy})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %q; want %q", what, got, want)
		}
	}
	preflight := func(path, origin, method string) reply {
		return send(t, http.MethodOptions, addr, "shop.example.com", path,
			map[string]string{"Origin": origin, "Access-Control-Request-Method": method})
	}

	got := preflight("/api", "https://shop.example.com", "PUT")
	check("preflight status", strconv.Itoa(got.code), "200")
	check("preflight Allow-Origin", got.header.Get("Access-Control-Allow-Origin"), "https://shop.example.com")
	check("preflight Allow-Methods", got.header.Get("Access-Control-Allow-Methods"), "GET,PUT")
	check("preflight Allow-Headers", got.header.Get("Access-Control-Allow-Headers"), "content-type,x-api-key")
	check("preflight Max-Age", got.header.Get("Access-Control-Max-Age"), "600")
	check("preflight Allow-Credentials", got.header.Get("Access-Control-Allow-Credentials"), "true")
	if n := web.Hits(); n != 0 {
		t.Errorf("the backend served %d requests; want 0: Envoy answers preflights", n)
	}

	got = send(t, http.MethodGet, addr, "shop.example.com", "/api", map[string]string{"Origin": "https://a.b.example.org"})
	check("GET from a subdomain: body", got.body, "web-1")
	check("GET from a subdomain: Allow-Origin", got.header.Get("Access-Control-Allow-Origin"), "https://a.b.example.org")
	check("GET from a subdomain: Expose-Headers", got.header.Get("Access-Control-Expose-Headers"), "x-request-id")
	for _, origin := range []string{"https://evil.example.com", "https://example.org", "http://shop.example.com"} {
		got = send(t, http.MethodGet, addr, "shop.example.com", "/api", map[string]string{"Origin": origin})
		check("GET from "+origin+": body", got.body, "web-1")
		check("GET from "+origin+": Allow-Origin", got.header.Get("Access-Control-Allow-Origin"), "")
	}

	// The route's policy replaces the host's, field by field too: any
	// origin, and none of the host's credentials, methods or headers.
	got = preflight("/public/x", "https://evil.example.com", "GET")
	check("route preflight Allow-Origin", got.header.Get("Access-Control-Allow-Origin"), "https://evil.example.com")
	check("route preflight Allow-Credentials", got.header.Get("Access-Control-Allow-Credentials"), "")
	check("route preflight Allow-Methods", got.header.Get("Access-Control-Allow-Methods"), "")
	check("route preflight Allow-Headers", got.header.Get("Access-Control-Allow-Headers"), "")
	e.requireNoNACKs()
}

const mirrorPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: all
            match: { pathPrefix: /all }
            service: web
            mirror: [{ service: shadow }]
          - name: some
            match: { pathPrefix: /some }
            service: web
            mirror: [{ service: shadow, percent: 25 }]
`

// Mirroring: every request of one route, and about a quarter of another's,
// are copied to the shadow service, while clients get web's answers.
func TestMirror(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": mirrorPolicy})
	e.StartBackend("web", "web-1")
	shadow := e.StartBackend("shadow", "shadow-1")
	e.WaitHosts("web", 1, 1)
	e.WaitHosts("shadow", 1, 1)

	waitHits := func(what string, atLeast int64) int64 {
		t.Helper()
		testenv.Eventually(t, settle, what, func() error {
			if n := shadow.Hits(); n < atLeast {
				return fmt.Errorf("shadow served %d", n)
			}
			return nil
		})
		return shadow.Hits()
	}
	if got := e.Tally(20, "/all/x"); got["web-1"] != 20 {
		t.Fatalf("GET /all/x: got %v; want web-1 to answer all 20", got)
	}
	if n := waitHits("20 mirrored requests", 20); n != 20 {
		t.Errorf("shadow served %d requests; want exactly the 20 mirrored", n)
	}
	// Envoy marks a copy by its Host: "-shadow" after the name, before
	// the port.
	if h, want := shadow.LastHost(), fmt.Sprintf("127.0.0.1-shadow:%d", e.Port); h != want {
		t.Errorf("a mirrored request's Host: got %q; want %q", h, want)
	}

	const n = 400
	if got := e.Tally(n, "/some"); got["web-1"] != n {
		t.Fatalf("GET /some: got %v; want web-1 to answer all %d", got, n)
	}
	// Mirrored copies are sent as the requests are; give the last ones a
	// moment, then count: about n/4, far from 0 and from n.
	time.Sleep(500 * time.Millisecond)
	if copies := shadow.Hits() - 20; copies < n/8 || copies > 3*n/8 {
		t.Errorf("shadow got %d of %d requests mirrored at 25%%; want about %d", copies, n, n/4)
	}
	e.requireNoNACKs()
}

const faultPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: slow
            match: { pathPrefix: /slow }
            service: web
            fault: { delay: { duration: 400ms } }
          - name: broken
            match: { pathPrefix: /broken }
            service: web
            fault: { abort: { status: 503 } }
          - name: flaky
            match: { pathPrefix: /flaky }
            service: web
            fault: { abort: { status: 500, percent: 50 } }
          - name: web
            service: web
`

// Fault injection: a delay holds requests before they are forwarded, an
// abort answers with its status without reaching the service, and a
// percentage applies either to about that share of the requests.
func TestFault(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": faultPolicy})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)

	start := time.Now()
	got := send(t, http.MethodGet, addr, "shop.example.com", "/slow", nil)
	// Envoy's timer may fire a hair before 400 ms by our clock: 390 ms
	// still tells a delayed request from one that was not (about 1 ms).
	if took := time.Since(start); got.code != 200 || got.body != "web-1" || took < 390*time.Millisecond {
		t.Errorf("GET /slow: got %d %q after %s; want web-1 after the 400ms delay", got.code, got.body, took)
	}

	before := web.Hits()
	for range 5 {
		if got := send(t, http.MethodGet, addr, "shop.example.com", "/broken", nil); got.code != 503 {
			t.Errorf("GET /broken: got %d %q; want the injected 503", got.code, got.body)
		}
	}
	if n := web.Hits() - before; n != 0 {
		t.Errorf("web served %d aborted requests; want 0", n)
	}

	const n = 200
	aborted := 0
	for range n {
		switch got := send(t, http.MethodGet, addr, "shop.example.com", "/flaky", nil); got.code {
		case 500:
			aborted++
		case 200:
		default:
			t.Fatalf("GET /flaky: got %d %q; want 200 or the injected 500", got.code, got.body)
		}
	}
	if aborted < 3*n/10 || aborted > 7*n/10 {
		t.Errorf("GET /flaky: %d of %d aborted; want about half", aborted, n)
	}
	if got := send(t, http.MethodGet, addr, "shop.example.com", "/other", nil); got.code != 200 {
		t.Errorf("GET /other: got %d; want 200 (no fault)", got.code)
	}
	e.requireNoNACKs()
}

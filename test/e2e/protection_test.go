package e2e

import (
	"bytes"
	"io"
	"net/http"
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

package e2e

import (
	"strings"
	"testing"
)

const webPolicy = `apiVersion: switchyard.io/v1
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
            service: web
`

// Scenario 1: requests through Envoy reach both instances of a service.
func TestRequestsReachEveryInstance(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
		// Before web registers, its route answers 503 (not 404, and not
		// another route), and Switchyard warns naming the policy line.
		if code, body, err := e.Get("/", nil); err != nil || code != 503 {
			t.Fatalf("before web registers: got %d %q %v; want 503", code, body, err)
		}
		if !e.SwitchyardLogContains(`edge.yaml:11: warning: service \"web\" is not registered in Consul`) {
			t.Errorf("no warning naming edge.yaml:11 for the unregistered service:\n%s", e.Switchyard.Output())
		}
		e.StartBackend("web", "web-1")
		e.StartBackend("web", "web-2")
		e.WaitHosts("web", 2, 2)
		got := e.Tally(100, "/")
		if got["web-1"] < 20 || got["web-2"] < 20 || got["web-1"]+got["web-2"] != 100 {
			t.Fatalf("got %v over 100 requests; want both web-1 and web-2 to serve (round robin), nothing else", got)
		}
	})
}

// A real-world path regex compiles to an RE2 program larger than Envoy's
// default limit (100); the bootstrap raises it, so Envoy accepts the route.
func TestComplexRegexRoute(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		policy := strings.Replace(webPolicy, "match: { pathPrefix: / }",
			`match: { pathRegex: "/api/v[0-9]+/(users|orders|products|carts|payments|invoices)/[a-z0-9-]{1,64}" }`, 1)
		e := NewEnv(t, delta, map[string]string{"edge.yaml": policy})
		e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)
		if code, body, err := e.Get("/api/v2/orders/abc-123", nil); err != nil || code != 200 || body != "web-1" {
			t.Fatalf("got %d %q %v; want web-1 through the regex route", code, body, err)
		}
		if code, _, _ := e.Get("/api/v2/other/abc", nil); code != 404 {
			t.Fatalf("a path the regex does not match: got %d; want 404", code)
		}
		e.requireNoNACKs()
	})
}

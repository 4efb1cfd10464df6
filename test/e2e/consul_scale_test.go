package e2e

import (
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

const apiWebPolicy = `apiVersion: switchyard.io/v1
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
`

// A service past consul.max-service-watches has no blocking query of its
// own: it is watched through the shared queries on critical and warning
// checks and re-read when it changes. Traffic reaches it, a failing
// instance leaves rotation, and the metrics show how it is watched.
func TestServicesPastTheWatchPool(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": apiWebPolicy},
		Options{ServeArgs: []string{"--consul-max-service-watches", "1"}})
	api := e.StartBackend("api", "api-1")
	e.WaitHosts("api", 1, 1)
	a := e.StartBackend("web", "web-1")
	b := e.StartBackend("web", "web-2")
	e.WaitHosts("web", 2, 2)
	e.waitAllServe("both web instances serve", settle, a, b)
	if code, body, err := e.Get("/api", nil); err != nil || code != 200 || body != api.ID {
		t.Fatalf("GET /api: %d %q %v; want 200 from %s", code, body, err, api.ID)
	}
	for kind, want := range map[string]float64{"health": 1, "multiplexed": 1, "health-state": 2, "services": 1} {
		if n := e.Metric("switchyard_consul_watches", `kind="`+kind+`"`); n != want {
			t.Errorf("switchyard_consul_watches{kind=%q} = %v; want %v", kind, n, want)
		}
	}

	start := time.Now()
	e.SetHealth(b, consulapi.HealthCritical)
	took := e.waitOnlyServed(start, a.ID, 20)
	t.Logf("critical instance of a multiplexed service out of rotation after %s", took.Round(time.Millisecond))
	e.SetHealth(b, consulapi.HealthPassing)
	e.waitAllServe("web-2 back in rotation", settle, a, b)

	if n := e.Metric("switchyard_consul_requests_total", `kind="read",result="ok"`); n < 2 {
		t.Errorf("switchyard_consul_requests_total{kind=\"read\",result=\"ok\"} = %v; want the first read and the flips' re-reads", n)
	}
	if n := e.Metric("switchyard_consul_requests_total", `result="throttled"`); n != 0 {
		t.Errorf("switchyard_consul_requests_total{result=\"throttled\"} = %v; want 0", n)
	}
	if out := e.Switchyard.Output(); strings.Contains(out, "response code: 429") {
		t.Errorf("Consul refused a query:\n%s", out)
	}
}

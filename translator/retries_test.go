package translator_test

import (
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
)

// A route without retries still retries what never reached an application;
// attempts 0 turns even that off; explicit retries are taken as written.
func TestRouteRetries(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 10000
    hosts:
      - domains: ["*"]
        routes:
          - name: implicit
            match: { pathPrefix: /a }
            service: web
          - name: off
            match: { pathPrefix: /b }
            service: web
            retries: { attempts: 0 }
          - name: explicit
            service: web
            retries: { attempts: 4, on: [5xx] }
`)})
	if diags.HasErrors() || len(diags) != 0 {
		t.Fatalf("policy: %v", diags)
	}
	res := translator.Translate(registry.NewSnapshot(), set)
	routes := res.Configs[0].Listeners[0].VirtualHosts[0].Routes
	if r := routes[0].Retries; r == nil || r.Attempts != policy.ImplicitRetryAttempts || !slices.Equal(r.On, policy.ImplicitRetryOn()) {
		t.Errorf("route without retries: %+v; want %d on %v", r, policy.ImplicitRetryAttempts, policy.ImplicitRetryOn())
	}
	if r := routes[1].Retries; r != nil {
		t.Errorf("attempts 0: %+v; want no retries", r)
	}
	if r := routes[2].Retries; r == nil || r.Attempts != 4 || !slices.Equal(r.On, []string{"5xx"}) {
		t.Errorf("explicit retries: %+v; want 4 on [5xx]", r)
	}

	_, diags = policy.Parse(map[string][]byte{"w.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 10000
    hosts:
      - domains: ["*"]
        routes:
          - service: web
            retries: { attempts: 0, on: [5xx] }
`)})
	if len(diags) != 1 || diags.HasErrors() || diags[0].String() != "w.yaml:11: warning: attempts 0 turns retries off; on and perTryTimeout have no effect" {
		t.Errorf("attempts 0 with on: got %v; want one warning", diags)
	}
}

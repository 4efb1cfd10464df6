package translator

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// Two hosts whose first domains differ only by '.' and '_' still give
// their limits different IDs, with no dot, and the IR is valid.
func TestGlobalRateLimitIDsApart(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { address: "127.0.0.1:8081" }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: [shop.example.com]
        globalRateLimit: { requests: 1, per: second }
        routes: [{ service: web, globalRateLimit: { requests: 1, per: second } }]
      - domains: [shop_example.com]
        globalRateLimit: { requests: 1, per: second }
        routes: [{ service: web, globalRateLimit: { requests: 1, per: second } }]
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	cfg := Translate(registry.NewSnapshot(), set).Configs[0]
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var got []string
	for _, vh := range cfg.Listeners[0].VirtualHosts {
		got = append(got, vh.GlobalRateLimits[0].ID, vh.Routes[0].GlobalRateLimits[0].ID)
	}
	want := []string{"host/public/shop_example_com/1", "route/public/shop_example_com/0/1", "host/public/shop_example_com~1/1", "route/public/shop_example_com~1/0/1"}
	if len(got) != len(want) {
		t.Fatalf("got %q; want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %q; want %q", got, want)
			break
		}
	}
}

// A domain may hold '_' and '~', so a suffixed name can be a later host's
// own (a_b~2) or an earlier one's: hosts a.b, a_b~2 and a_b all get IDs of
// their own, and the group's IR stays valid.
func TestGlobalRateLimitIDsApartFromSuffixedDomains(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { address: "127.0.0.1:8081" }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: [a.b]
        globalRateLimit: { requests: 1, per: second }
        routes: [{ service: web }]
      - domains: [a_b~2]
        globalRateLimit: { requests: 1, per: second }
        routes: [{ service: web }]
      - domains: [a_b]
        globalRateLimit: { requests: 1, per: second }
        routes: [{ service: web }]
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	cfg := Translate(registry.NewSnapshot(), set).Configs[0]
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var got []string
	for _, vh := range cfg.Listeners[0].VirtualHosts {
		got = append(got, vh.GlobalRateLimits[0].ID)
	}
	want := []string{"host/public/a_b/1", "host/public/a_b~2/1", "host/public/a_b~3/1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("host limit IDs (-want +got):\n%s", diff)
	}
}

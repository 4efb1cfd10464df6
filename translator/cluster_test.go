package translator

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

func TestIsHostName(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"localhost", true},
		{"payments.example.com", true},
		{"payments.example.com.", true},
		{"web-4.node.dc1.consul", true},
		{"a1", true},
		{"", false},
		{".", false},
		{"web 4", false},
		{"web_4.example.com", false},
		{"-web.example.com", false},
		{"web-.example.com", false},
		{"a..b", false},
		{strings.Repeat("a", 64) + ".com", false},
		{strings.Repeat("abcdefg.", 32) + "com", false}, // 259 characters
		// The last label must not be a number (RFC 1123): these are
		// malformed or unusual IPv4 addresses, not names.
		{"999.999.999.999", false},
		{"10.0.0.1.", false},
		{"256.1.1.1", false},
		{"127.1", false},
		{"2130706433", false},
		{"0x7f.1", false},
		{"0x7f000001", false},
		{"127.0.0.0x1", false},
		{"1.2.3.0x", false},
		// Numbers in other labels, and last labels that only start with
		// digits, are fine.
		{"10.0.0.1.nip.io", true},
		{"123.example.com", true},
		{"3com.com", true},
		{"example.1a", true},
		{"x0.0xg", true},
	} {
		if got := isHostName(tc.s); got != tc.want {
			t.Errorf("isHostName(%q) = %v; want %v", tc.s, got, tc.want)
		}
	}
}

// An instance whose address is 999.999.999.999 is skipped with a warning; it
// must not turn its service into a DNS cluster that resolves the "name".
func TestNumericAddressIsNotAName(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts: [{ domains: ["*"], routes: [{ service: web }] }]
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	snap := registry.NewSnapshot(registry.Service{Name: "web", Instances: []registry.Instance{
		{ID: "web-1", Node: "a", Address: "10.0.0.1", Port: 80, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
		{ID: "web-2", Node: "b", Address: "999.999.999.999", Port: 80, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
	}})
	res := Translate(snap, set)
	cfg, ok := res.Config("edge")
	if !ok || len(cfg.Clusters) != 1 {
		t.Fatalf("got config %v; want group edge with one cluster", cfg)
	}
	c := cfg.Clusters[0]
	if c.DNS || len(c.Endpoints) != 1 || c.Endpoints[0].ID != "web-1" {
		t.Errorf("cluster web: DNS %v, endpoints %+v; want an EDS cluster with web-1 only", c.DNS, c.Endpoints)
	}
	want := `consul: warning: service "web" instance "web-2" on node "b" has no usable address ("999.999.999.999" port 80; an IP address or a host name, and a port, are needed); skipped`
	if got := res.Diagnostics; len(got) != 1 || got[0].String() != want {
		t.Errorf("diagnostics %q; want [%q]", got, want)
	}
}

// A service Consul does not know is warned about with what it costs: a
// route's requests answer 503, but a mirror's copies go nowhere, an
// authorization service's listener refuses (or, failing open, passes)
// what it checks, and a key service's provider refuses its tokens.
func TestUnregisteredServiceWarningSaysWhatItCosts(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    extAuthz: { service: authz, protocol: grpc }
    jwt:
      providers:
        - { name: corp, issuer: https://corp.example.com, remoteJWKS: { service: keys, path: /jwks.json } }
    hosts:
      - domains: ["*"]
        routes:
          - { service: web, mirror: [{ service: shadow }] }
  - name: open
    port: 8081
    extAuthz: { service: authz2, protocol: grpc, failureMode: allow }
    hosts: [{ domains: ["*"], routes: [{ service: web }] }]
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	web := registry.Service{Name: "web", Instances: []registry.Instance{
		{ID: "web-1", Node: "a", Address: "10.0.0.1", Port: 80, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
	}}
	var got []string
	for _, d := range Translate(registry.NewSnapshot(web), set).Diagnostics {
		if strings.Contains(d.String(), "is not registered in Consul") {
			got = append(got, d.Message)
		}
	}
	want := []string{
		`service "authz" is not registered in Consul; until it is, the requests listener "http" checks are answered 403`,
		`service "authz2" is not registered in Consul; until it is, the requests listener "open" checks pass unchecked (failureMode: allow)`,
		`service "keys" is not registered in Consul; until it is, provider "corp"'s keys cannot be fetched and its tokens are refused (401)`,
		`service "shadow" is not registered in Consul; nothing is mirrored to it until it is`,
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

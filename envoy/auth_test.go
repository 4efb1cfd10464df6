package envoy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// authListener has two JWT providers and an HTTP authorization service,
// each setting headers of its own, and the routes named in
// TestAuthHeadersRemoved.
func authListener() *ir.Listener {
	web := []ir.Backend{{Service: "web", Weight: 1}}
	return &ir.Listener{
		Name: "api", Address: "0.0.0.0", Port: 10000,
		JWT: &ir.JWT{Providers: []ir.JWTProvider{
			{Name: "a", Issuer: "https://a.example.com", LocalJWKS: `{"keys":[]}`, PayloadHeader: "x-a-payload",
				ClaimHeaders: []ir.ClaimHeader{{Claim: "sub", Header: "x-user"}}},
			{Name: "b", Issuer: "https://b.example.com", LocalJWKS: `{"keys":[]}`,
				ClaimHeaders: []ir.ClaimHeader{{Claim: "sub", Header: "x-user"}, {Claim: "org", Header: "x-org"}}},
		}},
		ExtAuthz: &ir.ExtAuthz{Cluster: "authz", Authority: "authz", Timeout: ir.D(time.Second),
			UpstreamHeaders: []string{"x-authz-user"}},
		VirtualHosts: []ir.VirtualHost{
			{Name: "api.example.com", Domains: []string{"api.example.com"}, Routes: []ir.Route{
				{Name: "open", Match: ir.Match{PathPrefix: "/open"}, Backends: web, ExtAuthzOff: true},
				{Name: "a", Match: ir.Match{PathPrefix: "/a"}, Backends: web, JWTRequire: []string{"a"}},
				{Name: "b", Match: ir.Match{PathPrefix: "/b"}, Backends: web, JWTRequire: []string{"b"}, ExtAuthzOff: true},
				{Name: "either", Match: ir.Match{PathPrefix: "/either"}, Backends: web, JWTRequire: []string{"a", "b"}},
				{Name: "removes", Match: ir.Match{PathPrefix: "/removes"}, Backends: web, JWTRequire: []string{"a"},
					RequestHeaders: &ir.Headers{Remove: []string{"x-org"}}},
				{Name: "answer", Match: ir.Match{PathPrefix: "/"}, DirectResponse: &ir.DirectResponse{Status: 200}},
			}},
			{Name: "sets.example.com", Domains: []string{"sets.example.com"},
				RequestHeaders: &ir.Headers{Set: []ir.Header{{Name: "x-org", Value: "acme"}}},
				Routes: []ir.Route{
					{Name: "host-sets", Match: ir.Match{PathPrefix: "/"}, Backends: web, ExtAuthzOff: true},
				}},
		},
	}
}

// Each forwarding route removes the headers its listener's JWT providers
// and authorization service set that its own checks do not, so a client
// cannot send them itself; a header its own checks set stays (Envoy's
// router applies removals after them). Headers the route or its host
// already remove or set are not listed again.
func TestAuthHeadersRemoved(t *testing.T) {
	rc, err := routeConfig(authListener())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			got[r.GetName()] = r.GetRequestHeadersToRemove()
		}
	}
	want := map[string][]string{
		"open":      {"x-a-payload", "x-authz-user", "x-org", "x-user"},
		"a":         {"x-org"},
		"b":         {"x-a-payload", "x-authz-user"},
		"either":    nil,
		"removes":   {"x-org"},
		"answer":    nil, // answers itself: nothing is forwarded
		"host-sets": {"x-a-payload", "x-authz-user", "x-user"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request_headers_to_remove by route (-want +got):\n%s", diff)
	}
}

// TestAuthAcceptedByEnvoy has real Envoy validate the golden group with
// JWT, external authorization and the filter that strips the headers they
// set (--mode validate builds every listener, filter, route and cluster
// without opening sockets).
func TestAuthAcceptedByEnvoy(t *testing.T) {
	cfg := loadIR(t, "testdata/auth.in.yaml")
	res, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot := staticEdgeBootstrap(t, cfg.Group, res, "")
	if !strings.Contains(string(boot), headerMutationFilterName) {
		t.Fatal("the auth case has no header-stripping filter to validate")
	}
	if out, err := envoyValidate(t, boot); err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
}

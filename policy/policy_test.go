package policy_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/switchyard-io/switchyard/policy"
)

// edgeYAML uses every field of ProxyGroup. The line numbers matter: the
// expected Set below points at them.
const edgeYAML = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: public
    port: 8443
    tls: { certificates: [shop-cert, admin-cert] }
    hosts:
      - domains: [shop.example.com, "*.shop.example.com"]
        routes:
          - name: api
            match: { pathPrefix: /api, headers: [ { name: x-canary, exact: "1" } ] }
            service: api
            timeout: 2s
            retries: { attempts: 2, on: [connect-failure, 5xx], perTryTimeout: 500ms }
            rateLimit: { requests: 100, per: 1s, burst: 200 }
          - match: { path: /healthz }
            service: health.v1
            timeout: 0s
          - match:
              pathRegex: "^/items/[0-9]+$"
              headers:
                - { name: x-debug, present: true }
                - { name: x-user, prefix: admin- }
                - { name: x-tenant, regex: "t[0-9]+" }
            service: items
            retries: { attempts: 1 }
            rateLimit: { requests: 5, per: 1m }
          - match: { pathPrefix: / }
            split:
              - { service: web, weight: 90 }
              - { service: web-canary, weight: 10 }
      - domains: [admin.example.com]
        routes:
          - service: admin
  - name: plain
    address: "::0"
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - { name: all, service: web }
`

// certsYAML holds the certificates, another group and a document
// separator; the admin certificate is named by absolute path.
const certsYAML = `apiVersion: switchyard.io/v1
kind: Certificate
name: shop-cert
certFile: tls/shop.crt
keyFile: tls/shop.key
caFile: tls/ca.crt
---
apiVersion: switchyard.io/v1
kind: Certificate
name: admin-cert
certFile: ADMIN_CRT
keyFile: ADMIN_KEY
caFile: tls/ca.crt
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: api-gw
listeners: []
---
`

func TestLoadFullExample(t *testing.T) {
	dir := t.TempDir()
	shop := writeCert(t, filepath.Join(dir, "tls"), "shop", "shop.example.com", "*.shop.example.com")
	ca := writeCert(t, filepath.Join(dir, "tls"), "ca", "ca.example.com")
	admin := writeCert(t, t.TempDir(), "admin", "admin.example.com")
	edge := filepath.Join(dir, "edge.yaml")
	certs := filepath.Join(dir, "certs.yml")
	writeFile(t, edge, []byte(edgeYAML))
	writeFile(t, certs, []byte(strings.NewReplacer("ADMIN_CRT", admin.certFile, "ADMIN_KEY", admin.keyFile).Replace(certsYAML)))
	// Not policy files: a hidden file, another extension and a subdirectory.
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), []byte("not: [valid"))
	writeFile(t, filepath.Join(dir, "README.md"), []byte("not: [valid"))
	writeFile(t, filepath.Join(dir, "sub", "more.yaml"), []byte("not: [valid"))

	set, diags := policy.Load(dir)

	wantDiags := []string{certs + ":17: warning: proxy group has no listeners"}
	if diff := cmp.Diff(wantDiags, lines(diags)); diff != "" {
		t.Errorf("diagnostics (-want +got):\n%s", diff)
	}
	if set == nil {
		t.Fatal("got nil Set; want a Set")
	}

	at := func(file string, line int) policy.Pos { return policy.Pos{File: file, Line: line} }
	want := &policy.Set{
		Groups: []policy.ProxyGroup{
			{Pos: at(certs, 17), Name: "api-gw"},
			{
				Pos:  at(edge, 3),
				Name: "edge",
				Listeners: []policy.Listener{
					{
						Pos: at(edge, 5), Name: "public", Address: "0.0.0.0", Port: 8443,
						TLS: &policy.ListenerTLS{Pos: at(edge, 7), Certificates: []string{"shop-cert", "admin-cert"}},
						Hosts: []policy.VirtualHost{
							{
								Pos:     at(edge, 9),
								Domains: []string{"shop.example.com", "*.shop.example.com"},
								Routes: []policy.Route{
									{
										Pos: at(edge, 11), Name: "api",
										Match: policy.Match{PathPrefix: "/api", Headers: []policy.HeaderMatch{
											{Pos: at(edge, 12), Name: "x-canary", Exact: "1"},
										}},
										Service:   "api",
										Timeout:   ptr(2 * time.Second),
										Retries:   &policy.Retries{Attempts: 2, On: []string{"connect-failure", "5xx"}, PerTryTimeout: 500 * time.Millisecond},
										RateLimit: &policy.RateLimit{Requests: 100, Per: time.Second, Burst: 200},
									},
									{
										Pos: at(edge, 17), Name: "1",
										Match:   policy.Match{Path: "/healthz"},
										Service: "health.v1",
										Timeout: ptr(time.Duration(0)),
									},
									{
										Pos: at(edge, 20), Name: "2",
										Match: policy.Match{PathRegex: "^/items/[0-9]+$", Headers: []policy.HeaderMatch{
											{Pos: at(edge, 23), Name: "x-debug", Present: true},
											{Pos: at(edge, 24), Name: "x-user", Prefix: "admin-"},
											{Pos: at(edge, 25), Name: "x-tenant", Regex: "t[0-9]+"},
										}},
										Service:   "items",
										Retries:   &policy.Retries{Attempts: 1, On: policy.DefaultRetryOn()},
										RateLimit: &policy.RateLimit{Requests: 5, Per: time.Minute, Burst: 5},
									},
									{
										Pos: at(edge, 29), Name: "3",
										Match: policy.Match{PathPrefix: "/"},
										Split: []policy.WeightedService{
											{Pos: at(edge, 31), Service: "web", Weight: 90},
											{Pos: at(edge, 32), Service: "web-canary", Weight: 10},
										},
									},
								},
							},
							{
								Pos:     at(edge, 33),
								Domains: []string{"admin.example.com"},
								Routes: []policy.Route{
									{Pos: at(edge, 35), Name: "0", Match: policy.Match{PathPrefix: "/"}, Service: "admin"},
								},
							},
						},
					},
					{
						Pos: at(edge, 36), Name: "plain", Address: "::", Port: 8080,
						Hosts: []policy.VirtualHost{{
							Pos:     at(edge, 40),
							Domains: []string{"*"},
							Routes:  []policy.Route{{Pos: at(edge, 42), Name: "all", Match: policy.Match{PathPrefix: "/"}, Service: "web"}},
						}},
					},
				},
			},
		},
		Certificates: []policy.Certificate{
			{
				Pos: at(certs, 10), Name: "admin-cert",
				CertFile: admin.certFile, KeyFile: admin.keyFile, CAFile: ca.certFile,
				CertPEM: admin.certPEM, KeyPEM: admin.keyPEM, CAPEM: ca.certPEM,
				DNSNames: []string{"admin.example.com"}, NotAfter: testNotAfter,
			},
			{
				Pos: at(certs, 3), Name: "shop-cert",
				CertFile: shop.certFile, KeyFile: shop.keyFile, CAFile: ca.certFile,
				CertPEM: shop.certPEM, KeyPEM: shop.keyPEM, CAPEM: ca.certPEM,
				DNSNames: []string{"shop.example.com", "*.shop.example.com"}, NotAfter: testNotAfter,
			},
		},
	}
	// Secret's String hides the bytes, so compare them as plain bytes.
	secretBytes := cmp.Transformer("secret", func(s policy.Secret) []byte { return []byte(s) })
	if diff := cmp.Diff(want, set, cmpopts.IgnoreUnexported(policy.Set{}), secretBytes); diff != "" {
		t.Errorf("Load(%q) (-want +got):\n%s", dir, diff)
	}

	wantFiles := []string{admin.certFile, admin.keyFile}
	wantFiles = append(wantFiles, certs, edge, ca.certFile, shop.certFile, shop.keyFile)
	if diff := cmp.Diff(slices.Sorted(slices.Values(wantFiles)), set.Files()); diff != "" {
		t.Errorf("Files() (-want +got):\n%s", diff)
	}

	if g, ok := set.Group("edge"); !ok || g.Name != "edge" {
		t.Errorf(`Group("edge") = %q, %v; want "edge", true`, g.Name, ok)
	}
	if _, ok := set.Group("nope"); ok {
		t.Error(`Group("nope") found a group; want none`)
	}
	if c, ok := set.Certificate("shop-cert"); !ok || c.Name != "shop-cert" {
		t.Errorf(`Certificate("shop-cert") = %q, %v; want "shop-cert", true`, c.Name, ok)
	}
	if _, ok := set.Certificate("nope"); ok {
		t.Error(`Certificate("nope") found a certificate; want none`)
	}
}

// The quick start's sample policies must always be valid, with no warnings.
func TestQuickstartPolicies(t *testing.T) {
	dir := filepath.Join("..", "examples", "quickstart", "policies")
	set, diags := policy.Load(dir)
	if len(diags) != 0 {
		t.Fatalf("Load(%q) diagnostics:\n%v", dir, diags.Err())
	}
	if _, ok := set.Group("edge"); !ok {
		t.Fatalf("Load(%q) has no group edge", dir)
	}
}

func TestParseDefaults(t *testing.T) {
	src := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: g
listeners:
  - name: l
    port: 80
    hosts:
      - domains: ["*"]
        routes:
          - service: web
            retries: { attempts: 3 }
            rateLimit: { requests: 7, per: 250ms }
`
	set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(src)})
	if len(diags) != 0 {
		t.Fatalf("Parse diagnostics: %v", lines(diags))
	}
	g, _ := set.Group("g")
	l := g.Listeners[0]
	r := l.Hosts[0].Routes[0]
	got := []any{l.Address, l.TLS, r.Name, r.Match, r.Timeout, *r.Retries, *r.RateLimit}
	want := []any{
		"0.0.0.0", (*policy.ListenerTLS)(nil), "0", policy.Match{PathPrefix: "/"}, (*time.Duration)(nil),
		policy.Retries{Attempts: 3, On: []string{"connect-failure", "refused-stream", "gateway-error"}},
		policy.RateLimit{Requests: 7, Per: 250 * time.Millisecond, Burst: 7},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"p.yaml"}, set.Files()); diff != "" {
		t.Errorf("Files() (-want +got):\n%s", diff)
	}
}

func TestParseAnchors(t *testing.T) {
	src := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: g
listeners:
  - name: l
    port: 80
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /a }
            service: a
            retries: &retry { attempts: 2, on: [5xx] }
          - service: b
            retries: *retry
`
	set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(src)})
	if len(diags) != 0 {
		t.Fatalf("Parse diagnostics: %v", lines(diags))
	}
	g, _ := set.Group("g")
	routes := g.Listeners[0].Hosts[0].Routes
	want := &policy.Retries{Attempts: 2, On: []string{"5xx"}}
	for _, r := range routes {
		if diff := cmp.Diff(want, r.Retries); diff != "" {
			t.Errorf("route %s retries (-want +got):\n%s", r.Name, diff)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// lines returns each diagnostic as its user would see it.
func lines(ds policy.Diagnostics) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

// Nested YAML aliases ("billion laughs") multiply a few KB into millions of
// values: one error at the document, found at once, instead of a walk (and
// a list of mistakes) that grows exponentially. Moderate reuse is fine.
func TestAliasExpansionIsBounded(t *testing.T) {
	repeat := func(alias string, n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat("*"+alias+", ", n), ", ") + "]"
	}
	doc := func(k int) string {
		return `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: l0
    port: 1000
    hosts:
      - domains: ["a.example.com"]
        routes:
          - match: { pathPrefix: / }
            retries: &retry { attempts: 2, on: [5xx] }
            split: [ &w {service: web, weight: 1} ]
          - &r
            match: { pathPrefix: /x }
            retries: *retry
            split: ` + repeat("w", k) + `
      - &host
        domains: ["b.example.com"]
        routes: ` + repeat("r", k) + `
  - name: l1
    port: 1001
    hosts: ` + repeat("host", k) + `
`
	}
	// 10^9 values when expanded; walking them would take hours, and the
	// one finding below shows the walk never started.
	_, diags := policy.Parse(map[string][]byte{"bomb.yaml": []byte(doc(1000))})
	if len(diags) != 1 || !strings.HasPrefix(diags[0].String(), "bomb.yaml:1: YAML aliases expand this file beyond") {
		t.Fatalf("got %d findings, first %v; want the one alias error at line 1", len(diags), diags[:min(1, len(diags))])
	}

	// The budget is the file's: many documents, each within it alone.
	many := strings.Repeat("---\n"+doc(25), 40) // 40 x about 16,000 values
	_, diags = policy.Parse(map[string][]byte{"many.yaml": []byte(many)})
	if len(diags) != 1 || !strings.Contains(diags[0].String(), "YAML aliases expand this file beyond") {
		t.Fatalf("many documents: got %d findings, first %v; want the one alias error", len(diags), diags[:min(1, len(diags))])
	}

	// Reuse within bounds is decoded as written: a retry policy anchored
	// once and named again, and a few repeated routes.
	set, diags := policy.Parse(map[string][]byte{"reuse.yaml": []byte(doc(1))})
	if diags.HasErrors() {
		t.Fatalf("moderate reuse refused: %v", diags.Err())
	}
	routes := set.Groups[0].Listeners[0].Hosts[0].Routes
	if r := routes[1].Retries; r == nil || r.Attempts != 2 {
		t.Errorf("the aliased retry policy was not applied: %+v", r)
	}
}

// Keep adds named groups of another set, with their certificates, and
// leaves groups the set already has alone.
func TestSetKeep(t *testing.T) {
	dir := t.TempDir()
	c := writeCert(t, dir, "shop", "shop.example.com")
	group := func(name, port string, tls bool) string {
		doc := "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: " + name + "\nlisteners:\n  - name: l\n    port: " + port + "\n"
		if tls {
			doc += "    tls: { certificates: [shop] }\n"
		}
		return doc + "    hosts:\n      - domains: [\"*\"]\n        routes:\n          - service: " + name + "-svc\n"
	}
	cert := "apiVersion: switchyard.io/v1\nkind: Certificate\nname: shop\ncertFile: " + c.certFile + "\nkeyFile: " + c.keyFile + "\n"
	old, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(group("edge", "80", false) + "---\n" + group("partners", "443", true) + "---\n" + cert)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	cur, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(group("edge", "8080", false))})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	got := cur.Keep(old, []string{"partners", "edge", "nope"})
	var names []string
	for _, g := range got.Groups {
		names = append(names, g.Name)
	}
	if strings.Join(names, " ") != "edge partners" {
		t.Fatalf("groups %v; want [edge partners]", names)
	}
	if e, _ := got.Group("edge"); e.Listeners[0].Port != 8080 {
		t.Errorf("edge came from the old set (port %d); the current one must win", e.Listeners[0].Port)
	}
	if _, ok := got.Certificate("shop"); !ok {
		t.Error("partners' certificate was not kept")
	}
	if len(cur.Groups) != 1 {
		t.Errorf("Keep changed its receiver: %d groups", len(cur.Groups))
	}
}

// A group kept after leaving the policy keeps the Service documents of
// what it routes to, so its clusters keep their protocol.
func TestKeepCarriesServices(t *testing.T) {
	from, diags := policy.Parse(map[string][]byte{"a.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: grpc-edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: greeter
---
apiVersion: switchyard.io/v1
kind: Service
name: greeter
protocol: grpc
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	now, diags := policy.Parse(map[string][]byte{"b.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: other
listeners:
  - name: http
    port: 8081
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	kept := now.Keep(from, []string{"grpc-edge"})
	if sv, ok := kept.Service("greeter"); !ok || sv.Protocol != policy.ProtocolGRPC {
		t.Errorf("kept set's Service greeter = %+v, %v; want protocol grpc carried over", sv, ok)
	}
}

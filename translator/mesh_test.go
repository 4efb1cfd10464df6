package translator

import (
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/golden"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// meshFixture is a small mesh: web (http) calls api (http) and db (tcp);
// api has two instances, one whose service fails its check; db's sidecar
// speaks tcp and has an L7 intention (a deny, for a tcp service); cache's
// sidecar has no leaf certificate yet; intentions on api deny billing,
// allow web GET /public only, and a "*" entry allows every caller of every
// service.
func meshFixture() *registry.MeshSnapshot {
	const td = "11111111-2222-3333-4444-555555555555.consul"
	leaf := func(svc string) registry.Leaf {
		return registry.Leaf{Service: svc, CertPEM: "-----BEGIN CERTIFICATE-----\n" + svc + "\n-----END CERTIFICATE-----\n",
			KeyPEM: registry.KeyPEM("-----BEGIN EC PRIVATE KEY-----\nsecret-" + svc + "\n-----END EC PRIVATE KEY-----\n")}
	}
	sidecar := func(svc, id, proto string, port int, ups ...registry.Upstream) registry.Sidecar {
		return registry.Sidecar{ID: id + "-sidecar-proxy", Name: svc + "-sidecar-proxy", Service: svc, ServiceID: id, Node: "node-a",
			Address: "10.0.0.1", Port: port, Datacenter: "dc1", LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080,
			Protocol: proto, Upstreams: ups, Health: registry.Healthy}
	}
	return registry.NewMeshSnapshot(registry.MeshData{
		Sidecars: []registry.Sidecar{
			sidecar("web", "web-1", "http", 21000,
				registry.Upstream{DestinationType: "service", DestinationName: "api", LocalBindPort: 9191},
				registry.Upstream{DestinationType: "service", DestinationName: "db", LocalBindPort: 9192},
				registry.Upstream{DestinationType: "prepared_query", DestinationName: "q", LocalBindPort: 9193, Problem: "prepared queries are not supported"}),
			sidecar("api", "api-1", "http", 21001),
			sidecar("api", "api-2", "http", 21002),
			sidecar("db", "db-1", "tcp", 21003),
			sidecar("cache", "cache-1", "tcp", 21004),
		},
		Destinations: []registry.Destination{
			{Name: "api", Endpoints: []registry.Endpoint{
				{ProxyID: "api-1-sidecar-proxy", ServiceID: "api-1", Node: "node-a", Address: "10.0.0.1", Port: 21001, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
				{ProxyID: "api-2-sidecar-proxy", ServiceID: "api-2", Node: "node-a", Address: "10.0.0.1", Port: 21002, Datacenter: "dc1", Health: registry.Unhealthy, ServiceHealth: registry.Unhealthy, Weight: 1},
			}},
			{Name: "db", Endpoints: []registry.Endpoint{
				{ProxyID: "db-1-sidecar-proxy", ServiceID: "db-1", Node: "node-a", Address: "10.0.0.1", Port: 21003, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
			}},
		},
		Leaves: []registry.Leaf{leaf("web"), leaf("api"), leaf("db")},
		Roots:  &registry.Roots{TrustDomain: td, Roots: []registry.Root{{ID: "a", CertPEM: "-----BEGIN CERTIFICATE-----\nroot-a\n-----END CERTIFICATE-----"}, {ID: "b", CertPEM: "-----BEGIN CERTIFICATE-----\nroot-b\n-----END CERTIFICATE-----\n"}}},
		Intentions: []registry.Intentions{
			{Destination: "api", Sources: []registry.IntentionSource{
				{Name: "billing", Action: "deny", Precedence: 9},
				{Name: "web", Precedence: 9, Permissions: []registry.IntentionPermission{
					{Action: "allow", HTTP: &registry.IntentionHTTP{PathPrefix: "/public", Methods: []string{"GET"}}},
					{Action: "deny", HTTP: &registry.IntentionHTTP{PathPrefix: "/"}},
				}},
			}},
			{Destination: "db", Sources: []registry.IntentionSource{
				{Name: "web", Precedence: 9, Permissions: []registry.IntentionPermission{{Action: "allow", HTTP: &registry.IntentionHTTP{PathPrefix: "/"}}}},
			}},
			{Destination: "*", Sources: []registry.IntentionSource{{Name: "*", Action: "allow", Precedence: 5}}},
		},
		IntentionDefault: "deny",
	})
}

// TestMeshGolden translates meshFixture and compares the IR with
// testdata/mesh.ir.yaml and the warnings with testdata/mesh.diagnostics.txt.
func TestMeshGolden(t *testing.T) {
	g := golden.New(t, *update, "testdata/mesh.*")
	snap := meshFixture()
	// Policy for sidecars' calls: api's (http) applies, db's (tcp) cannot;
	// every sidecar logs and traces as the Mesh document says.
	set, diags := policy.Parse(map[string][]byte{"services.yaml": []byte(`apiVersion: switchyard.io/v1
kind: Service
name: api
mesh:
  timeout: 2s
  retries: { attempts: 2, on: [5xx] }
  split:
    - { service: api, weight: 90 }
    - { service: web, weight: 10 }
---
apiVersion: switchyard.io/v1
kind: Service
name: db
mesh: { timeout: 1s }
---
apiVersion: switchyard.io/v1
kind: Mesh
accessLog: { path: /var/log/envoy/access.log, format: text }
tracing: { address: 10.0.0.9:4317, sampling: 10 }
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	res := TranslateMesh(snap, set)
	if err := res.Mesh.Validate(); err != nil {
		t.Errorf("invalid mesh IR: %v", err)
	}
	for i := range res.Sidecars {
		if err := res.Mesh.ValidateSidecar(&res.Sidecars[i]); err != nil {
			t.Errorf("invalid sidecar IR: %v", err)
		}
	}
	got, err := yaml.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "secret-") {
		t.Error("a leaf key is in the IR's YAML; keys must marshal redacted")
	}
	g.Compare(t, "testdata/mesh.ir.yaml", got)
	var lines []string
	for _, d := range res.Diagnostics {
		lines = append(lines, d.String())
	}
	g.Compare(t, "testdata/mesh.diagnostics.txt", []byte(strings.Join(lines, "\n")+"\n"))
	again, _ := yaml.Marshal(TranslateMesh(snap, set))
	if string(again) != string(got) {
		t.Error("mesh translation is not deterministic")
	}
}

// One sidecar's bad upstream costs that upstream only: the sidecar and
// every other sidecar are still served, and the mesh stays valid.
func TestMeshBadUpstreamIsDropped(t *testing.T) {
	base := meshFixture()
	var data registry.MeshData
	for _, id := range base.SidecarIDs() {
		sc, _ := base.Sidecar(id)
		if sc.Service == "web" {
			sc.Upstreams = append(sc.Upstreams, registry.Upstream{DestinationType: "service", DestinationName: "bad name", LocalBindPort: 9199})
		}
		data.Sidecars = append(data.Sidecars, sc)
	}
	for _, name := range base.DestinationNames() {
		d, _ := base.Destination(name)
		data.Destinations = append(data.Destinations, d)
	}
	for _, svc := range base.LeafServices() {
		l, _ := base.Leaf(svc)
		data.Leaves = append(data.Leaves, l)
	}
	roots, _ := base.Roots()
	data.Roots = &roots
	res := TranslateMesh(registry.NewMeshSnapshot(data), nil)
	if err := res.Mesh.Validate(); err != nil {
		t.Fatalf("the mesh is invalid after a bad upstream: %v", err)
	}
	if len(res.Sidecars) != 4 {
		t.Errorf("%d sidecars served; want 4 (every one with a leaf)", len(res.Sidecars))
	}
	found := false
	for _, d := range res.Diagnostics {
		found = found || strings.Contains(d.Message, `upstream "bad name"`)
	}
	if !found {
		t.Errorf("no warning names the bad upstream: %v", res.Diagnostics)
	}
}

// Without a Mesh document every sidecar logs JSON to stdout and does not
// trace; the document's settings reach every sidecar, spans named after
// each sidecar's service unless it names them, except tracing for a
// sidecar whose listeners all proxy TCP (no HTTP, no spans: db's).
func TestMeshObservability(t *testing.T) {
	snap := meshFixture()
	for _, s := range TranslateMesh(snap, nil).Sidecars {
		if a := s.AccessLog; a == nil || a.Path != "stdout" || a.Format != "json" || s.Tracing != nil || s.TracingCluster != nil {
			t.Errorf("%s without a Mesh document: access log %+v, tracing %+v; want JSON on stdout, no tracing", s.ProxyID, a, s.Tracing)
		}
	}
	set, diags := policy.Parse(map[string][]byte{"mesh.yaml": []byte("apiVersion: switchyard.io/v1\nkind: Mesh\naccessLog: { enabled: false }\ntracing: { address: otel.example.com:4317, serviceName: shop }\n")})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	res := TranslateMesh(snap, set)
	if len(res.Sidecars) == 0 {
		t.Fatal("no sidecar served")
	}
	tcpOnly := 0
	for _, s := range res.Sidecars {
		if s.AccessLog != nil {
			t.Errorf("%s: access log %+v; want none (enabled: false)", s.ProxyID, s.AccessLog)
		}
		http := s.Protocol.IsHTTP() || slices.ContainsFunc(s.Upstreams, func(u ir.Upstream) bool { return u.Protocol.IsHTTP() })
		if !http {
			tcpOnly++
			if s.Tracing != nil || s.TracingCluster != nil {
				t.Errorf("%s proxies TCP alone: tracing %+v to %+v; want none", s.ProxyID, s.Tracing, s.TracingCluster)
			}
			continue
		}
		if tr, c := s.Tracing, s.TracingCluster; tr == nil || tr.ServiceName != "shop" || tr.Sampling != 100 || c == nil || !c.DNS || c.Endpoints[0].Address != "otel.example.com" {
			t.Errorf("%s: tracing %+v to %+v; want service shop, 100%%, the collector by DNS name", s.ProxyID, tr, c)
		}
	}
	if tcpOnly == 0 || tcpOnly == len(res.Sidecars) {
		t.Errorf("%d of %d sidecars proxy TCP alone; the fixture should have both kinds", tcpOnly, len(res.Sidecars))
	}
}

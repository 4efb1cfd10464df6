package translator

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/golden"
)

const edgeMeshTD = "11111111-2222-3333-4444-555555555555.consul"

// edgeMeshFixture is a mesh an edge group routes into: api (two http
// sidecars, one failing its service's check), greeter (a grpc sidecar),
// a leaf for the group identity edge-gateway and one for api (as Consul
// holds one for every service with a sidecar). Group bare has no leaf.
func edgeMeshFixture() *registry.MeshSnapshot {
	sidecar := func(svc, id, proto string, port int) registry.Sidecar {
		return registry.Sidecar{ID: id + "-sidecar-proxy", Name: svc + "-sidecar-proxy", Service: svc, ServiceID: id, Node: "node-a",
			Address: "10.0.0.1", Port: port, Datacenter: "dc1", LocalServicePort: 8080, Protocol: proto, Health: registry.Healthy}
	}
	endpoint := func(id string, port int, h registry.Health) registry.Endpoint {
		return registry.Endpoint{ProxyID: id + "-sidecar-proxy", ServiceID: id, Node: "node-a", Address: "10.0.0.1", Port: port, Datacenter: "dc1", Health: h, Weight: 1}
	}
	return registry.NewMeshSnapshot(registry.MeshData{
		Sidecars: []registry.Sidecar{sidecar("api", "api-1", "http", 21001), sidecar("api", "api-2", "http", 21002), sidecar("greeter", "greeter-1", "grpc", 21003)},
		Destinations: []registry.Destination{
			{Name: "api", Endpoints: []registry.Endpoint{endpoint("api-1", 21001, registry.Healthy), endpoint("api-2", 21002, registry.Unhealthy)}},
			{Name: "greeter", Endpoints: []registry.Endpoint{endpoint("greeter-1", 21003, registry.Healthy)}},
		},
		Leaves: []registry.Leaf{{Service: "edge-gateway", SPIFFE: "spiffe://" + edgeMeshTD + "/ns/default/dc/dc1/svc/edge-gateway",
			CertPEM: "-----BEGIN CERTIFICATE-----\nedge-gateway\n-----END CERTIFICATE-----\n",
			KeyPEM:  registry.KeyPEM("-----BEGIN EC PRIVATE KEY-----\nsecret-edge-gateway\n-----END EC PRIVATE KEY-----\n")},
			{Service: "api", SPIFFE: "spiffe://" + edgeMeshTD + "/ns/default/dc/dc1/svc/api",
				CertPEM: "-----BEGIN CERTIFICATE-----\napi\n-----END CERTIFICATE-----\n",
				KeyPEM:  registry.KeyPEM("-----BEGIN EC PRIVATE KEY-----\nsecret-api\n-----END EC PRIVATE KEY-----\n")}},
		Roots: &registry.Roots{TrustDomain: edgeMeshTD, Roots: []registry.Root{{ID: "a", CertPEM: "-----BEGIN CERTIFICATE-----\nroot-a\n-----END CERTIFICATE-----\n"}}},
	})
}

const edgeMeshPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /api }
            service: api
            mesh: true
            timeout: 2s
          - match: { pathPrefix: /greet }
            service: greeter
            mesh: true
            websocket: true
          - match: { pathPrefix: /canary }
            mesh: true
            split:
              - { service: api, weight: 90 }
              - { service: billing, weight: 10 }
          - service: web
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: bare
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: api
            mesh: true
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: impostor
mesh: { service: web }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: api
            mesh: true
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: api
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: greeter
            mesh: true
`

// TestEdgeMeshGolden translates two groups with routes through the mesh
// and compares their IR with testdata/edgemesh.ir.yaml and the warnings
// with testdata/edgemesh.diagnostics.txt: edge's mesh routes use api's
// and greeter's sidecars (their SNI clusters, shared by every route) with
// edge-gateway's leaf, its plain route uses web's cluster; bare has no
// leaf yet, so its route answers 503. Groups impostor (identity web, a
// registered service) and api (its name, a service with sidecars, is its
// identity) would present another service's identity: their routes
// answer 503 and they get no leaf.
func TestEdgeMeshGolden(t *testing.T) {
	g := golden.New(t, *update, "testdata/edgemesh.*")
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(edgeMeshPolicy)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	snap := registry.NewSnapshot(registry.Service{Name: "web", Instances: []registry.Instance{
		{ID: "web-1", Node: "node-a", Address: "10.0.0.2", Port: 8080, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
	}})
	res := TranslateWith(snap, set, edgeMeshFixture())
	for _, cfg := range res.Configs {
		if err := cfg.Validate(); err != nil {
			t.Errorf("group %s: invalid IR: %v", cfg.Group, err)
		}
	}
	got, err := yaml.Marshal(res.Configs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "secret-") {
		t.Error("the group's leaf key is in the IR's YAML; keys must marshal redacted")
	}
	g.Compare(t, "testdata/edgemesh.ir.yaml", got)
	var lines []string
	for _, d := range append(diags, res.Diagnostics...) {
		lines = append(lines, d.String())
	}
	g.Compare(t, "testdata/edgemesh.diagnostics.txt", []byte(strings.Join(lines, "\n")+"\n"))
	again, _ := yaml.Marshal(TranslateWith(snap, set, edgeMeshFixture()).Configs)
	if string(again) != string(got) {
		t.Error("translation is not deterministic")
	}

	for _, group := range []string{"impostor", "api"} {
		if cfg, _ := res.Config(group); cfg.Mesh != nil || len(cfg.Secrets) > 0 {
			t.Errorf("group %s presents a mesh identity that is a Consul service: %+v", group, cfg.Mesh)
		}
	}

	// What the watchers are told: mesh destinations and identities, and
	// for the catalog the plain route's service and the identities (to
	// know whether one is a registered service).
	if got, want := Services(set), []string{"api", "bare", "edge-gateway", "web"}; !slices.Equal(got, want) {
		t.Errorf("Services = %v; want %v", got, want)
	}
	if got, want := MeshDestinations(set), []string{"api", "billing", "greeter"}; !slices.Equal(got, want) {
		t.Errorf("MeshDestinations = %v; want %v", got, want)
	}
	if got, want := MeshIdentities(set), []string{"api", "bare", "edge-gateway", "web"}; !slices.Equal(got, want) {
		t.Errorf("MeshIdentities = %v; want %v", got, want)
	}
}

// Without a view of the mesh (switchyard translate reads no Consul) a
// route through the mesh answers 503 and says why: not that the CA has no
// roots, which nobody asked.
func TestEdgeMeshWithoutMeshView(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(edgeMeshPolicy)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	res := Translate(registry.NewSnapshot(), set)
	cfg, _ := res.Config("edge")
	r := cfg.Listeners[0].VirtualHosts[0].Routes[0]
	if want := "translated without Consul's view of the Connect mesh, so without the group's leaf certificate"; r.Unavailable != want {
		t.Errorf("route through the mesh without the mesh: unavailable %q; want %q", r.Unavailable, want)
	}
	for _, d := range res.Diagnostics {
		if strings.Contains(d.Message, "no roots") {
			t.Errorf("warning %q; want none about the CA", d)
		}
	}
}

// A leaf whose SPIFFE ID names another service than the group's identity
// (or another trust domain) is not presented: the group's routes through
// the mesh answer 503 with a warning naming the ID.
func TestEdgeMeshLeafOfAnotherService(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(edgeMeshPolicy)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	for _, id := range []string{
		"spiffe://" + edgeMeshTD + "/ns/default/dc/dc1/svc/api",
		"spiffe://" + edgeMeshTD + "/ns/default/dc/dc1/svc/edge-gateway/extra",
		"spiffe://other.consul/ns/default/dc/dc1/svc/edge-gateway",
	} {
		mesh := edgeMeshFixture()
		d := registry.MeshData{Roots: &registry.Roots{}}
		r, _ := mesh.Roots()
		*d.Roots = r
		for _, name := range mesh.LeafServices() {
			l, _ := mesh.Leaf(name)
			if name == "edge-gateway" {
				l.SPIFFE = id
			}
			d.Leaves = append(d.Leaves, l)
		}
		res := TranslateWith(registry.NewSnapshot(), set, registry.NewMeshSnapshot(d))
		cfg, _ := res.Config("edge")
		if cfg.Mesh != nil {
			t.Errorf("leaf with SPIFFE ID %s: the group presents it; want it refused", id)
		}
		want := fmt.Sprintf(`edge.yaml:4: warning: proxy group "edge": the leaf certificate of "edge-gateway" has SPIFFE ID %q`, id)
		found := false
		for _, diag := range res.Diagnostics {
			found = found || strings.HasPrefix(diag.String(), want)
		}
		if !found {
			t.Errorf("leaf with SPIFFE ID %s: warnings %v; want one starting %q", id, res.Diagnostics, want)
		}
	}
}

// A Consul service literally named like the SNI of a mesh cluster of the
// group, routed to directly, does not become a second cluster of that
// name: its route answers 503, with a warning at its line, and the route
// through the mesh keeps its cluster.
func TestEdgeMeshClusterNameClash(t *testing.T) {
	sni := "api.default.dc1.internal." + edgeMeshTD
	doc := strings.Replace(edgeMeshPolicy, "          - service: web\n", "          - { match: { pathPrefix: /odd }, service: "+sni+" }\n          - service: web\n", 1)
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(doc)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	snap := registry.NewSnapshot(registry.Service{Name: sni, Instances: []registry.Instance{
		{ID: "odd-1", Node: "node-a", Address: "10.0.0.9", Port: 8080, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
	}})
	res := TranslateWith(snap, set, edgeMeshFixture())
	cfg, _ := res.Config("edge")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid IR: %v", err)
	}
	for _, c := range cfg.Clusters {
		if c.Service == sni {
			t.Errorf("a direct cluster named %s beside the mesh cluster", sni)
		}
	}
	odd := cfg.Listeners[0].VirtualHosts[0].Routes[3]
	if odd.Match.PathPrefix != "/odd" || odd.Unavailable == "" {
		t.Errorf("the direct route to %s: %+v; want it unavailable", sni, odd)
	}
	want := fmt.Sprintf(`edge.yaml:24: warning: service %q is named like the mesh cluster of a route through the mesh`, sni)
	found := false
	for _, d := range res.Diagnostics {
		found = found || strings.HasPrefix(d.String(), want)
	}
	if !found {
		t.Errorf("warnings %v; want one starting %q", res.Diagnostics, want)
	}
}

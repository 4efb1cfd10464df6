package controlplane

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
)

// A new policy with a route through the mesh waits for what that route
// needs: the group identity's leaf and the destination's sidecars.
func TestMeshUncovered(t *testing.T) {
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - { match: { pathPrefix: /api }, service: api, mesh: true }
          - service: web
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	want := []string{"edge-gateway (leaf certificate)", "api (sidecars)"}
	if got := meshUncovered(nil, set); !slices.Equal(got, want) {
		t.Errorf("before the mesh's first sync: %v; want %v", got, want)
	}
	mesh := registry.NewMeshSnapshot(registry.MeshData{
		Leaves:       []registry.Leaf{{Service: "edge-gateway"}},
		Destinations: []registry.Destination{{Name: "api"}}, // answered, with no sidecar yet
	})
	if got := meshUncovered(mesh, set); len(got) != 0 {
		t.Errorf("with the leaf and api's answer: %v; want nothing", got)
	}
}

// Before the mesh's first sync (a Switchyard start or restart), a group
// routing through the mesh is not published: its Envoys keep what they
// run, rather than get routes answering 503 because an input is missing.
// Other groups are published; /readyz waits for the mesh. Once the mesh
// syncs the group is published with its routes through the mesh.
func TestMeshGroupsWaitForTheMeshFirstSync(t *testing.T) {
	s, logs := newMeshServer(t)
	set, diags := policy.Parse(map[string][]byte{"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - { match: { pathPrefix: /api }, service: api, mesh: true }
          - service: web
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: plain
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	s.in.policy, s.in.consul = set, webSnapshot(registry.Healthy)
	s.rebuild()
	if _, err := s.cache.GetSnapshot("plain"); err != nil {
		t.Errorf("group plain, which does not use the mesh, is not published before the mesh's sync: %v", err)
	}
	if _, err := s.cache.GetSnapshot("edge"); err == nil {
		t.Error("group edge is published before the mesh's first sync; its routes through the mesh would answer 503")
	}
	if rec := adminGet(s, "/readyz"); rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "mesh") {
		t.Errorf("/readyz before the mesh's sync: %d %q; want 503 naming the mesh", rec.Code, rec.Body.String())
	}

	d := meshData(t, registry.Healthy, true, "api")
	edge := d.Leaves[1] // api's; only its name and SPIFFE ID matter here
	edge.Service, edge.SPIFFE = "edge-gateway", "spiffe://"+d.Roots.TrustDomain+"/ns/default/dc/dc1/svc/edge-gateway"
	d.Leaves = append(d.Leaves, edge)
	s.in.setMesh(registry.NewMeshSnapshot(d))
	s.rebuild()
	gs, _ := s.pub.group("edge")
	if gs == nil {
		t.Fatalf("group edge not published after the mesh's sync; log:\n%s", logs)
	}
	if secrets := gs.resources[resource.SecretType]; len(secrets) != 2 {
		t.Errorf("group edge after the mesh's sync has %d secrets; want its mesh leaf and roots", len(secrets))
	}
	if rec := adminGet(s, "/readyz"); rec.Code != http.StatusOK {
		t.Errorf("/readyz after the mesh's sync: %d %q; want 200", rec.Code, rec.Body.String())
	}
}

// serve's mesh.edge-identities reaches the policy watcher: a policy whose
// group routes through the mesh with another identity is refused, with
// the error naming its line, as validate --mesh-edge-identities does.
func TestEdgeIdentitiesRefusePolicy(t *testing.T) {
	dir := t.TempDir()
	file := testenv.WriteFile(t, dir, "edge.yaml", []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - { service: api, mesh: true }
`))
	logs := &testenv.SyncBuffer{}
	s, err := New(Config{PolicyPaths: []string{dir}, Mesh: true, EdgeIdentities: []string{"partner-gateway"}}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.watchPolicy(ctx) }()
	defer func() { cancel(); <-done }()
	want := file + `:4: proxy group \"edge\": mesh identity \"edge-gateway\" is not one the operator allows edge groups`
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no error naming the line within 30s; log:\n%s", logs)
		}
	}
	if _, latest := s.in.policies(); latest != nil {
		t.Error("the policy with a disallowed identity was accepted")
	}
}

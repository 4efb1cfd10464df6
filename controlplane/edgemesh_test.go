package controlplane

import (
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
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

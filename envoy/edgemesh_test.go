package envoy

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// An edge group's mesh clusters name the policy line of their first route
// (a NACK of one points there), and its mesh leaf shows redacted.
func TestEdgeMeshSourcesAndRedaction(t *testing.T) {
	b, err := os.ReadFile("testdata/edgemesh.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg ir.Config
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var bld Builder
	res, _, err := bld.Build(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	sni := cfg.Mesh.Clusters[0].SNI
	for _, typ := range []resource.Type{resource.ClusterType, resource.EndpointType} {
		if got := bld.Sources()[typ][MeshClusterName(sni)]; got != "edge.yaml:11" {
			t.Errorf("%s %s: source %q; want edge.yaml:11", shortType(typ), sni, got)
		}
	}
	y, err := RenderYAML(RedactAll(resource.SecretType, res[resource.SecretType]))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(y), "EDGE-GATEWAY-LEAF-KEY") || !strings.Contains(string(y), MeshLeafSecretName) {
		t.Errorf("redacted secrets show the leaf key, or lack the leaf:\n%s", y)
	}
}

// A group's mesh secrets carry their Envoy names (mesh.leaf, mesh.roots)
// for the build's error messages, as every other resource does.
func TestEdgeMeshSecretNamesInErrors(t *testing.T) {
	b, err := os.ReadFile("testdata/edgemesh.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg ir.Config
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	node := func(_ string, _ any, mk func() ([]typedResource, error)) ([]typedResource, error) { return mk() }
	var got []string
	err = buildGroupMesh(cfg.Mesh, node, func(list []typedResource) error {
		for _, tr := range list {
			if tr.typ == resource.SecretType {
				got = append(got, tr.name)
			}
		}
		return nil
	})
	if want := []string{MeshLeafSecretName, MeshRootsSecretName}; err != nil || !slices.Equal(got, want) {
		t.Errorf("the mesh secrets' names for errors: %q, %v; want %q", got, err, want)
	}
}

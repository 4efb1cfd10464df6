package envoy

import (
	"os"
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

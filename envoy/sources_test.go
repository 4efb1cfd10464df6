package envoy

import (
	"os"
	"testing"

	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Every resource Build makes has a source, and it is the one of the IR node
// it was built from: a NACK of any of them can name a policy line.
func TestSourcesCoverEveryResource(t *testing.T) {
	b, err := os.ReadFile("testdata/edge.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg ir.Config
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // resource name -> source set below
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		l.Source = "edge.yaml:listener-" + l.Name
		want[ListenerName(l.Name)] = l.Source
		want[RouteConfigName(l.Name)] = l.Source
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		c.Source = "edge.yaml:route-to-" + c.Service
		want[ClusterName(c.Service)] = c.Source
	}
	for i := range cfg.Secrets {
		s := &cfg.Secrets[i]
		s.Source = "certs.yaml:" + s.Name
		want[SecretName(s.Name)] = s.Source
		if s.CAPEM != "" {
			want[CASecretName(s.Name)] = s.Source
		}
	}
	res, err := Build(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	sources := Sources(&cfg)
	n := 0
	for _, typ := range Types {
		for _, r := range res[typ] {
			name := cache.GetResourceName(r)
			got, ok := sources[typ][name]
			if !ok || got != want[name] {
				t.Errorf("%s %q: source %q (found %v); want %q", typ, name, got, ok, want[name])
			}
			n++
		}
	}
	if n < 5 {
		t.Fatalf("the fixture built only %d resources; it should exercise every type", n)
	}
}

package translator_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
)

// FuzzPolicyToEnvoy feeds arbitrary policy files through the whole pipeline.
// Whatever the input, parsing does not panic and every finding names the
// file; and a policy that passes validation always builds into Envoy
// resources that pass ValidateAll. A policy that validates but fails to
// build would be rejected only at run time ("snapshot build failed"), an
// error the operator could not trace to a line.
//
// `go test` runs the seeds (every policy file in the repository); run
// `go test ./translator -run '^$' -fuzz FuzzPolicyToEnvoy` to search.
func FuzzPolicyToEnvoy(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{"testdata/*/policy/*.yaml", "../policy/testdata/bad/*.yaml", "../examples/quickstart/policies/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, m...)
	}
	if len(seeds) < 10 {
		f.Fatalf("found %d seed policies; the globs are stale", len(seeds))
	}
	for _, path := range seeds {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		set, diags := policy.Parse(map[string][]byte{"fuzz.yaml": doc})
		for _, d := range diags {
			if !strings.HasPrefix(d.Pos.File, "fuzz.yaml") && !strings.HasPrefix(d.Pos.File, ".") && !filepath.IsAbs(d.Pos.File) {
				t.Errorf("finding %q does not name the file", d.String())
			}
		}
		if diags.HasErrors() {
			if set != nil {
				t.Fatal("a set came back with errors")
			}
			return
		}
		if set == nil {
			t.Fatal("no set and no error")
		}
		// Consul knows every routed service: two instances, one by IP and
		// one by host name, so both cluster kinds are built.
		var svcs []registry.Service
		for _, name := range translator.Services(set) {
			svcs = append(svcs, registry.Service{Name: name, Instances: []registry.Instance{
				{ID: name + "-1", Node: "n1", Address: "10.0.0.1", Port: 8080, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
				{ID: name + "-2", Node: "n2", Address: "host.example.com", Port: 8080, Datacenter: "dc1", Health: registry.Unhealthy, Weight: 3},
			}})
		}
		res := translator.Translate(registry.NewSnapshot(svcs...), set)
		for _, cfg := range res.Configs {
			if _, err := envoy.Build(cfg); err != nil {
				t.Fatalf("a policy that validates does not build: %v\npolicy:\n%s", err, doc)
			}
		}
	})
}

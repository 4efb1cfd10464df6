package translator

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/golden"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

var update = flag.Bool("update", false, "update golden files")

func loadConsulFixture(t *testing.T, path string) *registry.Snapshot {
	t.Helper()
	return translatortest.ConsulFixture(t, path)
}

// TestGolden translates testdata/<case>/{consul.yaml,policy/} and compares
// the IR of every group with <case>/ir.yaml and the diagnostics with
// <case>/diagnostics.txt. `make golden` regenerates them. A file in a case
// directory that the test did not read fails it.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/consul.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases in testdata: %v", err)
	}
	// Every file directly in a case directory is its input or an output
	// compared here; policy/ and certs/ are read through the policy.
	g := golden.New(t, *update, "testdata/*/*")
	for _, consulFile := range cases {
		dir := filepath.Dir(consulFile)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			g.Read(consulFile)
			snap := loadConsulFixture(t, consulFile)
			set, diags := policy.Load(filepath.Join(dir, "policy"))
			if diags.HasErrors() {
				t.Fatalf("policy errors:\n%v", diags.Err())
			}
			res := Translate(snap, set)
			for _, cfg := range res.Configs {
				if err := cfg.Validate(); err != nil {
					t.Errorf("group %s: invalid IR: %v", cfg.Group, err)
				}
			}
			got, err := yaml.Marshal(res.Configs)
			if err != nil {
				t.Fatal(err)
			}
			g.Compare(t, filepath.Join(dir, "ir.yaml"), got)
			var lines []string
			for _, d := range append(diags, res.Diagnostics...) {
				lines = append(lines, d.String())
			}
			g.Compare(t, filepath.Join(dir, "diagnostics.txt"), []byte(strings.Join(lines, "\n")+"\n"))

			// Deterministic: a second translation gives the same bytes.
			again, _ := yaml.Marshal(Translate(snap, set).Configs)
			if string(again) != string(got) {
				t.Errorf("translation is not deterministic (-first +second):\n%s", cmp.Diff(string(got), string(again)))
			}
		})
	}
}

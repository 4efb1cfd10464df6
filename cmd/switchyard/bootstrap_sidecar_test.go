package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// A Connect sidecar's bootstrap: node.id is its proxy service ID (Consul's
// default, or --node-id), node.cluster the sidecar marker, and real Envoy
// accepts it. --group and --sidecar-for exclude each other.
func TestBootstrapSidecarFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		wantID string
	}{
		{"default proxy id", []string{"--sidecar-for", "web-1"}, "id: web-1-sidecar-proxy"},
		{"own proxy id", []string{"--sidecar-for", "web-1", "--node-id", "web-1-proxy"}, "id: web-1-proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := run(t, append([]string{"bootstrap"}, tc.args...)...)
			if err != nil {
				t.Fatalf("bootstrap: %v\n%s", err, stderr)
			}
			for _, want := range []string{tc.wantID, "cluster: sidecar.mesh"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("bootstrap lacks %q:\n%s", want, stdout)
				}
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(testenv.Bin(t, "envoy"), "--mode", "validate", "-c", path, "--use-dynamic-base-id").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate: %v\n%s", err, out)
			}
		})
	}
	for _, bad := range [][]string{
		{"--sidecar-for", "web-1", "--group", "edge"},
		{"--node-id", "edge-1"},
	} {
		_, _, err := run(t, append([]string{"bootstrap"}, bad...)...)
		if err == nil || !strings.Contains(err.Error(), "--sidecar-for") || !strings.Contains(err.Error(), "--group") {
			t.Errorf("bootstrap %v: got %v; want an error naming --sidecar-for and --group", bad, err)
		}
	}
}

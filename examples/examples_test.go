// Package examples holds runnable setups; this test keeps them true to what
// the rest of the project proves, since the docker compose example cannot
// run in CI (no container engine there).
package examples

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// Every example's policies must pass the same validation as `switchyard
// validate` with no errors.
func TestExamplePoliciesValidate(t *testing.T) {
	dirs, err := filepath.Glob("*/policies")
	if err != nil || len(dirs) < 2 {
		t.Fatalf("got policy dirs %v (%v); want quickstart and docker-compose", dirs, err)
	}
	for _, dir := range dirs {
		set, diags := policy.Load(dir)
		if diags.HasErrors() || set == nil || len(set.Groups) == 0 {
			t.Errorf("%s: %v", dir, diags.Err())
		}
	}
}

// The compose example runs the versions hack/tools.sh installs for the
// tests, and registers instances by IP address (Envoy's EDS takes no host
// names) that match the containers' fixed addresses.
func TestDockerComposeMatchesTestedSetup(t *testing.T) {
	compose := read(t, "docker-compose/docker-compose.yaml")
	tools := read(t, "../hack/tools.sh")
	consul := regexp.MustCompile(`(?m)^CONSUL_VERSION=v(\S+)$`).FindStringSubmatch(tools)
	envoy := regexp.MustCompile(`(?m)^ENVOY_VERSION=(\S+)$`).FindStringSubmatch(tools)
	if consul == nil || envoy == nil {
		t.Fatal("hack/tools.sh no longer pins CONSUL_VERSION and ENVOY_VERSION")
	}
	for _, image := range []string{"hashicorp/consul:" + consul[1], "envoyproxy/envoy:v" + envoy[1]} {
		if !strings.Contains(compose, "image: "+image) {
			t.Errorf("docker-compose.yaml does not run %s, the version the tests prove", image)
		}
	}

	var defs struct {
		Services []struct {
			ID, Name, Address string
			Port              int
		}
	}
	if err := json.Unmarshal([]byte(read(t, "docker-compose/consul/services.json")), &defs); err != nil {
		t.Fatal(err)
	}
	if len(defs.Services) == 0 {
		t.Fatal("no services registered in docker-compose/consul/services.json")
	}
	for _, s := range defs.Services {
		if net.ParseIP(s.Address) == nil {
			t.Errorf("service %s: address %q is not an IP address", s.ID, s.Address)
		}
		if !strings.Contains(compose, "ipv4_address: "+s.Address+" }") || !strings.Contains(compose, `"-name", "`+s.ID+`"`) {
			t.Errorf("service %s at %s has no matching container in docker-compose.yaml", s.ID, s.Address)
		}
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

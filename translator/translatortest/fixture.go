package translatortest

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/registry"
)

// consulFixture is a registry snapshot written by hand: translator's
// testdata/<case>/consul.yaml.
type consulFixture struct {
	Services []struct {
		Name      string `json:"name"`
		Instances []struct {
			ID         string            `json:"id"`
			Node       string            `json:"node"`
			Address    string            `json:"address"`
			Port       int               `json:"port"`
			Tags       []string          `json:"tags"`
			Meta       map[string]string `json:"meta"`
			Datacenter string            `json:"datacenter"`
			Health     string            `json:"health"`
			Weight     int               `json:"weight"`
		} `json:"instances"`
	} `json:"services"`
}

// ConsulFixture reads a registry snapshot written by hand, such as the
// golden cases' testdata/<case>/consul.yaml.
func ConsulFixture(t testing.TB, path string) *registry.Snapshot {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f consulFixture
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var services []registry.Service
	for _, s := range f.Services {
		svc := registry.Service{Name: s.Name}
		for _, i := range s.Instances {
			h := map[string]registry.Health{"": registry.Healthy, "healthy": registry.Healthy,
				"unhealthy": registry.Unhealthy, "draining": registry.Draining}
			health, ok := h[i.Health]
			if !ok {
				t.Fatalf("%s: instance %s: unknown health %q", path, i.ID, i.Health)
			}
			svc.Instances = append(svc.Instances, registry.Instance{
				ID: i.ID, Node: i.Node, Address: i.Address, Port: i.Port, Tags: i.Tags,
				Meta: i.Meta, Datacenter: i.Datacenter, Health: health, Weight: i.Weight,
			})
		}
		services = append(services, svc)
	}
	return registry.NewSnapshot(services...)
}

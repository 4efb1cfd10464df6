// Package translatortest builds large, realistic translator inputs for
// benchmarks, shared by every package that measures the pipeline.
package translatortest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// Estate is services services with instances instances each (one in ten
// critical), and an edge group routing a path prefix to every service with
// a timeout.
func Estate(tb testing.TB, services, instances int) (*registry.Snapshot, *policy.Set) {
	tb.Helper()
	svcs := make([]registry.Service, 0, services)
	var routes strings.Builder
	for s := range services {
		name := fmt.Sprintf("svc-%04d", s)
		svc := registry.Service{Name: name}
		for i := range instances {
			h := registry.Healthy
			if i%10 == 9 {
				h = registry.Unhealthy
			}
			svc.Instances = append(svc.Instances, registry.Instance{
				ID: fmt.Sprintf("%s-%d", name, i), Node: fmt.Sprintf("node-%d", i),
				Address: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1), Port: 8080,
				Tags: []string{"v1"}, Datacenter: "dc1", Health: h, Weight: 1,
			})
		}
		svcs = append(svcs, svc)
		fmt.Fprintf(&routes, "          - name: r%d\n            match: { pathPrefix: /%s }\n            service: %s\n            timeout: 2s\n", s, name, name)
	}
	doc := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 10000
    hosts:
      - domains: ["*"]
        routes:
` + routes.String()
	set, diags := policy.Parse(map[string][]byte{"estate.yaml": []byte(doc)})
	if diags.HasErrors() {
		tb.Fatalf("estate policy: %v", diags.Err())
	}
	return registry.NewSnapshot(svcs...), set
}

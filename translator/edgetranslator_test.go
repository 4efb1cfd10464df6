package translator

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// edgePolicy is a policy set with two groups routing to web (whole, a
// tagged subset and the rest of it), api and ghost, and Service policies
// from services (a YAML document each, may be empty).
func edgePolicy(t *testing.T, extraRoute bool, services string) *policy.Set {
	t.Helper()
	routes := `
          - name: canary
            match: { pathPrefix: /shop }
            split:
              - { service: web, tags: [v2], weight: 5 }
              - { service: web, weight: 95 }
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: ghost
            match: { pathPrefix: /ghost }
            service: ghost
`
	if extraRoute {
		routes += `
          - name: eu
            match: { pathPrefix: /eu }
            service: web
            tags: [eu]
`
	}
	files := map[string][]byte{
		"edge.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 10000
    hosts:
      - domains: ["*"]
        routes:` + routes + `          - service: web
`),
		"inner.yaml": []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: inner
listeners:
  - name: http
    port: 10001
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /api }
            service: api
          - service: web
            tags: [v2]
`),
	}
	if services != "" {
		files["services.yaml"] = []byte(services)
	}
	set, diags := policy.Parse(files)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	return set
}

func inst(svc string, i int, tags ...string) registry.Instance {
	return registry.Instance{ID: fmt.Sprintf("%s-%d", svc, i), Node: fmt.Sprintf("n%d", i), Address: fmt.Sprintf("10.0.%d.%d", len(svc), i),
		Port: 8080, Tags: tags, Datacenter: "dc1", Health: registry.Healthy, Weight: 1}
}

// An EdgeTranslator must give exactly what a fresh translation gives, IR
// and diagnostics, through a sequence of changes: health flips (the next
// snapshot sharing every other service, as the Watcher's does), instances
// added and removed, a service registered and deregistered, odd Consul data
// that warns, and policy edits.
func TestEdgeTranslatorMatchesFreshTranslation(t *testing.T) {
	web := registry.Service{Name: "web", Instances: []registry.Instance{inst("web", 1, "v1"), inst("web", 2, "v2"), inst("web", 3, "v2")}}
	api := registry.Service{Name: "api", Instances: []registry.Instance{inst("api", 1), inst("api", 2)}}
	plain := edgePolicy(t, false, "")
	snap := registry.NewSnapshot(web, api)
	set := plain
	type step struct {
		name   string
		change func()
	}
	with := func(svc registry.Service) { snap = snap.WithService(svc) }
	flip := func(svc registry.Service, i int, h registry.Health) registry.Service {
		svc.Instances = slices.Clone(svc.Instances)
		svc.Instances[i].Health = h
		return svc
	}
	steps := []step{
		{"start", func() {}},
		{"same inputs again", func() {}},
		{"web-2 critical", func() { web = flip(web, 1, registry.Unhealthy); with(web) }},
		{"web-2 passing", func() { web = flip(web, 1, registry.Healthy); with(web) }},
		{"api-1 in maintenance", func() { api = flip(api, 0, registry.Draining); with(api) }},
		{"web-4 added", func() {
			web.Instances = append(slices.Clone(web.Instances), inst("web", 4, "v2", "eu"))
			with(web)
		}},
		{"ghost registered", func() { with(registry.Service{Name: "ghost", Instances: []registry.Instance{inst("ghost", 1)}}) }},
		{"ghost with no usable address", func() {
			bad := inst("ghost", 1)
			bad.Address = "not an address"
			with(registry.Service{Name: "ghost", Instances: []registry.Instance{bad, inst("ghost", 2)}})
		}},
		{"api-2 removed", func() { api.Instances = api.Instances[:1]; with(api) }},
		{"route to the eu subset added", func() { set = edgePolicy(t, true, "") }},
		{"web-1 critical after the edit", func() { web = flip(web, 0, registry.Unhealthy); with(web) }},
		{"api gets a Service policy", func() {
			set = edgePolicy(t, true, "apiVersion: switchyard.io/v1\nkind: Service\nname: api\nprotocol: http2\nconnectTimeout: 500ms\n")
		}},
		{"api's Service policy edited", func() {
			set = edgePolicy(t, true, "apiVersion: switchyard.io/v1\nkind: Service\nname: api\nprotocol: http2\nconnectTimeout: 750ms\n")
		}},
		{"the same policy, parsed again", func() {
			set = edgePolicy(t, true, "apiVersion: switchyard.io/v1\nkind: Service\nname: api\nprotocol: http2\nconnectTimeout: 750ms\n")
		}},
		{"instances disagree on protocol", func() {
			a, b := inst("web", 1, "v1"), inst("web", 2, "v2")
			a.Meta, b.Meta = map[string]string{"protocol": "http2"}, map[string]string{"protocol": "http"}
			web = registry.Service{Name: "web", Instances: []registry.Instance{a, b}}
			with(web)
		}},
		{"ghost deregistered", func() {
			snap = registry.NewSnapshot(web, api) // every service new, equal ones included
		}},
		{"the Service policy removed", func() { set = plain }},
		{"api-1 passing", func() { api = flip(api, 0, registry.Healthy); with(api) }},
	}
	var tr EdgeTranslator
	for i, s := range steps {
		s.change()
		got := tr.Translate(snap, set, nil)
		want := TranslateWith(snap, set, nil)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("step %d (%s): the incremental translation differs from a fresh one", i, s.name)
		}
		gotYAML, err := yaml.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		wantYAML, _ := yaml.Marshal(want)
		if !bytes.Equal(gotYAML, wantYAML) {
			t.Errorf("step %d (%s): incremental:\n%s\nfresh:\n%s", i, s.name, gotYAML, wantYAML)
		}
	}
	// The fixture exercises what it claims: warnings come and go.
	if d := TranslateWith(registry.NewSnapshot(web, api), plain, nil).Diagnostics; len(d) == 0 {
		t.Errorf("no warnings in the last state; the fixture should warn about ghost and web's protocol")
	}
}

// A health flip translates the flipped service's clusters again and reuses
// every other cluster as it was: the same endpoints, not a copy.
func TestEdgeTranslatorReusesUnchangedClusters(t *testing.T) {
	web := registry.Service{Name: "web", Instances: []registry.Instance{inst("web", 1, "v1"), inst("web", 2, "v2")}}
	api := registry.Service{Name: "api", Instances: []registry.Instance{inst("api", 1)}}
	snap, set := registry.NewSnapshot(web, api), edgePolicy(t, false, "")
	var tr EdgeTranslator
	first := tr.Translate(snap, set, nil)
	web.Instances = slices.Clone(web.Instances)
	web.Instances[1].Health = registry.Unhealthy
	second := tr.Translate(snap.WithService(web), set, nil)
	for g := range first.Configs {
		for c, before := range first.Configs[g].Clusters {
			after := second.Configs[g].Clusters[c]
			reused := len(after.Endpoints) > 0 && &after.Endpoints[0] == &before.Endpoints[0]
			if want := after.Service != "web"; reused != want && len(after.Endpoints) > 0 {
				t.Errorf("group %s cluster %s %q: reused %v; want %v", first.Configs[g].Group, after.Service, after.Subset, reused, want)
			}
		}
	}
}

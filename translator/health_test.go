package translator

import (
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// Through every golden case, each instance of each service in turn goes
// critical (its weight changing too), then passing again: whenever
// TranslateHealth takes the change, its result must be Translate's, and
// the clusters it says changed exactly the ones that differ from the last
// result. Changes it cannot take (a DNS cluster, a rate limit service
// read from Consul) fall back to Translate, which the loop then calls.
func TestTranslateHealthMatchesTranslate(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/consul.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases in testdata: %v", err)
	}
	patched, fellBack := 0, 0
	for _, consulFile := range cases {
		dir := filepath.Dir(consulFile)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			snap := loadConsulFixture(t, consulFile)
			set, diags := policy.Load(filepath.Join(dir, "policy"))
			if diags.HasErrors() {
				t.Fatalf("policy errors:\n%v", diags.Err())
			}
			var tr EdgeTranslator
			last := tr.Translate(snap, set, nil)
			if _, _, ok := tr.TranslateHealth(snap, set, nil); !ok {
				t.Errorf("the same snapshot again: not taken as a health change of nothing")
			}
			for _, name := range snap.Names() {
				n, _ := snap.Service(name)
				for i := range n.Instances {
					for _, h := range []registry.Health{registry.Unhealthy, registry.Healthy} {
						svc, _ := snap.Service(name)
						svc.Instances = slices.Clone(svc.Instances)
						svc.Instances[i].Health = h
						svc.Instances[i].Weight = 1 + int(h)*3
						snap = snap.WithService(svc)
						want := TranslateWith(snap, set, nil)
						got, changed, ok := tr.TranslateHealth(snap, set, nil)
						if !ok {
							fellBack++
							last = tr.Translate(snap, set, nil)
							continue
						}
						patched++
						step := name + "/" + svc.Instances[i].ID + " " + h.String()
						sameResult(t, step, want, got)
						for gi, cfg := range got.Configs {
							var differ []int
							for ci := range cfg.Clusters {
								if !reflect.DeepEqual(cfg.Clusters[ci], last.Configs[gi].Clusters[ci]) {
									differ = append(differ, ci)
								}
							}
							if !slices.Equal(differ, changed[cfg.Group]) {
								t.Errorf("%s: group %s: changed %v, but clusters %v differ", step, cfg.Group, changed[cfg.Group], differ)
							}
						}
						last = got
					}
				}
			}
		})
	}
	t.Logf("%d changes patched, %d translated in full", patched, fellBack)
	if patched == 0 || fellBack == 0 {
		t.Errorf("%d changes patched, %d translated in full: the test covers neither path without both", patched, fellBack)
	}
}

func sameResult(t *testing.T, step string, want, got *Result) {
	t.Helper()
	w, err := yaml.Marshal(want.Configs)
	if err != nil {
		t.Fatal(err)
	}
	g, err := yaml.Marshal(got.Configs)
	if err != nil {
		t.Fatal(err)
	}
	if string(w) != string(g) {
		t.Errorf("%s: configs differ from Translate's:\n%s\nwant:\n%s", step, g, w)
	}
	if !reflect.DeepEqual(want.Diagnostics, got.Diagnostics) {
		t.Errorf("%s: diagnostics %v, want %v", step, got.Diagnostics, want.Diagnostics)
	}
}

// Anything but health is translated in full: an instance's port, tags or
// meta, an instance added, another policy set.
func TestTranslateHealthRefusesOtherChanges(t *testing.T) {
	snap := registry.NewSnapshot(
		registry.Service{Name: "web", Instances: []registry.Instance{
			{ID: "web-1", Node: "n1", Address: "10.0.0.1", Port: 8080, Datacenter: "dc1", Weight: 1, Tags: []string{"v1"}},
			{ID: "web-2", Node: "n2", Address: "10.0.0.2", Port: 8080, Datacenter: "dc1", Weight: 1, Tags: []string{"v2"}},
		}},
		registry.Service{Name: "api", Instances: []registry.Instance{{ID: "api-1", Node: "n1", Address: "10.0.0.3", Port: 9090, Datacenter: "dc1", Weight: 1}}},
	)
	set := edgePolicy(t, false, "")
	changes := map[string]func(*registry.Instance){
		"port": func(in *registry.Instance) { in.Port = 8081 },
		"tags": func(in *registry.Instance) { in.Tags = []string{"v2"} },
		"meta": func(in *registry.Instance) { in.Meta = map[string]string{"protocol": "http2"} },
		"node": func(in *registry.Instance) { in.Node = "n3" },
	}
	for what, change := range changes {
		var tr EdgeTranslator
		tr.Translate(snap, set, nil)
		svc, _ := snap.Service("web")
		svc.Instances = slices.Clone(svc.Instances)
		change(&svc.Instances[0])
		if _, _, ok := tr.TranslateHealth(snap.WithService(svc), set, nil); ok {
			t.Errorf("%s changed: taken as a health change", what)
		}
	}
	var tr EdgeTranslator
	tr.Translate(snap, set, nil)
	svc, _ := snap.Service("web")
	svc.Instances = append(slices.Clone(svc.Instances), registry.Instance{ID: "web-3", Node: "n3", Address: "10.0.0.9", Port: 8080, Datacenter: "dc1", Weight: 1})
	if _, _, ok := tr.TranslateHealth(snap.WithService(svc), set, nil); ok {
		t.Errorf("an instance added: taken as a health change")
	}
	if _, _, ok := tr.TranslateHealth(snap, edgePolicy(t, true, ""), nil); ok {
		t.Errorf("another policy set: taken as a health change")
	}
	if _, _, ok := new(EdgeTranslator).TranslateHealth(snap, set, nil); ok {
		t.Errorf("no translation before: taken as a health change")
	}
}

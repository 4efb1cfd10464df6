package controlplane

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// Rebuilding an edge group with the last translation and build at hand
// must give the very versions and bytes a fresh build gives, through a
// sequence of changes: health flips (sharing every other service with the
// snapshot before, as the Watcher does), instances added and removed, a
// service deregistered and policy edits.
func TestEdgeIncrementalMatchesFresh(t *testing.T) {
	snap, set := translatortest.Estate(t, 50, 4)
	_, fewer := translatortest.Estate(t, 40, 4) // the policy routing to 40 of them
	svc := func(name string) registry.Service {
		s, ok := snap.Service(name)
		if !ok {
			t.Fatalf("no service %s", name)
		}
		s.Instances = slices.Clone(s.Instances)
		return s
	}
	health := func(name string, i int, h registry.Health) func() {
		return func() {
			s := svc(name)
			s.Instances[i].Health = h
			snap = snap.WithService(s)
		}
	}
	steps := []struct {
		name   string
		change func()
	}{
		{"start", func() {}},
		{"svc-0010 instance 0 critical", health("svc-0010", 0, registry.Unhealthy)},
		{"svc-0010 instance 0 passing", health("svc-0010", 0, registry.Healthy)},
		{"svc-0011 instance 1 in maintenance", health("svc-0011", 1, registry.Draining)},
		{"svc-0012 instance 3 warning, weight 5", func() {
			s := svc("svc-0012")
			s.Instances[3].Weight = 5
			snap = snap.WithService(s)
		}},
		{"svc-0013 instance 0 moves to port 9090", func() {
			s := svc("svc-0013")
			s.Instances[0].Port = 9090
			snap = snap.WithService(s)
		}},
		{"svc-0013 instance 0 critical", health("svc-0013", 0, registry.Unhealthy)},
		{"svc-0020 gains an instance", func() {
			s := svc("svc-0020")
			s.Instances = append(s.Instances, registry.Instance{ID: "svc-0020-new", Node: "node-9", Address: "10.9.9.9", Port: 8080, Datacenter: "dc1", Weight: 3})
			snap = snap.WithService(s)
		}},
		{"svc-0030 loses an instance", func() {
			s := svc("svc-0030")
			s.Instances = s.Instances[1:]
			snap = snap.WithService(s)
		}},
		{"policy routes to 40 services", func() { set = fewer }},
		{"svc-0005 instance 2 critical", health("svc-0005", 2, registry.Unhealthy)},
		{"policy routes to 50 again", func() { _, set = translatortest.Estate(t, 50, 4) }},
		{"svc-0049 deregistered", func() {
			var all []registry.Service
			for _, name := range snap.Names() {
				if name != "svc-0049" {
					all = append(all, svc(name))
				}
			}
			snap = registry.NewSnapshot(all...) // every service new
		}},
		{"svc-0048 instance 0 critical", health("svc-0048", 0, registry.Unhealthy)},
	}
	var eb edgeBuilder
	var before *groupSnapshot
	for i, s := range steps {
		s.change()
		patches := eb.healthPatches
		got := buildOne(t, &eb, snap, set)
		want := buildOne(t, new(edgeBuilder), snap, set)
		compareGroups(t, want, got)
		if t.Failed() {
			t.Fatalf("step %d (%s): differs from a fresh build", i, s.name)
		}
		// Health alone takes the health path; anything else, or the
		// first build, the full one.
		health := strings.HasSuffix(s.name, "critical") || strings.HasSuffix(s.name, "passing") || strings.HasSuffix(s.name, "maintenance") || strings.HasSuffix(s.name, "weight 5")
		if (eb.healthPatches > patches) != health {
			t.Errorf("step %d (%s): health path taken %v, want %v", i, s.name, eb.healthPatches > patches, health)
		}
		if before != nil && i > 0 && sameVersions(before, got) {
			t.Errorf("step %d (%s): no version changed", i, s.name)
		}
		before = got
	}
}

// buildOne builds the one group of set.
func buildOne(t *testing.T, eb *edgeBuilder, snap *registry.Snapshot, set *policy.Set) *groupSnapshot {
	t.Helper()
	groups, failed, _ := eb.build(snap, set, nil)
	if len(failed) > 0 || len(groups) != 1 {
		t.Fatalf("build: %d groups, failed %v", len(groups), failed)
	}
	if err := groups[0].consistent(); err != nil {
		t.Fatal(err)
	}
	return groups[0]
}

// Through every translator golden case (subsets, DNS, authorization and
// rate limit services, TLS, upstream settings...), each instance of each
// service in turn goes critical with weight 0, into maintenance with
// weight 500, then passing with weight 7: every build must serve what a
// fresh build serves, whichever path it took, and some must take the
// health path.
func TestEdgeHealthPathMatchesFreshOnGoldenCases(t *testing.T) {
	cases, err := filepath.Glob("../translator/testdata/*/consul.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	patches := 0
	for _, consulFile := range cases {
		dir := filepath.Dir(consulFile)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			snap := translatortest.ConsulFixture(t, consulFile)
			set, diags := policy.Load(filepath.Join(dir, "policy"))
			if diags.HasErrors() {
				t.Fatalf("policy errors:\n%v", diags.Err())
			}
			var eb edgeBuilder
			eb.build(snap, set, nil)
			for _, name := range snap.Names() {
				n, _ := snap.Service(name)
				for i := range n.Instances {
					for _, step := range []struct {
						h registry.Health
						w int
					}{{registry.Unhealthy, 0}, {registry.Draining, 500}, {registry.Healthy, 7}} {
						svc, _ := snap.Service(name)
						svc.Instances = slices.Clone(svc.Instances)
						svc.Instances[i].Health, svc.Instances[i].Weight = step.h, step.w
						snap = snap.WithService(svc)
						got, gotFailed, gotDiags := eb.build(snap, set, nil)
						want, wantFailed, wantDiags := new(edgeBuilder).build(snap, set, nil)
						what := fmt.Sprintf("%s/%s %s weight %d", name, svc.Instances[i].ID, step.h, step.w)
						if len(got) != len(want) || len(gotFailed) != len(wantFailed) || !reflect.DeepEqual(gotDiags, wantDiags) {
							t.Fatalf("%s: %d groups, failed %v, diagnostics %v; fresh: %d, %v, %v", what, len(got), gotFailed, gotDiags, len(want), wantFailed, wantDiags)
						}
						for gi := range want {
							compareGroups(t, want[gi], got[gi])
						}
						if t.Failed() {
							t.Fatalf("%s: differs from a fresh build", what)
						}
					}
				}
			}
			patches += eb.healthPatches
		})
	}
	if patches == 0 {
		t.Errorf("no build took the health path")
	}
}

package controlplane

import (
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// BenchmarkBuild measures a rebuild from nothing, as on the first sync:
// translate, build and validate every Envoy resource, digest each, version
// each type and check the snapshot's consistency. 1,000 services x 10
// instances.
func BenchmarkBuild(b *testing.B) {
	snap, set := translatortest.Estate(b, 1000, 10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		groups, _, err := build(snap, set, map[string]*envoy.Builder{})
		if err != nil || len(groups) != 1 {
			b.Fatalf("build: %d groups, %v", len(groups), err)
		}
	}
}

// BenchmarkRebuildHealthFlip measures the common rebuild: one instance's
// health changed since the last one, so the group's Builder rebuilds one
// ClusterLoadAssignment and reuses everything else. 1,000 services x 10
// instances.
func BenchmarkRebuildHealthFlip(b *testing.B) {
	snap, set := translatortest.Estate(b, 1000, 10)
	states := []*registry.Snapshot{snap, flipped(snap, "svc-0500")}
	builders := map[string]*envoy.Builder{}
	if _, _, err := build(snap, set, builders); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		groups, _, err := build(states[i%2], set, builders)
		if err != nil || len(groups) != 1 {
			b.Fatalf("build: %d groups, %v", len(groups), err)
		}
	}
}

// flipped is snap with the first instance of service unhealthy.
func flipped(snap *registry.Snapshot, service string) *registry.Snapshot {
	var svcs []registry.Service
	for _, name := range snap.Names() {
		svc, _ := snap.Service(name)
		if name == service {
			svc.Instances = slices.Clone(svc.Instances)
			svc.Instances[0].Health = registry.Unhealthy
		}
		svcs = append(svcs, svc)
	}
	return registry.NewSnapshot(svcs...)
}

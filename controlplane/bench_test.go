package controlplane

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
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
		groups, err, _ := new(edgeBuilder).build(snap, set, nil)
		if err != nil || len(groups) != 1 {
			b.Fatalf("build: %d groups, %v", len(groups), err)
		}
	}
}

// BenchmarkRebuildHealthFlip measures the common rebuild: one instance's
// health changed since the last one, so the translator translates one
// cluster again and the group's Builder rebuilds one ClusterLoadAssignment,
// reusing everything else. The flipped snapshot shares every other service
// with the first, as the Watcher's next snapshot does. 1,000 services x 10
// instances, and issue 6's 5,000 x 4.
func BenchmarkRebuildHealthFlip(b *testing.B) {
	for _, size := range []struct{ services, instances int }{{1000, 10}, {5000, 4}} {
		b.Run(fmt.Sprintf("%dx%d", size.services, size.instances), func(b *testing.B) {
			benchRebuildHealthFlip(b, size.services, size.instances)
		})
	}
}

func benchRebuildHealthFlip(b *testing.B, services, instances int) {
	snap, set := translatortest.Estate(b, services, instances)
	states := []*registry.Snapshot{snap, flipped(snap, fmt.Sprintf("svc-%04d", services/2))}
	var eb edgeBuilder
	if _, err, _ := eb.build(snap, set, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		groups, err, _ := eb.build(states[i%2], set, nil)
		if err != nil || len(groups) != 1 {
			b.Fatalf("build: %d groups, %v", len(groups), err)
		}
	}
}

// flipped is snap with the first instance of service unhealthy, sharing
// every other service with snap.
func flipped(snap *registry.Snapshot, service string) *registry.Snapshot {
	svc, ok := snap.Service(service)
	if !ok {
		panic("no service " + service)
	}
	svc.Instances = slices.Clone(svc.Instances)
	svc.Instances[0].Health = registry.Unhealthy
	return snap.WithService(svc)
}

// meshEstate is sidecars sidecars of services services (one sidecar per
// instance), each calling 5 other services, every destination with its
// instances' sidecars as endpoints; health flips the first instance of
// service 0.
func meshEstate(b *testing.B, ca *testenv.CA, leaves []registry.Leaf, services, sidecars int, flip bool) *registry.MeshSnapshot {
	b.Helper()
	d := registry.MeshData{Leaves: leaves}
	for s := range services {
		d.Destinations = append(d.Destinations, registry.Destination{Name: fmt.Sprintf("svc-%d", s)})
	}
	for i := range sidecars {
		s := i % services
		svc := fmt.Sprintf("svc-%d", s)
		id := fmt.Sprintf("%s-%d-sidecar-proxy", svc, i)
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		sc := registry.Sidecar{ID: id, Service: svc, ServiceID: fmt.Sprintf("%s-%d", svc, i), Address: addr, Port: 21000, Datacenter: "dc1",
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080, Protocol: "http", Health: registry.Healthy}
		for u := 1; u <= 5; u++ {
			sc.Upstreams = append(sc.Upstreams, registry.Upstream{DestinationType: "service", DestinationName: fmt.Sprintf("svc-%d", (s+u)%services), LocalBindPort: 9000 + u})
		}
		d.Sidecars = append(d.Sidecars, sc)
		h := registry.Healthy
		if flip && i == 0 {
			h = registry.Unhealthy
		}
		d.Destinations[s].Endpoints = append(d.Destinations[s].Endpoints, registry.Endpoint{ProxyID: id, ServiceID: sc.ServiceID, Address: addr, Port: 21000, Datacenter: "dc1", Health: h, Weight: 1})
	}
	d.Roots = &registry.Roots{TrustDomain: "11111111-2222-3333-4444-555555555555.consul", Roots: []registry.Root{{ID: "a", CertPEM: string(ca.PEM)}}}
	d.IntentionDefault = registry.IntentionAllow
	return registry.NewMeshSnapshot(d)
}

// BenchmarkMeshHealthFlip measures publishing the mesh after one sidecar
// instance's health flipped, at several fleet sizes with the same reach:
// 5 sidecars per service, each calling 5 services, so a flip reaches the
// 25 sidecars of the flipped service's callers whatever the fleet's size.
// Only those get a new snapshot; what the flip costs beyond them is what
// grows with the fleet.
func BenchmarkMeshHealthFlip(b *testing.B) {
	for _, sidecars := range []int{100, 500, 2000} {
		b.Run(fmt.Sprintf("sidecars=%d", sidecars), func(b *testing.B) { benchMeshHealthFlip(b, sidecars) })
	}
}

func benchMeshHealthFlip(b *testing.B, sidecars int) {
	s, healthy, d := benchMeshServer(b, sidecars)
	states := []*registry.MeshSnapshot{healthy, healthy.WithDestination(d)}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		s.pub.publishMesh(states[i%2], nil)
	}
}

// BenchmarkMeshAccessLogEdit measures publishing the mesh after an edit
// of the Mesh document (the access log's format, JSON or text), which is
// in every sidecar's listeners: every sidecar is translated, built and
// published again.
func BenchmarkMeshAccessLogEdit(b *testing.B) {
	for _, sidecars := range []int{100, 500} {
		b.Run(fmt.Sprintf("sidecars=%d", sidecars), func(b *testing.B) {
			s, snap, _ := benchMeshServer(b, sidecars)
			var sets []*policy.Set
			for _, format := range []string{"json", "text"} {
				set, diags := policy.Parse(map[string][]byte{"mesh.yaml": []byte("apiVersion: switchyard.io/v1\nkind: Mesh\naccessLog: { format: " + format + " }\n")})
				if diags.HasErrors() {
					b.Fatal(diags.Err())
				}
				sets = append(sets, set)
			}
			s.pub.publishMesh(snap, sets[0])
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				i++
				s.pub.publishMesh(snap, sets[i%2])
			}
		})
	}
}

// benchMeshServer is a Server that has published a mesh of the given
// number of sidecars (5 per service, each calling 5 services), with the
// mesh's snapshot and svc-0's destination with one instance flipped.
func benchMeshServer(b *testing.B, sidecars int) (*Server, *registry.MeshSnapshot, registry.Destination) {
	var logs bytes.Buffer
	s, err := New(Config{PolicyPaths: []string{b.TempDir()}, Mesh: true}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		b.Fatal(err)
	}
	services := sidecars / 5
	ca := testenv.NewCA(b, "bench CA")
	var leaves []registry.Leaf
	for s := range services {
		svc := fmt.Sprintf("svc-%d", s)
		l := ca.Issue(b, testenv.LeafOptions{Name: svc})
		leaves = append(leaves, registry.Leaf{Service: svc, CertPEM: string(l.CertPEM), KeyPEM: registry.KeyPEM(l.KeyPEM)})
	}
	// The flipped state shares every other part with the first, as the
	// MeshWatcher's next snapshot does.
	healthy := meshEstate(b, ca, leaves, services, sidecars, false)
	d, _ := meshEstate(b, ca, leaves, services, sidecars, true).Destination("svc-0")
	s.pub.publishMesh(healthy, nil)
	if n := len(s.pub.groups); n != sidecars {
		b.Fatalf("%d sidecars published; want %d\n%s", n, sidecars, logs.String())
	}
	return s, healthy, d
}

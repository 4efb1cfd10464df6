package translator

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// A MeshTranslator that remembers must translate exactly what a fresh one
// does, through a long sequence of changes, and report every change: a
// consumer that applies its updates to what it had (the served sidecars'
// IR, the clusters of the mesh) holds, after every step, what a fresh
// translation gives.
func TestMeshTranslatorMatchesFresh(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		steps := translatortest.MeshChanges(t, seed, 300)
		var tr MeshTranslator
		served := map[string]*ir.Sidecar{}       // what the updates said, applied
		clusters := map[string]*ir.MeshCluster{} // likewise
		var lastFresh *MeshResult
		kinds := map[string]int{}
		for i, step := range steps {
			up := tr.Translate(step.Snap, step.Set)
			fresh := TranslateMesh(step.Snap, step.Set)
			if d := cmp.Diff(fresh.Diagnostics, up.Diagnostics); d != "" {
				t.Fatalf("seed %d step %d (%s): diagnostics differ from a fresh translation (-fresh +incremental):\n%s", seed, i, step.Change, d)
			}
			if up.NoRoots {
				if len(up.Sidecars) > 0 || len(up.Clusters) > 0 {
					t.Fatalf("seed %d step %d (%s): an update without roots reports changes", seed, i, step.Change)
				}
				continue
			}
			reported := map[string]bool{}
			for _, su := range up.Sidecars {
				reported[su.ProxyID] = true
				if su.Sidecar == nil {
					delete(served, su.ProxyID)
					continue
				}
				if old := served[su.ProxyID]; su.IRChanged == (old != nil && reflect.DeepEqual(old, su.Sidecar)) {
					t.Fatalf("seed %d step %d (%s): %s reported with IRChanged %v; its IR was %+v, is %+v", seed, i, step.Change, su.ProxyID, su.IRChanged, old, su.Sidecar)
				}
				served[su.ProxyID] = su.Sidecar
			}
			for _, c := range up.Clusters {
				clusters[c.SNI] = c
			}
			for _, sni := range up.RemovedClusters {
				delete(clusters, sni)
			}
			for sni, c := range clusters {
				if got := tr.Cluster(sni); got == nil || !reflect.DeepEqual(got, c) {
					t.Fatalf("seed %d step %d (%s): the updates left cluster %s in the mesh as %+v; the translator has %+v", seed, i, step.Change, sni, c, got)
				}
			}
			if err := fresh.Mesh.Validate(); err != nil {
				t.Fatalf("seed %d step %d (%s): invalid mesh: %v", seed, i, step.Change, err)
			}
			want := map[string]*ir.Sidecar{}
			for j := range fresh.Sidecars {
				want[fresh.Sidecars[j].ProxyID] = &fresh.Sidecars[j]
				if err := fresh.Mesh.ValidateSidecar(&fresh.Sidecars[j]); err != nil {
					t.Fatalf("seed %d step %d (%s): %v", seed, i, step.Change, err)
				}
			}
			if d := cmp.Diff(want, served); d != "" {
				t.Fatalf("seed %d step %d (%s): served sidecars differ from a fresh translation (-fresh +incremental):\n%s", seed, i, step.Change, d)
			}
			freshClusters := map[string]*ir.MeshCluster{}
			for j := range fresh.Mesh.Clusters {
				c := &fresh.Mesh.Clusters[j]
				freshClusters[c.SNI] = c
				if d := cmp.Diff(c, clusters[c.SNI]); d != "" {
					t.Fatalf("seed %d step %d (%s): cluster %s differs from a fresh translation (-fresh +incremental):\n%s", seed, i, step.Change, c.SNI, d)
				}
				if got := tr.Cluster(c.SNI); got == nil || !reflect.DeepEqual(got, c) {
					t.Fatalf("seed %d step %d (%s): Cluster(%s) = %+v; want %+v", seed, i, step.Change, c.SNI, got, c)
				}
			}
			// A served sidecar whose IR did not change but a cluster it
			// uses did (or the roots) must be reported: its snapshot
			// changed.
			if lastFresh != nil {
				before := map[string]ir.MeshCluster{}
				for _, c := range lastFresh.Mesh.Clusters {
					before[c.SNI] = c
				}
				rootsChanged := lastFresh.Mesh.Roots != fresh.Mesh.Roots
				for id, s := range want {
					for _, sni := range uses(s) {
						if (rootsChanged || !reflect.DeepEqual(before[sni], *freshClusters[sni])) && !reported[id] {
							t.Fatalf("seed %d step %d (%s): %s uses %s, which changed, and was not reported", seed, i, step.Change, id, sni)
						}
					}
				}
			}
			lastFresh = fresh
			kinds[kind(step.Change)]++
		}
		t.Logf("seed %d: %d steps: %v; at the end %d sidecars served, %d clusters", seed, len(steps), kinds, len(served), len(clusters))
	}
}

// uses lists the clusters in a sidecar's snapshot.
func uses(s *ir.Sidecar) []string {
	var out []string
	for _, u := range s.Upstreams {
		out = append(out, u.Cluster)
		out = append(out, u.Also...)
	}
	return out
}

// kind is a step's change without the names in it.
func kind(change string) string {
	for _, k := range []string{"health", "deregistered", "registered", "changed", "serves", "intention", "leaf", "roots", "policy", "trust domain"} {
		if strings.Contains(change, k) {
			return k
		}
	}
	return change
}

// A health flip translates the flipped destination's cluster and nothing
// else: no sidecar is translated again (each keeps its very IR), and only
// the destination's callers are reported, for their snapshots hold its
// endpoints.
func TestMeshTranslatorFlipTouchesCallersOnly(t *testing.T) {
	d := registry.MeshData{IntentionDefault: registry.IntentionAllow,
		Roots: &registry.Roots{TrustDomain: "td.consul", Roots: []registry.Root{{ID: "a", CertPEM: "ROOT"}}}}
	const services = 40
	for s := range services {
		svc := fmt.Sprintf("svc-%d", s)
		d.Leaves = append(d.Leaves, registry.Leaf{Service: svc, CertPEM: "CERT", KeyPEM: registry.KeyPEM("KEY")})
		dest := registry.Destination{Name: svc}
		for i := range 5 {
			id := fmt.Sprintf("%s-%d-sidecar-proxy", svc, i)
			addr := fmt.Sprintf("10.0.%d.%d", s, i+1)
			sc := registry.Sidecar{ID: id, Service: svc, Address: addr, Port: 21000, Datacenter: "dc1", LocalServicePort: 8080, Protocol: "http"}
			for u := 1; u <= 3; u++ {
				sc.Upstreams = append(sc.Upstreams, registry.Upstream{DestinationType: "service", DestinationName: fmt.Sprintf("svc-%d", (s+u)%services), LocalBindPort: 9000 + u})
			}
			d.Sidecars = append(d.Sidecars, sc)
			dest.Endpoints = append(dest.Endpoints, registry.Endpoint{ProxyID: id, Address: addr, Port: 21000, Health: registry.Healthy, Weight: 1})
		}
		d.Destinations = append(d.Destinations, dest)
	}
	snap := registry.NewMeshSnapshot(d)
	var tr MeshTranslator
	if up := tr.Translate(snap, nil); len(up.Sidecars) != services*5 {
		t.Fatalf("%d sidecars served; want %d\n%v", len(up.Sidecars), services*5, up.Diagnostics)
	}
	before := map[string]*ir.Sidecar{}
	for id, n := range tr.sidecars {
		before[id] = n.out
	}
	flipped, _ := snap.Destination("svc-7")
	flipped.Endpoints = slices.Clone(flipped.Endpoints)
	flipped.Endpoints[2].Health = registry.Unhealthy
	up := tr.Translate(snap.WithDestination(flipped), nil)

	var clusters []string
	for _, c := range up.Clusters {
		clusters = append(clusters, c.Service)
	}
	if !slices.Equal(clusters, []string{"svc-7"}) || len(up.RemovedClusters) > 0 {
		t.Errorf("clusters changed: %v, removed %v; want svc-7's alone", clusters, up.RemovedClusters)
	}
	var reported []string
	for _, su := range up.Sidecars {
		reported = append(reported, su.ProxyID)
		if su.IRChanged {
			t.Errorf("%s: IRChanged on a flip of a destination it calls", su.ProxyID)
		}
	}
	var callers []string // svc-4, svc-5 and svc-6 call svc-7
	for _, svc := range []string{"svc-4", "svc-5", "svc-6"} {
		for i := range 5 {
			callers = append(callers, fmt.Sprintf("%s-%d-sidecar-proxy", svc, i))
		}
	}
	if !slices.Equal(reported, callers) {
		t.Errorf("reported %v; want svc-7's callers %v", reported, callers)
	}
	for id, n := range tr.sidecars {
		if n.out != before[id] {
			t.Errorf("%s was translated again", id)
		}
	}
}

package translator

import (
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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
			want := map[string]*ir.Sidecar{}
			for j := range fresh.Sidecars {
				want[fresh.Sidecars[j].ProxyID] = &fresh.Sidecars[j]
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

package controlplane

import (
	"bytes"
	"maps"
	"slices"
	"testing"

	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/translator/translatortest"
)

// Publishing the mesh incrementally must publish, for every sidecar, the
// very bytes a fresh publisher builds from the same state, through a long
// sequence of changes (health flips, registrations, intentions, leaf and
// root rotations, a new trust domain, policy changes): reuse saves work
// and changes nothing. While Consul has no roots every sidecar keeps its
// config.
func TestMeshIncrementalMatchesFresh(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		s, logs := newMeshServer(t)
		var kept map[string]*groupSnapshot
		for i, step := range translatortest.MeshChanges(t, seed, 150) {
			s.pub.publishMesh(step.Snap, step.Set)
			got := sidecarGroups(s)
			if roots, ok := step.Snap.Roots(); !ok || len(roots.Roots) == 0 {
				if d := cmp.Diff(slices.Sorted(maps.Keys(kept)), slices.Sorted(maps.Keys(got))); d != "" {
					t.Fatalf("seed %d step %d (%s): sidecars changed without roots (-before +after):\n%s", seed, i, step.Change, d)
				}
				continue
			}
			fresh, freshLogs := newMeshServer(t)
			fresh.pub.publishMesh(step.Snap, step.Set)
			want := sidecarGroups(fresh)
			if len(s.pub.mesh.failed) > 0 || len(fresh.pub.mesh.failed) > 0 {
				t.Fatalf("seed %d step %d (%s): sidecars failed to build: %v, fresh: %v\n%s\n%s", seed, i, step.Change, s.pub.mesh.failed, fresh.pub.mesh.failed, logs, freshLogs)
			}
			if d := cmp.Diff(slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(got))); d != "" {
				t.Fatalf("seed %d step %d (%s): sidecars published differ from a fresh build (-fresh +incremental):\n%s", seed, i, step.Change, d)
			}
			for key, w := range want {
				compareGroups(t, w, got[key])
				if err := got[key].consistent(); err != nil {
					t.Errorf("%s: %v", key, err)
				}
			}
			if t.Failed() {
				t.Fatalf("seed %d step %d (%s): differs from a fresh build", seed, i, step.Change)
			}
			kept = got
		}
		logs.Reset()
	}
}

// sidecarGroups is the published snapshot of every sidecar.
func sidecarGroups(s *Server) map[string]*groupSnapshot {
	s.pub.mu.Lock()
	defer s.pub.mu.Unlock()
	out := map[string]*groupSnapshot{}
	for key, gs := range s.pub.groups {
		out[key] = gs
	}
	return out
}

// compareGroups reports where got differs from want: versions, each
// resource's bytes (deterministic marshalling), and the per-resource
// versions delta xDS serves.
func compareGroups(t *testing.T, want, got *groupSnapshot) {
	t.Helper()
	if d := cmp.Diff(want.versions, got.versions); d != "" {
		t.Errorf("%s: versions differ (-fresh +incremental):\n%s", want.group, d)
	}
	if d := cmp.Diff(want.snapshot.VersionMap, got.snapshot.VersionMap); d != "" {
		t.Errorf("%s: resource versions differ (-fresh +incremental):\n%s", want.group, d)
	}
	for _, typ := range envoy.Types {
		w, g := want.resources[typ], got.resources[typ]
		if len(w) != len(g) {
			t.Errorf("%s: %d %s; fresh: %d", want.group, len(g), typ, len(w))
			continue
		}
		for i := range w {
			wb, err := proto.MarshalOptions{Deterministic: true}.Marshal(w[i])
			if err != nil {
				t.Fatal(err)
			}
			gb, err := proto.MarshalOptions{Deterministic: true}.Marshal(g[i])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: %s %q differs from a fresh build", want.group, typ, envoy.GetName(w[i]))
			}
		}
		// What is served: the snapshot's own resources and version.
		rt := cache.GetResponseType(typ)
		ws, gs := want.snapshot.Resources[rt], got.snapshot.Resources[rt]
		if ws.Version != gs.Version || len(ws.Items) != len(gs.Items) {
			t.Errorf("%s: served %s: version %s, %d items; fresh: %s, %d", want.group, typ, gs.Version, len(gs.Items), ws.Version, len(ws.Items))
			continue
		}
		for name, wi := range ws.Items {
			gi, ok := gs.Items[name]
			if !ok || !proto.Equal(wi.Resource, gi.Resource) {
				t.Errorf("%s: served %s %q differs from a fresh build", want.group, typ, name)
			}
		}
	}
}

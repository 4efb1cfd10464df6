package registry

import (
	"reflect"
	"testing"
)

// Changes lists each key added, removed or changed, whether the part was
// replaced by an equal value (not listed) or shared (not listed).
func TestMeshChanges(t *testing.T) {
	base := MeshData{
		Sidecars:     []Sidecar{{ID: "a", Service: "web"}, {ID: "b", Service: "api"}},
		Destinations: []Destination{{Name: "api", Endpoints: []Endpoint{{ProxyID: "b", Health: Healthy}}}},
		Leaves:       []Leaf{{Service: "web", CertPEM: "1"}, {Service: "api", CertPEM: "1"}},
		Roots:        &Roots{TrustDomain: "td.consul", Roots: []Root{{ID: "r1"}}},
		Intentions:   []Intentions{{Destination: "api"}, {Destination: WildcardName}},
	}
	s1 := NewMeshSnapshot(base)
	if got := NewMeshSnapshot(base).Changes(s1); !reflect.DeepEqual(got, MeshChanges{}) {
		t.Errorf("an equal snapshot: got %+v; want no changes", got)
	}
	next := base
	next.Sidecars = []Sidecar{{ID: "a", Service: "web", Port: 1}, {ID: "c", Service: "db"}}
	next.Leaves = []Leaf{{Service: "web", CertPEM: "2"}, {Service: "api", CertPEM: "1"}}
	next.Roots = &Roots{TrustDomain: "td.consul", Roots: []Root{{ID: "r2"}}}
	next.Intentions = []Intentions{{Destination: "api", Sources: []IntentionSource{{Name: "web", Action: "deny"}}}}
	next.IntentionDefault = IntentionAllow
	s2 := NewMeshSnapshot(next)
	want := MeshChanges{Sidecars: []string{"a", "b", "c"}, Leaves: []string{"web"}, Intentions: []string{"*", "api"}, Roots: true, IntentionDefault: true}
	if got := s2.Changes(s1); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
	if got := s2.ChangedLeaves(s1); !reflect.DeepEqual(got, want.Leaves) {
		t.Errorf("ChangedLeaves: got %v; want %v", got, want.Leaves)
	}
	flipped := s1.WithDestination(Destination{Name: "api", Endpoints: []Endpoint{{ProxyID: "b", Health: Unhealthy}}})
	if got := flipped.Changes(s1); !reflect.DeepEqual(got, MeshChanges{Destinations: []string{"api"}}) {
		t.Errorf("a health flip: got %+v; want the destination alone", got)
	}
	if d, _ := s1.Destination("api"); d.Endpoints[0].Health != Healthy {
		t.Error("WithDestination changed the snapshot it derives from")
	}
	all := s1.Changes(nil)
	if len(all.Sidecars) != 2 || len(all.Destinations) != 1 || len(all.Leaves) != 2 || len(all.Intentions) != 2 || !all.Roots {
		t.Errorf("against nil: got %+v; want everything", all)
	}
}

package registry

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewSnapshotCopiesAndSorts(t *testing.T) {
	tags := []string{"b", "a"}
	meta := map[string]string{"k": "v"}
	in := []Instance{
		{ID: "web-2", Node: "n1", Tags: tags, Meta: meta},
		{ID: "web-1", Node: "n2"},
		{ID: "web-1", Node: "n1"},
	}
	s := NewSnapshot(Service{Name: "web", Instances: in}, Service{Name: "api"})
	tags[0], meta["k"], in[0].ID = "changed", "changed", "changed"

	want := []Service{
		{Name: "api", Instances: []Instance{}},
		{Name: "web", Instances: []Instance{
			{ID: "web-1", Node: "n1"},
			{ID: "web-2", Node: "n1", Tags: []string{"a", "b"}, Meta: map[string]string{"k": "v"}},
			{ID: "web-1", Node: "n2"},
		}},
	}
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	if got := s.Len(); got != 2 {
		t.Errorf("Len() = %d; want 2", got)
	}
	if _, ok := s.Service("nope"); ok {
		t.Errorf("Service(nope) found; want not")
	}
	if !s.Equal(NewSnapshot(want...)) || s.Equal(NewSnapshot(want[0])) {
		t.Errorf("Equal disagrees with the content")
	}
}

func TestNilSnapshot(t *testing.T) {
	var s *Snapshot
	if s.Len() != 0 || s.Names() != nil || !s.Equal(NewSnapshot()) {
		t.Errorf("nil snapshot is not empty")
	}
	if _, ok := s.Service("web"); ok {
		t.Errorf("nil snapshot has web")
	}
}

func TestHealthString(t *testing.T) {
	for h, want := range map[Health]string{Healthy: "healthy", Unhealthy: "unhealthy", Draining: "draining", 7: "health(7)"} {
		if got := h.String(); got != want {
			t.Errorf("Health(%d).String() = %q; want %q", int(h), got, want)
		}
	}
}

func TestSnapshotCovers(t *testing.T) {
	var nilSnap *Snapshot
	for _, s := range []*Snapshot{NewSnapshot(), NewSnapshot(Service{Name: "web"}), nilSnap} {
		if !s.Covers("web") || !s.Covers("anything") {
			t.Errorf("%v does not cover every name", s.Names())
		}
	}
	web := Service{Name: "web"}
	restricted := &Snapshot{services: map[string]*Service{"web": &web}, covered: map[string]struct{}{"web": {}, "gone": {}}}
	if !restricted.Covers("web") || !restricted.Covers("gone") || restricted.Covers("api") {
		t.Errorf("covers web %t, gone %t, api %t; want true, true, false",
			restricted.Covers("web"), restricted.Covers("gone"), restricted.Covers("api"))
	}
	// Same services, different coverage: not equal.
	fewer := &Snapshot{services: restricted.services, covered: map[string]struct{}{"web": {}}}
	none := &Snapshot{services: map[string]*Service{}, covered: map[string]struct{}{}}
	for _, tc := range []struct {
		a, b *Snapshot
		want bool
	}{
		{restricted, restricted, true},
		{restricted, &Snapshot{services: restricted.services, covered: map[string]struct{}{"gone": {}, "web": {}}}, true},
		{restricted, fewer, false},
		{restricted, NewSnapshot(web), false},
		{none, NewSnapshot(), false},
		{none, nilSnap, false},
		{nilSnap, NewSnapshot(), true},
	} {
		if got := tc.a.Equal(tc.b); got != tc.want {
			t.Errorf("%v (covers api %t) Equal %v (covers api %t) = %t; want %t",
				tc.a.Names(), tc.a.Covers("api"), tc.b.Names(), tc.b.Covers("api"), got, tc.want)
		}
		if got := tc.b.Equal(tc.a); got != tc.want {
			t.Errorf("Equal is not symmetric")
		}
	}
}

// WithService shares every other service; SameService tells shared from
// merely equal.
func TestWithServiceSharesTheRest(t *testing.T) {
	a := NewSnapshot(Service{Name: "web", Instances: []Instance{{ID: "w1"}}}, Service{Name: "api"})
	b := a.WithService(Service{Name: "web", Instances: []Instance{{ID: "w1", Health: Unhealthy}}})
	if !b.SameService(a, "api") || !b.SameService(a, "nope") {
		t.Errorf("api (unchanged) or nope (absent from both) not the same")
	}
	if b.SameService(a, "web") {
		t.Errorf("web changed but is the same")
	}
	if web, _ := b.Service("web"); web.Instances[0].Health != Unhealthy {
		t.Errorf("web = %+v; want the new one", web)
	}
	if web, _ := a.Service("web"); web.Instances[0].Health != Healthy {
		t.Errorf("the original changed: %+v", web)
	}
	if NewSnapshot(Service{Name: "api"}).SameService(a, "api") {
		t.Errorf("an equal service made separately is the same")
	}
	c := a.WithService(Service{Name: "db"})
	if c.Len() != 3 || !c.SameService(a, "web") || c.SameService(a, "db") {
		t.Errorf("adding db: len %d, web shared %v", c.Len(), c.SameService(a, "web"))
	}
}

func TestChangedSince(t *testing.T) {
	web := Service{Name: "web", Instances: []Instance{{ID: "web-1", Node: "n1", Address: "10.0.0.1", Port: 80}}}
	api := Service{Name: "api", Instances: []Instance{{ID: "api-1", Node: "n1", Address: "10.0.0.2", Port: 80}}}
	base := NewSnapshot(web, api)
	if names, ok := base.ChangedSince(base); !ok || len(names) != 0 {
		t.Errorf("itself: %v %v, want nothing changed", names, ok)
	}
	flipped := web
	flipped.Instances = []Instance{{ID: "web-1", Node: "n1", Address: "10.0.0.1", Port: 80, Health: Unhealthy}}
	next := base.WithService(flipped)
	if names, ok := next.ChangedSince(base); !ok || !slices.Equal(names, []string{"web"}) {
		t.Errorf("web replaced: %v %v, want [web] true", names, ok)
	}
	// Equal content made separately is a change: only sharing says same.
	if names, ok := NewSnapshot(web, api).ChangedSince(base); !ok || !slices.Equal(names, []string{"api", "web"}) {
		t.Errorf("rebuilt: %v %v, want [api web] true", names, ok)
	}
	for what, other := range map[string]*Snapshot{
		"a service added":   base.WithService(Service{Name: "db"}),
		"a service removed": NewSnapshot(web),
		"other names":       NewSnapshot(web, Service{Name: "db"}),
		"nil":               nil,
	} {
		if _, ok := other.ChangedSince(base); ok {
			t.Errorf("%s: ok, want more than services changed", what)
		}
		if _, ok := base.ChangedSince(other); ok {
			t.Errorf("%s (reversed): ok, want more than services changed", what)
		}
	}
	covered := &Snapshot{services: base.services, covered: map[string]struct{}{"web": {}, "api": {}}}
	if _, ok := covered.ChangedSince(base); ok {
		t.Errorf("other coverage: ok, want more than services changed")
	}
}

package registry

import (
	"strings"
	"testing"
	"time"
)

// A saved snapshot loads back equal, coverage included; a damaged or
// foreign file is refused with a reason.
func TestSaveLoadSnapshot(t *testing.T) {
	snap := NewSnapshot(
		Service{Name: "web", Instances: []Instance{
			{ID: "web-2", Node: "n2", Address: "10.0.0.2", Port: 8080, Tags: []string{"v2", "a"}, Meta: map[string]string{"version": "2"}, Health: Unhealthy, Weight: 3},
			{ID: "web-1", Node: "n1", Address: "10.0.0.1", Port: 8080, Health: Healthy, Weight: 1},
		}},
		Service{Name: "api", Instances: []Instance{{ID: "api-1", Node: "n1", Address: "api.internal", Port: 9000, Health: Draining, Weight: 1}}},
	)
	snap.covered = map[string]struct{}{"web": {}, "api": {}, "gone": {}}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	b, err := snap.Save(at, "http://127.0.0.1:8500 dc1")
	if err != nil {
		t.Fatal(err)
	}
	got, saved, err := LoadSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(snap) || !saved.At.Equal(at) || saved.Origin != "http://127.0.0.1:8500 dc1" {
		t.Errorf("loaded %v saved %+v; want the snapshot saved at %v of http://127.0.0.1:8500 dc1", got.Names(), saved, at)
	}
	if !got.Covers("gone") || got.Covers("other") {
		t.Errorf("coverage lost: covers gone %v, other %v", got.Covers("gone"), got.Covers("other"))
	}
	all, _ := NewSnapshot().Save(at, "")
	if s, _, err := LoadSnapshot(all); err != nil || !s.Covers("anything") {
		t.Errorf("a snapshot covering every name: %v, covers anything %v", err, s.Covers("anything"))
	}

	for _, tc := range []struct{ from, to, want string }{
		{`"version":1`, `"version":2`, "format version 2"},
		{`"health":"draining"`, `"health":"sleepy"`, `unknown health "sleepy"`},
		{`"port":9000`, `"port":70000`, "port 70000"},
		{`"name":"api"`, `"name":""`, "without a name"},
		{`{"version"`, `["version"`, "saved snapshot"},
	} {
		bad := strings.Replace(string(b), tc.from, tc.to, 1)
		if bad == string(b) {
			t.Fatalf("the fixture has no %s", tc.from)
		}
		if _, _, err := LoadSnapshot([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s -> %s: got %v; want an error with %q", tc.from, tc.to, err, tc.want)
		}
	}
}

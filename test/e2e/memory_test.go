package e2e

import "testing"

// memory.limit reaches the Go runtime of a running Switchyard, which
// serves as before under it: a critical instance leaves rotation (a
// health change, the path most changes take).
func TestMemoryLimitReachesTheRuntime(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{ServeArgs: []string{"--memory-limit", "256MiB"}})
	if got := e.Metric("go_gc_gomemlimit_bytes", ""); got != 256<<20 {
		t.Errorf("go_gc_gomemlimit_bytes = %v; want %d (--memory-limit 256MiB)", got, 256<<20)
	}
	a := e.StartBackend("web", "web-1")
	b := e.StartBackend("web", "web-2")
	e.WaitHosts("web", 2, 2)
	e.waitAllServe("both instances serve", settle, a, b)
	e.SetHealth(a, "critical")
	e.WaitHosts("web", 1, 2)
	hits := a.Hits()
	if got := e.Tally(20, "/"); got["web-2"] != 20 {
		t.Fatalf("got %v over 20 requests with web-1 critical; want all from web-2", got)
	}
	if a.Hits() != hits {
		t.Errorf("web-1, critical, served %d requests", a.Hits()-hits)
	}
}

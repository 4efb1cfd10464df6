package registry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

const testToken = "tok-3f9c2a7e-do-not-log"

// harness runs a Watcher against a fake Consul and collects what it does.
type harness struct {
	t      *testing.T
	f      *fakeConsul
	w      *Watcher
	snaps  chan *Snapshot
	cancel context.CancelFunc
	done   chan error
	logs   *testenv.SyncBuffer

	mu         sync.Mutex
	watchErrs  []string       // op: error
	failStatic []string       // service: reason
	requests   map[string]int // "kind/result": Hooks.Request calls
	watches    map[string]int // kind: the sum of Hooks.Watches deltas
}

// testConfig is fast: short waits and backoffs.
func testConfig(addr string) Config {
	return Config{
		Address:    addr,
		Token:      testToken,
		AllowStale: true,
		WaitTime:   200 * time.Millisecond,
		BackoffMin: 5 * time.Millisecond,
		BackoffMax: 40 * time.Millisecond,
		StaleHold:  time.Minute,
	}
}

func start(t *testing.T, f *fakeConsul, mod func(*Config)) *harness {
	t.Helper()
	return startWith(t, f, mod, nil)
}

// startWith is start, calling before (if not nil) before Run.
func startWith(t *testing.T, f *fakeConsul, mod func(*Config), before func(*Watcher)) *harness {
	t.Helper()
	cfg := testConfig(f.Addr())
	if mod != nil {
		mod(&cfg)
	}
	h := &harness{t: t, f: f, snaps: make(chan *Snapshot, 100), done: make(chan error, 1), logs: &testenv.SyncBuffer{},
		requests: map[string]int{}, watches: map[string]int{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := NewWatcher(cfg, log, Hooks{
		WatchError: func(op string, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.watchErrs = append(h.watchErrs, op+": "+err.Error())
		},
		FailStatic: func(service, reason string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.failStatic = append(h.failStatic, service+": "+reason)
		},
		Request: func(kind, result string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.requests[kind+"/"+result]++
		},
		Watches: func(kind string, delta int) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.watches[kind] += delta
		},
	})
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	h.w = w
	if before != nil {
		before(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel

	var inPublish atomic.Int32
	var last *Snapshot
	go func() {
		h.done <- w.Run(ctx, func(s *Snapshot) {
			if n := inPublish.Add(1); n != 1 {
				t.Errorf("publish called concurrently (%d at once)", n)
			}
			defer inPublish.Add(-1)
			if last != nil && s.Equal(last) {
				t.Errorf("published a snapshot equal to the previous one: %v", dump(s))
			}
			last = s
			h.snaps <- s
		})
	}()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("watcher log:\n%s", h.logs.String())
		}
	})
	return h
}

// next waits for the next published snapshot.
func (h *harness) next() *Snapshot {
	h.t.Helper()
	select {
	case s := <-h.snaps:
		return s
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no snapshot published within 5s")
		return nil
	}
}

// none asserts that nothing is published for d.
func (h *harness) none(d time.Duration) {
	h.t.Helper()
	select {
	case s := <-h.snaps:
		h.t.Fatalf("got an unexpected snapshot: %v", dump(s))
	case <-time.After(d):
	}
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err, ok := <-h.done:
		if ok && err != nil {
			h.t.Errorf("Run returned %v; want nil", err)
		}
		if ok {
			close(h.done)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("Run did not return within 5s of cancel")
	}
}

func (h *harness) failStatics() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.failStatic...)
}

func (h *harness) watchErrors() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.watchErrs...)
}

// eventually polls cond until it is true or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dump turns a snapshot into plain values for cmp.
func dump(s *Snapshot) []Service {
	var out []Service
	for _, name := range s.Names() {
		svc, _ := s.Service(name)
		out = append(out, svc)
	}
	return out
}

func inst(node, id, addr string, port int, h Health) Instance {
	return Instance{ID: id, Node: node, Address: addr, Port: port, Datacenter: "dc1", Health: h, Weight: 1}
}

func TestInitialSyncPublishesOnceWithAllServices(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n2", "web-2", "10.1.0.2", 8080), entry("n1", "web-1", "10.1.0.1", 8080))
	f.Set("api", entry("n1", "api-1", "", 9090, "svc=passing"))
	f.Set("empty")

	h := start(t, f, nil)
	got := dump(h.next())
	want := []Service{
		{Name: "api", Instances: []Instance{inst("n1", "api-1", "10.0.0.2", 9090, Healthy)}},
		{Name: "empty", Instances: []Instance{}},
		{Name: "web", Instances: []Instance{
			inst("n1", "web-1", "10.1.0.1", 8080, Healthy),
			inst("n2", "web-2", "10.1.0.2", 8080, Healthy),
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("initial snapshot (-want +got):\n%s", diff)
	}
	// Blocking queries come back empty-handed after their wait and on
	// unrelated writes: nothing new to publish.
	f.Bump()
	h.none(500 * time.Millisecond)
}

func TestHealthMapping(t *testing.T) {
	f := newFakeConsul(t)
	weighted := func(e *consulapi.ServiceEntry, passing, warning int) *consulapi.ServiceEntry {
		e.Service.Weights = consulapi.AgentWeights{Passing: passing, Warning: warning}
		return e
	}
	f.Set("web",
		entry("n1", "web-passing", "10.1.0.1", 80, "node:serfHealth=passing", "svc=passing"),
		weighted(entry("n1", "web-warning", "10.1.0.2", 80, "svc=warning"), 10, 3),
		weighted(entry("n1", "web-weighted", "10.1.0.3", 80, "svc=passing"), 500, 1),
		entry("n1", "web-critical", "10.1.0.4", 80, "svc=critical"),
		entry("n2", "web-nodedown", "10.1.0.5", 80, "node:serfHealth=critical", "svc=passing"),
		entry("n1", "web-maint", "10.1.0.6", 80, "svc=critical", "_service_maintenance:web-maint=critical"),
		entry("n3", "web-nodemaint", "10.1.0.7", 80, "node:_node_maintenance=critical"),
		entry("n1", "web-nochecks", "10.1.0.8", 80),
		weighted(entry("n1", "web-unset", "10.1.0.9", 80, "svc=warning"), 0, 0),
		weighted(entry("n1", "web-warnzero", "10.1.0.10", 80, "svc=warning"), 5, 0),
	)
	h := start(t, f, nil)
	svc, ok := h.next().Service("web")
	if !ok {
		t.Fatal("web missing")
	}
	type hw struct {
		Health Health
		Weight int
	}
	got := map[string]hw{}
	for _, in := range svc.Instances {
		got[in.ID] = hw{in.Health, in.Weight}
	}
	want := map[string]hw{
		"web-passing":   {Healthy, 1},
		"web-warning":   {Healthy, 3},
		"web-weighted":  {Healthy, 128},
		"web-critical":  {Unhealthy, 1},
		"web-nodedown":  {Unhealthy, 1},
		"web-maint":     {Draining, 1},
		"web-nodemaint": {Draining, 1},
		"web-nochecks":  {Healthy, 1},
		"web-unset":     {Healthy, 1},
		"web-warnzero":  {Unhealthy, 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("health and weight by instance (-want +got):\n%s", diff)
	}
	var order []string
	for _, in := range svc.Instances {
		order = append(order, in.Node+"/"+in.ID)
	}
	wantOrder := []string{"n1/web-critical", "n1/web-maint", "n1/web-nochecks", "n1/web-passing",
		"n1/web-unset", "n1/web-warning", "n1/web-warnzero", "n1/web-weighted", "n2/web-nodedown", "n3/web-nodemaint"}
	if diff := cmp.Diff(wantOrder, order); diff != "" {
		t.Errorf("instance order (-want +got):\n%s", diff)
	}
}

func TestHealthFlipChangesOnlyThatInstance(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80, "svc=passing"), entry("n2", "web-2", "10.1.0.2", 80, "svc=passing"))
	f.Set("api", entry("n1", "api-1", "10.1.0.1", 90))
	h := start(t, f, nil)
	before := h.next()

	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80, "svc=passing"), entry("n2", "web-2", "10.1.0.2", 80, "svc=critical"))
	after := h.next()

	want := dump(before)
	want[1].Instances = append([]Instance(nil), want[1].Instances...)
	want[1].Instances[1].Health = Unhealthy
	if diff := cmp.Diff(want, dump(after)); diff != "" {
		t.Errorf("after the flip (-want +got):\n%s", diff)
	}
	// The unchanged service is shared, not copied.
	a1, _ := before.Service("api")
	a2, _ := after.Service("api")
	if &a1.Instances[0] != &a2.Instances[0] {
		t.Errorf("unchanged service api was copied; want it shared between snapshots")
	}
	// The old snapshot is untouched.
	if w, _ := before.Service("web"); w.Instances[1].Health != Healthy {
		t.Errorf("published snapshot was modified: web-2 is %v", w.Instances[1].Health)
	}

	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80, "svc=passing"), entry("n2", "web-2", "10.1.0.2", 80, "svc=passing"))
	if diff := cmp.Diff(dump(before), dump(h.next())); diff != "" {
		t.Errorf("after flipping back (-want +got):\n%s", diff)
	}
}

func TestDeregisterAllInstancesPublishesEmptyService(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	h := start(t, f, nil)
	h.next()

	f.Set("web") // still listed, no instances, index moving forward: real
	s := h.next()
	svc, ok := s.Service("web")
	if !ok || len(svc.Instances) != 0 {
		t.Errorf("got web %+v (present %t); want present with no instances", svc, ok)
	}
	if fs := h.failStatics(); len(fs) != 0 {
		t.Errorf("FailStatic called for a real deregistration: %v", fs)
	}
}

func TestServiceRemovedFromCatalogIsDropped(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	f.Set("api", entry("n1", "api-1", "10.1.0.1", 90))
	h := start(t, f, nil)
	h.next()

	f.Remove("web")
	// Depending on which watch answers first, web may first show up empty.
	var s *Snapshot
	eventually(t, "web dropped", func() bool {
		s = h.next()
		_, ok := s.Service("web")
		return !ok
	})
	if got := s.Names(); !cmp.Equal(got, []string{"api"}) {
		t.Errorf("got services %v; want [api]", got)
	}
	if fs := h.failStatics(); len(fs) != 0 {
		t.Errorf("FailStatic called for a real removal: %v", fs)
	}
	// The web watch stopped: no more health queries for it.
	n := f.Requests("/v1/health/service/web")
	time.Sleep(600 * time.Millisecond)
	if m := f.Requests("/v1/health/service/web"); m > n+1 {
		t.Errorf("web still watched after removal: %d more queries", m-n)
	}

	f.Set("web", entry("n1", "web-1", "10.1.0.9", 80))
	svc, ok := h.next().Service("web")
	if !ok || len(svc.Instances) != 1 || svc.Instances[0].Address != "10.1.0.9" {
		t.Errorf("re-added web: got %+v; want one instance at 10.1.0.9", svc)
	}
}

// TestAgentRestartKeepsLastInstances walks through what a dev agent restart
// does: connections break, the agent comes back with nothing and a low
// index, unrelated registrations carry the index past where it was, and
// only then do our services re-register.
func TestAgentRestartKeepsLastInstances(t *testing.T) {
	for _, tc := range []struct {
		name       string
		index      uint64 // after the restart; it was 17
		wantReason string
	}{
		{"index went backwards", 2, reasonIndexReset},
		// The new agent may already be past the old index when we reach it
		// again: only the lost connection tells.
		{"index moved forward", 40, reasonReconnect},
	} {
		t.Run(tc.name, func(t *testing.T) { testAgentRestart(t, tc.index, tc.wantReason) })
	}
}

func testAgentRestart(t *testing.T, index uint64, wantReason string) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80), entry("n2", "web-2", "10.1.0.2", 80))
	f.Set("api", entry("n1", "api-1", "10.1.0.1", 90))
	for range 5 {
		f.Bump()
	}
	h := start(t, f, nil)
	before := h.next()

	f.Restart(index)
	eventually(t, "FailStatic for web and api", func() bool {
		fs := strings.Join(h.failStatics(), "\n")
		return strings.Contains(fs, "web: ") && strings.Contains(fs, "api: ")
	})
	for _, fs := range h.failStatics() {
		if !strings.Contains(fs, wantReason) {
			t.Errorf("got FailStatic %q; want reason %q", fs, wantReason)
		}
	}
	for range 30 { // well past the index we had before the restart
		f.Bump()
	}
	f.Set("other", entry("n9", "other-1", "10.9.0.1", 1))
	// The only news is the new service; web and api are still held.
	s := h.next()
	want := dump(before) // api, web
	want = []Service{want[0], {Name: "other", Instances: []Instance{inst("n9", "other-1", "10.9.0.1", 1, Healthy)}}, want[1]}
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("while held (-want +got):\n%s", diff)
	}
	h.none(500 * time.Millisecond)

	// web re-registers (one instance so far, at a new address): live data.
	f.Set("web", entry("n1", "web-1", "10.2.0.1", 80))
	s = h.next()
	web, _ := s.Service("web")
	if diff := cmp.Diff([]Instance{inst("n1", "web-1", "10.2.0.1", 80, Healthy)}, web.Instances); diff != "" {
		t.Errorf("web after re-registration (-want +got):\n%s", diff)
	}
	if api, _ := s.Service("api"); len(api.Instances) != 1 {
		t.Errorf("api: got %+v; want its last known instance, still held", api)
	}
	if !strings.Contains(h.logs.String(), "service recovered") {
		t.Errorf("no recovery logged")
	}
	// A forward-moving empty answer for a recovered service is real again.
	f.Set("web")
	web, _ = h.next().Service("web")
	if len(web.Instances) != 0 {
		t.Errorf("web after real deregistration: got %+v; want no instances", web.Instances)
	}
}

// An agent that restarts while the watches are between queries: no query
// fails or is retried, each just dials a new connection and gets the new
// agent's empty answer at a higher index. The fresh connection is the only
// sign, and it must be enough (a CI run under load lost a service this way).
func TestAgentRestartBetweenQueriesKeepsLastInstances(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	f.SetNoBlock(true, false) // every answer at once: the loops sit in their pause
	h := start(t, f, func(c *Config) { c.BackoffMin, c.BackoffMax = 300*time.Millisecond, 300*time.Millisecond })
	h.next()

	time.Sleep(100 * time.Millisecond) // into the pause after the answers
	f.Restart(40)
	eventually(t, "FailStatic for web", func() bool { return len(h.failStatics()) > 0 })
	if fs := h.failStatics(); !strings.Contains(fs[0], reasonReconnect) {
		t.Errorf("got FailStatic %q; want reason %q", fs[0], reasonReconnect)
	}
	h.none(700 * time.Millisecond)
	if strings.Contains(h.logs.String(), "service deregistered") {
		t.Errorf("web was dropped:\n%s", h.logs.String())
	}
}

func TestIndexResetWithoutDisconnectKeepsLastInstances(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	for range 5 {
		f.Bump()
	}
	h := start(t, f, nil)
	before := h.next()

	f.ResetIndex()
	eventually(t, "FailStatic for web", func() bool { return len(h.failStatics()) > 0 })
	if fs := h.failStatics(); !strings.Contains(fs[0], reasonIndexReset) {
		t.Errorf("got FailStatic %q; want the reason to be %q", fs[0], reasonIndexReset)
	}
	h.none(300 * time.Millisecond)
	if w := h.watchErrors(); len(w) != 0 {
		t.Errorf("got watch errors %v; want none", w)
	}

	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	// Same content as before the reset: nothing to publish.
	h.none(300 * time.Millisecond)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80, "svc=critical"))
	s := h.next()
	want := dump(before)
	want[0].Instances[0].Health = Unhealthy
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("after re-registration (-want +got):\n%s", diff)
	}
}

func TestNoLeaderEmptyAnswerIsHeld(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	f.SetStreaming(false) // streaming answers never report a leader
	h := start(t, f, nil)
	h.next()

	f.SetKnownLeader(false)
	f.Set("web")
	eventually(t, "FailStatic", func() bool { return len(h.failStatics()) > 0 })
	if fs := h.failStatics(); !strings.Contains(fs[0], reasonNoLeader) {
		t.Errorf("got FailStatic %q; want reason %q", fs[0], reasonNoLeader)
	}
	h.none(300 * time.Millisecond)
}

func TestStaleHoldExpires(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	f.Set("api", entry("n1", "api-1", "10.1.0.1", 90))
	h := start(t, f, func(c *Config) { c.StaleHold = 700 * time.Millisecond })
	h.next()

	f.ResetIndex()
	f.Set("api") // api comes back listed but empty; web does not come back
	eventually(t, "FailStatic for both", func() bool { return len(h.failStatics()) >= 2 })
	held := time.Now()
	h.none(300 * time.Millisecond)
	// Each hold ends on its own timer: one or two snapshots.
	var s *Snapshot
	for {
		s = h.next()
		api, ok := s.Service("api")
		if ok && len(api.Instances) == 0 && !slices.Contains(s.Names(), "web") {
			break
		}
	}
	if took := time.Since(held); took > 2*time.Second {
		t.Errorf("holds ended after %s; want about 700ms", took)
	}
	if !strings.Contains(h.logs.String(), "stale hold expired") {
		t.Errorf("hold expiry not logged")
	}
}

func TestNegativeStaleHoldIsForever(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	h := start(t, f, func(c *Config) { c.StaleHold = -1 })
	h.next()
	f.ResetIndex()
	eventually(t, "FailStatic", func() bool { return len(h.failStatics()) > 0 })
	h.none(time.Second)
}

func TestServerErrorsBackOffAndKeepLastSnapshot(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	h := start(t, f, func(c *Config) {
		c.BackoffMin = 20 * time.Millisecond
		c.BackoffMax = 100 * time.Millisecond
	})
	h.next()

	before := f.Requests("/v1/health/service/web") + f.Requests("/v1/catalog/services")
	f.Fail(http.StatusInternalServerError, "")
	time.Sleep(time.Second)
	during := f.Requests("/v1/health/service/web") + f.Requests("/v1/catalog/services") - before
	// Two watches, backing off 20ms..100ms: a few dozen retries a second,
	// not the thousands a loop without backoff would make.
	if during < 4 || during > 80 {
		t.Errorf("%d queries in 1s of errors; want backoff between 20ms and 100ms", during)
	}
	errs := h.watchErrors()
	ops := map[string]bool{}
	for _, e := range errs {
		op, _, _ := strings.Cut(e, ": ")
		ops[op] = true
	}
	if !cmp.Equal(ops, map[string]bool{"services": true, "health:web": true}) || !strings.Contains(errs[0], "500") {
		t.Errorf("got WatchError calls %v; want 500s for ops services and health:web", errs)
	}
	if !strings.Contains(h.logs.String(), "level=WARN") || !strings.Contains(h.logs.String(), "op=health:web") {
		t.Errorf("errors not logged at warn with their op:\n%s", h.logs.String())
	}
	h.none(0)

	f.Fail(0, "")
	// Same data as before: recovering publishes nothing.
	h.none(500 * time.Millisecond)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80, "svc=critical"))
	if web, _ := h.next().Service("web"); web.Instances[0].Health != Unhealthy {
		t.Errorf("after recovery: got %v; want unhealthy", web.Instances[0].Health)
	}
}

func TestNoPublishUntilFullSync(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	f.Set("api", entry("n1", "api-1", "10.1.0.1", 90))
	f.Fail(http.StatusInternalServerError, "/v1/health/service/api")
	h := start(t, f, nil)
	h.none(500 * time.Millisecond)
	f.Fail(0, "")
	if got := h.next().Names(); !cmp.Equal(got, []string{"api", "web"}) {
		t.Errorf("first snapshot has %v; want [api web]", got)
	}
}

func TestTokenNeverLogged(t *testing.T) {
	// A port nobody listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name string
		addr func(f *fakeConsul) string
	}{
		{"server errors", func(f *fakeConsul) string {
			f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
			f.Fail(http.StatusForbidden, "")
			return f.Addr()
		}},
		{"connection refused", func(*fakeConsul) string { return deadAddr }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeConsul(t)
			addr := tc.addr(f)
			h := start(t, f, func(c *Config) { c.Address = addr })
			h.w.log.Info("watcher config", "config", h.w.cfg)
			eventually(t, "three errors", func() bool { return len(h.watchErrors()) >= 3 })
			h.stop()
			logs := h.logs.String()
			if !strings.Contains(logs, "consul query failed") {
				t.Errorf("errors were not logged:\n%s", logs)
			}
			if strings.Contains(logs, testToken) {
				t.Errorf("token in logs:\n%s", logs)
			}
			for _, e := range h.watchErrors() {
				if strings.Contains(e, testToken) {
					t.Errorf("token in WatchError: %s", e)
				}
			}
			urls, tokens := f.Seen()
			for _, u := range urls {
				if strings.Contains(u, testToken) {
					t.Errorf("token in request URL %s", u)
				}
			}
			if addr == f.Addr() && !cmp.Equal(tokens, []string{testToken}) {
				t.Errorf("got X-Consul-Token values %q; want the configured token", tokens)
			}
		})
	}
}

func TestConfigHidesToken(t *testing.T) {
	cfg := Config{Address: "consul:8500", Token: testToken}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
	for _, s := range []string{buf.String(), cfg.String(), cfg.GoString()} {
		if strings.Contains(s, testToken) {
			t.Errorf("token in %q", s)
		}
		if !strings.Contains(s, "consul:8500") {
			t.Errorf("address missing from %q", s)
		}
	}
	if got := redactErr(errors.New("GET http://x/?token="+testToken+": boom"), testToken).Error(); strings.Contains(got, testToken) {
		t.Errorf("redactErr left the token in %q", got)
	}
}

func TestNoBusyLoop(t *testing.T) {
	for _, tc := range []struct {
		name      string
		zeroIndex bool
	}{{"index unchanged", false}, {"index zero", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeConsul(t)
			f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
			f.SetNoBlock(true, tc.zeroIndex)
			h := start(t, f, nil) // backoff 5ms..40ms
			h.next()
			n := f.Requests("/v1/health/service/web")
			time.Sleep(time.Second)
			// Unthrottled, this would be thousands.
			if got := f.Requests("/v1/health/service/web") - n; got > 60 {
				t.Errorf("%d queries in 1s against an agent that never blocks; want a throttled loop", got)
			}
			h.none(0)
		})
	}
}

func TestRunStopsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	f := newFakeConsul(t)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		f.Set(name, entry("n1", name+"-1", "10.1.0.1", 80))
	}
	h := start(t, f, nil)
	h.next()
	h.stop()

	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "registry.(*Watcher)") || strings.Contains(stacks, "registry.(*state)") {
		t.Errorf("watcher goroutines still running after Run returned:\n%s", stacks)
	}
	// Run also closes its idle connections; their goroutines wind down.
	f.srv.CloseClientConnections()
	eventually(t, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= base+2 // the fake server's own
	})

	// A second Run on the same watcher works once the first has returned.
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *Snapshot, 1)
	done := make(chan error)
	go func() { done <- h.w.Run(ctx, func(s *Snapshot) { got <- s }) }()
	<-got
	if err := h.w.Run(ctx, func(*Snapshot) {}); err == nil {
		t.Errorf("concurrent Run: got nil error; want one")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRunWithCancelledContext(t *testing.T) {
	w, err := NewWatcher(Config{Address: "127.0.0.1:1"}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx, func(*Snapshot) { t.Error("published") }); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestNewWatcherConfig(t *testing.T) {
	w, err := NewWatcher(Config{}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Address: "127.0.0.1:8500", Scheme: "http", WaitTime: 5 * time.Minute,
		BackoffMin: 250 * time.Millisecond, BackoffMax: 10 * time.Second, StaleHold: 5 * time.Minute}
	if diff := cmp.Diff(want, w.cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	for _, bad := range []Config{
		{Scheme: "ftp"},
		{WaitTime: 11 * time.Minute},
		{WaitTime: -time.Second},
		{BackoffMin: time.Second, BackoffMax: time.Millisecond},
		{BackoffMin: -time.Second},
		{Scheme: "https", CertFile: "client.crt"},
		{Scheme: "https", KeyFile: "client.key"},
		{CAFile: "ca.crt"},
		{TLSServerName: "consul.example"},
	} {
		if _, err := NewWatcher(bad, nil, Hooks{}); err == nil {
			t.Errorf("NewWatcher(%v): got nil error; want one", bad)
		}
	}
}

// TLS files are read when the watcher is made: a missing one is an error
// naming it, not a failure on every query later.
func TestNewWatcherTLSFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-ca.crt")
	_, err := NewWatcher(Config{Scheme: "https", CAFile: missing}, nil, Hooks{})
	if err == nil || !strings.Contains(err.Error(), "no-such-ca.crt") {
		t.Errorf("missing CA file: got %v; want an error naming it", err)
	}
	// A named pipe would hang the start for ever: refused, by name.
	fifo := filepath.Join(t.TempDir(), "ca-pipe.crt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := NewWatcher(Config{Scheme: "https", CAFile: fifo}, nil, Hooks{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("CA file is a named pipe: got %v; want an error naming it", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("NewWatcher hangs on a CA file that is a named pipe")
	}
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "switchyard", Client: true})
	w, err := NewWatcher(Config{
		Scheme:        "https",
		CAFile:        testenv.WriteFile(t, dir, "ca.crt", ca.PEM),
		CertFile:      testenv.WriteFile(t, dir, "client.crt", leaf.CertPEM),
		KeyFile:       testenv.WriteFile(t, dir, "client.key", leaf.KeyPEM),
		TLSServerName: "consul.example",
	}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	tc := w.http.TLSClientConfig
	if tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "consul.example" || tc.InsecureSkipVerify {
		t.Errorf("transport TLS config %+v; want the CA, the client certificate and the server name, verifying", tc)
	}
	if !w.http.ForceAttemptHTTP2 {
		t.Error("HTTP/2 is off: over TLS every watch would need a connection of its own")
	}
}

func TestBackoff(t *testing.T) {
	w := &Watcher{cfg: Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}}
	for n := 1; n <= 40; n++ {
		ceil := min(10*time.Millisecond<<(min(n, 20)-1), 100*time.Millisecond)
		for range 50 {
			if d := w.backoff(n); d < 10*time.Millisecond || d > ceil {
				t.Fatalf("backoff(%d) = %s; want between 10ms and %s", n, d, ceil)
			}
		}
	}
}

// An empty answer right after failed queries is suspect even over the same
// connection and at a forward index: the failures may have been the agent
// losing its state.
func TestEmptyAnswerAfterErrorsIsHeld(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	h := start(t, f, nil)
	h.next()

	f.Fail(http.StatusInternalServerError, "")
	eventually(t, "watch errors", func() bool { return len(h.watchErrors()) >= 4 })
	f.Set("web")
	f.Fail(0, "")
	eventually(t, "FailStatic", func() bool { return len(h.failStatics()) > 0 })
	if fs := h.failStatics(); !strings.Contains(fs[0], reasonReconnect) {
		t.Errorf("got FailStatic %q; want reason %q", fs[0], reasonReconnect)
	}
	h.none(300 * time.Millisecond)
}

// A token file's content is the token sent to Consul (trimmed), read once;
// errors name the file and never carry the token.
func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := testenv.WriteFile(t, dir, "consul.token", []byte("  "+testToken+"\n"))
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	h := start(t, f, func(c *Config) { c.Token, c.TokenFile = "", file })
	h.next()
	if _, tokens := f.Seen(); !slices.Equal(tokens, []string{testToken}) {
		t.Errorf("consul saw tokens %q; want only the file's", tokens)
	}
	if strings.Contains(h.logs.String(), testToken) {
		t.Errorf("the token is in the log:\n%s", h.logs.String())
	}

	empty := testenv.WriteFile(t, dir, "empty.token", []byte("\n"))
	missing := filepath.Join(dir, "missing.token")
	huge := testenv.WriteFile(t, dir, "huge.token", []byte(strings.Repeat("x", 1<<20+1)))
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TokenFile: missing}, missing},
		{Config{TokenFile: empty}, "empty"},
		{Config{TokenFile: file, Token: "other"}, "not both"},
		{Config{TokenFile: dir}, dir + ": not a regular file"},
		{Config{TokenFile: huge}, huge + ": file too large"},
	} {
		_, err := NewWatcher(tc.cfg, nil, Hooks{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), testToken) {
			t.Errorf("NewWatcher(%v): got %v; want an error with %q and no token", tc.cfg, err, tc.want)
		}
	}
}

// A unix:// agent address goes through the watcher's own transport (not
// one consulapi makes for sockets), so its connections are pooled and
// counted like TCP ones: the agent closing them is a loss every watch
// hears of.
func TestUnixSocketAddress(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("web", entry("n1", "web-1", "10.1.0.1", 80))
	sock := filepath.Join(t.TempDir(), "consul.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f.srv.Config.Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h := start(t, f, func(c *Config) { c.Address = "unix://" + sock })
	web, _ := h.next().Service("web")
	if diff := cmp.Diff([]Instance{inst("n1", "web-1", "10.1.0.1", 80, Healthy)}, web.Instances); diff != "" {
		t.Fatalf("web over a unix socket (-want +got):\n%s", diff)
	}
	before := h.w.lost.load()
	srv.Close() // the agent goes away: its connections close under the watches
	eventually(t, "the lost connections counted", func() bool { return h.w.lost.load() > before })
}

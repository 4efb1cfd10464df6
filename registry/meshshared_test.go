package registry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// meshEstate registers n services s000, s001, ... on nodes of their own,
// each with an instance, a sidecar whose upstream is the next service,
// and a leaf from ca (serial 1000+i).
func meshEstate(t *testing.T, f *fakeConsul, ca *testenv.CA, n int) {
	t.Helper()
	for i := range n {
		f.Set(meshName(i), meshInstance(i, "passing"))
		f.Set(meshName(i)+"-sidecar-proxy", meshSidecar(i, 21000+i))
		f.SetLeaf(t, ca, fakeTrustDomain, meshName(i), int64(1000+i))
	}
}

func meshName(i int) string { return fmt.Sprintf("s%03d", i) }

func meshInstance(i int, status string) *consulapi.ServiceEntry {
	name := meshName(i)
	return entry("n"+name, name+"-1", "10.1.0.1", 8000+i, name+"-ttl="+status)
}

// meshSidecar is service i's sidecar on port, its upstream the next
// service (wrapping around) on 9000.
func meshSidecar(i, port int) *consulapi.ServiceEntry {
	name := meshName(i)
	next := meshName((i + 1) % meshServices)
	return sidecarEntry("n"+name, name+"-1", port, 8000+i, nil, []string{next + ":9000"},
		name+"-listening=passing", name+"-alias=passing")
}

const meshServices = 150

// meshHooks records what a MeshWatcher reports through Hooks.Watches and
// Hooks.Request.
type meshHooks struct {
	mu       sync.Mutex
	watches  map[string]int
	peak     map[string]int
	requests map[string]int
	errs     []string
	held     []string // Hooks.FailStatic's names
}

func (h *meshHooks) hooks() Hooks {
	h.watches, h.peak, h.requests = map[string]int{}, map[string]int{}, map[string]int{}
	return Hooks{
		Watches: func(kind string, delta int) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.watches[kind] += delta
			h.peak[kind] = max(h.peak[kind], h.watches[kind])
		},
		Request: func(kind, result string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.requests[kind+"/"+result]++
		},
		WatchError: func(op string, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.errs = append(h.errs, op+": "+err.Error())
		},
		FailStatic: func(name, _ string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.held = append(h.held, name)
		},
	}
}

// meshUntil waits (up to 30 s) for a snapshot cond accepts, the latest
// one included.
type meshUntil func(what string, cond func(*MeshSnapshot) error) *MeshSnapshot

// runMesh runs a MeshWatcher on cfg until the test ends. It returns the
// watcher, a meshUntil, and drain, which returns the snapshots published
// since the last call of either.
func runMesh(t *testing.T, cfg Config, hooks Hooks) (m *MeshWatcher, until meshUntil, drain func() []*MeshSnapshot) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	var err error
	m, err = NewMeshWatcher(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), hooks)
	if err != nil {
		t.Fatal(err)
	}
	snaps := make(chan *MeshSnapshot, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(s *MeshSnapshot) { snaps <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("mesh watcher log:\n%s", logs.String())
		}
	})
	var last *MeshSnapshot
	drain = func() []*MeshSnapshot {
		var out []*MeshSnapshot
		for {
			select {
			case s := <-snaps:
				out = append(out, s)
				last = s
			default:
				return out
			}
		}
	}
	return m, func(what string, cond func(*MeshSnapshot) error) *MeshSnapshot {
		t.Helper()
		deadline := time.After(30 * time.Second)
		err := fmt.Errorf("no snapshot yet")
		if last != nil {
			if err = cond(last); err == nil {
				return last
			}
		}
		for {
			select {
			case s := <-snaps:
				last = s
				if err = cond(s); err == nil {
					return s
				}
			case <-deadline:
				t.Fatalf("%s: no such snapshot within 30s; last: %v", what, err)
				return nil
			}
		}
	}, drain
}

// complete checks that every one of n sidecars is in s with its upstream's
// destination (one usable endpoint unless unusable names it) and its
// service's leaf from serial base+i.
func complete(s *MeshSnapshot, n int, base int64, unusable string) error {
	if got := len(s.SidecarIDs()); got != n {
		return fmt.Errorf("%d sidecars; want %d", got, n)
	}
	for i := range n {
		sc, ok := s.Sidecar(meshName(i) + "-1-sidecar-proxy")
		if !ok || len(sc.Upstreams) != 1 {
			return fmt.Errorf("sidecar of %s: %+v", meshName(i), sc)
		}
		up := sc.Upstreams[0].DestinationName
		d, ok := s.Destination(up)
		want := up != unusable
		if !ok || len(d.Endpoints) != 1 || d.Endpoints[0].Usable() != want {
			return fmt.Errorf("destination %s: %s; want one endpoint, usable %t", up, endpoints(s, up), want)
		}
		l, ok := s.Leaf(meshName(i))
		if !ok || l.SerialNumber != fmt.Sprint(base+int64(i)) {
			return fmt.Errorf("leaf of %s: %v; want serial %d", meshName(i), l.SerialNumber, base+int64(i))
		}
	}
	return nil
}

// multiplexed returns the entries of each kind without a blocking query
// of their own, for tests.
func (m *MeshWatcher) multiplexed() (proxies, dests, leaves []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st
	st.mu.Lock()
	defer st.mu.Unlock()
	for name, ps := range st.proxies {
		if ps.cancel == nil {
			proxies = append(proxies, name)
		}
	}
	for name, ds := range st.dests {
		if ds.cancel == nil {
			dests = append(dests, name)
		}
	}
	for name, ls := range st.leaves {
		if ls.cancel == nil {
			leaves = append(leaves, name)
		}
	}
	return proxies, dests, leaves
}

// TestMeshBeyondThePoolStaysWithinBudget: 150 services with sidecars and
// upstreams need 600 per-name queries; the mesh runs at most
// DefaultMaxMeshWatches of them and multiplexes the rest, within its
// connection budget, and every sidecar's snapshot is complete. A health
// change of a multiplexed destination, a registration change of a
// multiplexed proxy service and a CA rotation each reach the snapshots.
func TestMeshBeyondThePoolStaysWithinBudget(t *testing.T) {
	f := newFakeConsul(t)
	ca := testenv.NewCA(t, "fake connect CA")
	f.SetRoots(fakeTrustDomain, ca)
	meshEstate(t, f, ca, meshServices)

	var h meshHooks
	m, until, _ := runMesh(t, testConfig(f.Addr()), h.hooks())
	until("every sidecar complete", func(s *MeshSnapshot) error { return complete(s, meshServices, 1000, "") })

	proxies, dests, leaves := m.multiplexed()
	if len(proxies) != meshServices-DefaultMaxMeshWatches || len(dests) != meshServices || len(leaves) != meshServices {
		t.Fatalf("multiplexed: %d proxy services, %d destinations, %d leaves; want %d, %d, %d (the pool goes to proxy services first)",
			len(proxies), len(dests), len(leaves), meshServices-DefaultMaxMeshWatches, meshServices, meshServices)
	}

	// A multiplexed destination's instance fails its check.
	f.Set("s100", meshInstance(100, "critical"))
	until("a multiplexed destination's health", func(s *MeshSnapshot) error { return complete(s, meshServices, 1000, "s100") })
	f.Set("s100", meshInstance(100, "passing"))
	until("the destination passing again", func(s *MeshSnapshot) error { return complete(s, meshServices, 1000, "") })

	// A multiplexed proxy service's registration: a new public port.
	f.Set("s149-sidecar-proxy", meshSidecar(149, 31149))
	until("a multiplexed proxy's registration", func(s *MeshSnapshot) error {
		if sc, _ := s.Sidecar("s149-1-sidecar-proxy"); sc.Port != 31149 {
			return fmt.Errorf("s149's sidecar on port %d; want 31149", sc.Port)
		}
		// s148's upstream reaches s149 through that port.
		if got := endpoints(s, "s149"); !strings.Contains(got, ":31149 usable=true") {
			return fmt.Errorf("s149's endpoints: %s", got)
		}
		return nil
	})

	// A CA rotation: new roots first, then the agent re-signs every leaf
	// (as Consul does, a little later).
	ca2 := testenv.NewCA(t, "rotated connect CA")
	f.SetRoots(fakeTrustDomain, ca2, ca)
	time.Sleep(50 * time.Millisecond)
	for i := range meshServices {
		f.SetLeaf(t, ca2, fakeTrustDomain, meshName(i), int64(5000+i))
	}
	until("every leaf renewed after the rotation", func(s *MeshSnapshot) error { return complete(s, meshServices, 5000, "") })

	budget := DefaultMaxMeshWatches + meshFixedConns
	if got := f.PeakConns(); got > budget {
		t.Errorf("%d connections open at once; want at most %d", got, budget)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("peak connections %d (budget %d), peak mesh blocking queries %d, requests %v", f.PeakConns(), budget, h.peak[KindMesh], h.requests)
	// The pool, the proxy list, roots, intentions and the two health-state
	// queries.
	if got, want := h.peak[KindMesh], DefaultMaxMeshWatches+3+len(watchedStates); got > want {
		t.Errorf("%d mesh blocking queries at once; want at most %d", got, want)
	}
	if got, want := h.watches[KindMeshMultiplexed], 3*meshServices-DefaultMaxMeshWatches; got != want {
		t.Errorf("Hooks.Watches mesh-multiplexed = %d; want %d", got, want)
	}
	if h.requests[KindMeshRead+"/"+ResultOK] == 0 {
		t.Errorf("no mesh-read requests reported: %v", h.requests)
	}
	if len(h.errs) > 0 {
		t.Errorf("%d watch errors, first: %s", len(h.errs), h.errs[0])
	}
}

// TestMeshMultiplexedFailStaticAcrossAgentRestart: with a pool of one
// query (api's proxy service), web's proxy service, the destination api
// and both leaves are multiplexed; a restarted agent that lost every
// registration does not take web's sidecar or api's endpoint out of the
// snapshots (their empty answers are suspect and held), and they follow
// Consul again once it has them.
func TestMeshMultiplexedFailStaticAcrossAgentRestart(t *testing.T) {
	f, ca := meshFake(t)
	cfg := testConfig(f.Addr())
	cfg.MaxMeshWatches = 1
	var h meshHooks
	m, until, drain := runMesh(t, cfg, h.hooks())
	whole := func(s *MeshSnapshot) error {
		if len(s.SidecarIDs()) != 2 || !strings.Contains(endpoints(s, "api"), "usable=true") {
			return fmt.Errorf("sidecars %v, api %q", s.SidecarIDs(), endpoints(s, "api"))
		}
		return nil
	}
	until("the first snapshot", whole)
	proxies, dests, leaves := m.multiplexed()
	if len(proxies) != 1 || proxies[0] != "web-sidecar-proxy" || len(dests) != 1 || len(leaves) != 2 {
		t.Fatalf("multiplexed %v %v %v; want web-sidecar-proxy, api and both leaves", proxies, dests, leaves)
	}

	drain()
	f.Restart(3)
	f.SetRoots(fakeTrustDomain, ca) // Consul keeps its CA in raft
	eventually(t, "FailStatic for web's proxy service and api", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Contains(h.held, "web-sidecar-proxy") && slices.Contains(h.held, "api")
	})
	// Reads keep coming (the health-state and proxy list answers moved);
	// give them time to publish a loss if they were going to.
	time.Sleep(300 * time.Millisecond)
	for _, s := range drain() {
		if err := whole(s); err != nil {
			t.Fatalf("a snapshot after the restart lost state: %v", err)
		}
	}

	f.Set("api", entry("n2", "api-1", "10.0.0.2", 8081, "api-1-ttl=passing"))
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21009, 8081, nil, nil, "listening=passing"))
	f.Set("web-sidecar-proxy", sidecarEntry("n1", "web-1", 21010, 8080, nil, []string{"api:9191"}, "listening=passing"))
	until("live again", func(s *MeshSnapshot) error {
		web, _ := s.Sidecar("web-1-sidecar-proxy")
		if got := endpoints(s, "api"); !strings.Contains(got, ":21009 usable=true") || web.Port != 21010 {
			return fmt.Errorf("api %s, web's sidecar on %d", got, web.Port)
		}
		return nil
	})
}

// TestLeafRefreshedWellBeforeItExpires: a multiplexed leaf is read at
// least every leafRefresh, every quarter of its remaining life once that
// is shorter (never more often than leafMinRefresh), and every
// leafRotationPoll after a rotation until its serial changes.
func TestLeafRefreshedWellBeforeItExpires(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		ls   leafState
		want time.Duration
	}{
		{"never read", leafState{}, leafRefresh},
		{"72 h left", leafState{leaf: &Leaf{NotAfter: now.Add(72 * time.Hour)}}, leafRefresh},
		{"8 min left", leafState{leaf: &Leaf{NotAfter: now.Add(8 * time.Minute)}}, 2 * time.Minute},
		{"expired", leafState{leaf: &Leaf{NotAfter: now.Add(-time.Hour)}}, leafMinRefresh},
		{"rotating, not renewed yet", leafState{leaf: &Leaf{SerialNumber: "1", NotAfter: now.Add(72 * time.Hour)},
			rotateFrom: "1", rotateUntil: now.Add(time.Minute)}, leafRotationPoll},
		{"rotating, renewed", leafState{leaf: &Leaf{SerialNumber: "2", NotAfter: now.Add(72 * time.Hour)},
			rotateFrom: "1", rotateUntil: now.Add(time.Minute)}, leafRefresh},
		{"rotation window over", leafState{leaf: &Leaf{SerialNumber: "1", NotAfter: now.Add(72 * time.Hour)},
			rotateFrom: "1", rotateUntil: now.Add(-time.Second)}, leafRefresh},
	} {
		if got := leafDueLocked(&tc.ls, now).Sub(now); got != tc.want {
			t.Errorf("%s: next read in %s; want %s", tc.name, got, tc.want)
		}
	}
}

// TestMeshPoolRefillsWhenAPooledProxyLeaves: the pool's place of a proxy
// service that is deregistered goes to a multiplexed one.
func TestMeshPoolRefillsWhenAPooledProxyLeaves(t *testing.T) {
	f, _ := meshFake(t)
	cfg := testConfig(f.Addr())
	cfg.MaxMeshWatches = 1
	var h meshHooks
	m, until, _ := runMesh(t, cfg, h.hooks())
	until("the first snapshot", func(s *MeshSnapshot) error {
		if len(s.SidecarIDs()) != 2 {
			return fmt.Errorf("sidecars %v", s.SidecarIDs())
		}
		return nil
	})
	if proxies, _, _ := m.multiplexed(); !slices.Equal(proxies, []string{"web-sidecar-proxy"}) {
		t.Fatalf("multiplexed proxy services %v; want web's (api's is first by name)", proxies)
	}
	f.Remove("api-sidecar-proxy")
	until("api's sidecar gone", func(s *MeshSnapshot) error {
		if ids := s.SidecarIDs(); !slices.Equal(ids, []string{"web-1-sidecar-proxy"}) {
			return fmt.Errorf("sidecars %v", ids)
		}
		return nil
	})
	eventually(t, "web's proxy service gets the pool's place", func() bool {
		proxies, _, _ := m.multiplexed()
		return len(proxies) == 0
	})
	f.Set("web-sidecar-proxy", sidecarEntry("n1", "web-1", 21077, 8080, nil, []string{"api:9191"}, "listening=passing"))
	until("web's sidecar through its own query", func(s *MeshSnapshot) error {
		if sc, _ := s.Sidecar("web-1-sidecar-proxy"); sc.Port != 21077 {
			return fmt.Errorf("web's sidecar on %d", sc.Port)
		}
		return nil
	})
}

package registry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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
	}
}

// runMesh runs a MeshWatcher on cfg until the test ends and returns a
// function that waits (up to 10 s) for a snapshot cond accepts.
func runMesh(t *testing.T, cfg Config, hooks Hooks) (*MeshWatcher, func(what string, cond func(*MeshSnapshot) error) *MeshSnapshot) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	m, err := NewMeshWatcher(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), hooks)
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
	return m, func(what string, cond func(*MeshSnapshot) error) *MeshSnapshot {
		t.Helper()
		deadline := time.After(10 * time.Second)
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
				t.Fatalf("%s: no such snapshot within 10s; last: %v", what, err)
				return nil
			}
		}
	}
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
	m, until := runMesh(t, testConfig(f.Addr()), h.hooks())
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

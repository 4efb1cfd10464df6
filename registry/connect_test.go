package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

const fakeTrustDomain = "11111111-2222-3333-4444-555555555555.consul"

type meshHarness struct {
	t      *testing.T
	f      *fakeConsul
	m      *MeshWatcher
	snaps  chan *MeshSnapshot
	done   chan error
	cancel context.CancelFunc
	logs   *testenv.SyncBuffer

	mu         sync.Mutex
	watchErrs  []string
	failStatic []string
	problems   []string
	stopped    bool
}

// meshFake is a fake Consul with a CA, web-1 (upstream api on 9191) and
// api-1, each with a sidecar whose checks pass, and both leaves.
func meshFake(t *testing.T) (*fakeConsul, *testenv.CA) {
	f := newFakeConsul(t)
	ca := testenv.NewCA(t, "fake connect CA")
	f.SetRoots(fakeTrustDomain, ca)
	f.Set("web", entry("n1", "web-1", "10.0.0.1", 8080, "web-1-ttl=passing"))
	f.Set("api", entry("n2", "api-1", "10.0.0.2", 8081, "api-1-ttl=passing"))
	f.Set("web-sidecar-proxy", sidecarEntry("n1", "web-1", 21000, 8080, map[string]any{"protocol": "http"},
		[]string{"api:9191"}, "listening=passing", "alias=passing"))
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21001, 8081, nil, nil, "listening=passing", "alias=passing"))
	f.SetLeaf(t, ca, fakeTrustDomain, "web", 100)
	f.SetLeaf(t, ca, fakeTrustDomain, "api", 101)
	return f, ca
}

func startMesh(t *testing.T, f *fakeConsul, before func(*MeshWatcher)) *meshHarness {
	t.Helper()
	h := &meshHarness{t: t, f: f, snaps: make(chan *MeshSnapshot, 100), done: make(chan error, 1), logs: &testenv.SyncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := NewMeshWatcher(testConfig(f.Addr()), log, Hooks{
		WatchError: func(op string, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.watchErrs = append(h.watchErrs, op+": "+err.Error())
		},
		FailStatic: func(name, reason string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.failStatic = append(h.failStatic, name+": "+reason)
		},
		SidecarProblem: func(id, problem string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.problems = append(h.problems, id+": "+problem)
		},
	})
	if err != nil {
		t.Fatalf("NewMeshWatcher: %v", err)
	}
	h.m = m
	if before != nil {
		before(m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	var inPublish atomic.Int32
	var last *MeshSnapshot
	go func() {
		h.done <- m.Run(ctx, func(s *MeshSnapshot) {
			if n := inPublish.Add(1); n != 1 {
				t.Errorf("publish called concurrently (%d at once)", n)
			}
			defer inPublish.Add(-1)
			if last != nil && s.Equal(last) {
				t.Errorf("published a mesh snapshot equal to the previous one")
			}
			last = s
			h.snaps <- s
		})
	}()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("mesh watcher log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *meshHarness) stop() {
	h.t.Helper()
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	h.mu.Unlock()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatalf("Run did not return within 5s of cancel")
	}
}

func (h *meshHarness) next() *MeshSnapshot {
	h.t.Helper()
	select {
	case s := <-h.snaps:
		return s
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no mesh snapshot published within 5s")
		return nil
	}
}

// until waits for a snapshot for which cond returns nil.
func (h *meshHarness) until(what string, cond func(*MeshSnapshot) error) *MeshSnapshot {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	var err error
	for {
		select {
		case s := <-h.snaps:
			if err = cond(s); err == nil {
				return s
			}
		case <-deadline:
			h.t.Fatalf("%s: no such snapshot within 5s; last: %v", what, err)
			return nil
		}
	}
}

func (h *meshHarness) none(d time.Duration) {
	h.t.Helper()
	select {
	case <-h.snaps:
		h.t.Fatalf("got an unexpected mesh snapshot")
	case <-time.After(d):
	}
}

func (h *meshHarness) recorded() (watchErrs, failStatic, problems []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.watchErrs), slices.Clone(h.failStatic), slices.Clone(h.problems)
}

func endpoints(s *MeshSnapshot, dest string) string {
	d, ok := s.Destination(dest)
	if !ok {
		return "absent"
	}
	var out []string
	for _, ep := range d.Endpoints {
		out = append(out, fmt.Sprintf("%s>%s@%s:%d usable=%t", ep.ProxyID, ep.ServiceID, ep.Address, ep.Port, ep.Usable()))
	}
	return strings.Join(out, " ")
}

func TestMeshInitialSync(t *testing.T) {
	f, _ := meshFake(t)
	h := startMesh(t, f, nil)
	s := h.next()

	if got, want := s.SidecarIDs(), []string{"api-1-sidecar-proxy", "web-1-sidecar-proxy"}; !slices.Equal(got, want) {
		t.Fatalf("sidecars %v; want %v", got, want)
	}
	web, _ := s.Sidecar("web-1-sidecar-proxy")
	want := Sidecar{
		ID: "web-1-sidecar-proxy", Name: "web-sidecar-proxy", Service: "web", ServiceID: "web-1", Node: "n1",
		Address: "10.0.0.2", Port: 21000, Datacenter: "dc1",
		LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080,
		Protocol: "http", Config: map[string]string{"protocol": "http"},
		Upstreams: []Upstream{{
			DestinationType: "service", DestinationName: "api", LocalBindAddress: "127.0.0.1", LocalBindPort: 9191,
		}},
		Health: Healthy,
	}
	if diff := cmp.Diff(want, web); diff != "" {
		t.Errorf("web's sidecar (-want +got):\n%s", diff)
	}
	if api, _ := s.Sidecar("api-1-sidecar-proxy"); api.Protocol != ProtocolTCP || len(api.Upstreams) != 0 {
		t.Errorf("api's sidecar %+v; want protocol tcp (Consul's default) and no upstreams", api)
	}
	if sc, ok := s.SidecarFor("web-1"); !ok || sc.ID != "web-1-sidecar-proxy" {
		t.Errorf("SidecarFor(web-1) = %v, %t", sc.ID, ok)
	}

	if got := endpoints(s, "api"); got != "api-1-sidecar-proxy>api-1@10.0.0.2:21001 usable=true" {
		t.Errorf("api's endpoints: %s", got)
	}
	if got := s.DestinationNames(); !slices.Equal(got, []string{"api"}) {
		t.Errorf("destinations %v; want only api (the one upstream)", got)
	}

	if got := s.LeafServices(); !slices.Equal(got, []string{"api", "web"}) {
		t.Errorf("leaves for %v; want api and web (the services with a sidecar)", got)
	}
	l, _ := s.Leaf("web")
	if l.SPIFFE != "spiffe://"+fakeTrustDomain+"/ns/default/dc/dc1/svc/web" || l.SerialNumber != "100" ||
		!strings.Contains(string(l.KeyPEM), "PRIVATE KEY") || l.NotAfter.Before(time.Now()) {
		t.Errorf("web's leaf: %v serial %s, key of %d bytes, not after %s", l.SPIFFE, l.SerialNumber, len(l.KeyPEM), l.NotAfter)
	}
	r, ok := s.Roots()
	if !ok || r.TrustDomain != fakeTrustDomain || len(r.Roots) != 1 || !r.Roots[0].Active || r.ActiveRootID != "root-1" {
		t.Errorf("roots %+v", r)
	}
	h.none(300 * time.Millisecond) // blocking queries returning with nothing new publish nothing
}

func TestMeshConnectHealthFlip(t *testing.T) {
	f, _ := meshFake(t)
	h := startMesh(t, f, nil)
	h.next()

	// Consul's alias check mirrors api-1's own checks onto its sidecar.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21001, 8081, nil, nil, "listening=passing", "alias=critical"))
	h.until("api-1 unusable", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); got != "api-1-sidecar-proxy>api-1@10.0.0.2:21001 usable=false" {
			return errors.New(got)
		}
		return nil
	})
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21001, 8081, nil, nil, "listening=passing", "alias=passing"))
	h.until("api-1 usable again", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); got != "api-1-sidecar-proxy>api-1@10.0.0.2:21001 usable=true" {
			return errors.New(got)
		}
		return nil
	})
	// A node failing takes the endpoint out too.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21001, 8081, nil, nil, "node:serfHealth=critical", "alias=passing"))
	h.until("api-1 unusable with its node", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.HasSuffix(got, "usable=false") {
			return errors.New(got)
		}
		return nil
	})
}

// TestMeshEndpointNeedsItsInstance: a sidecar registered without Consul's
// alias check still stops being usable when its instance fails, or is
// deregistered.
func TestMeshEndpointNeedsItsInstance(t *testing.T) {
	f, _ := meshFake(t)
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21001, 8081, nil, nil, "own-ttl=passing"))
	h := startMesh(t, f, nil)
	if got := endpoints(h.next(), "api"); !strings.HasSuffix(got, "usable=true") {
		t.Fatalf("api: %s; want usable", got)
	}
	f.Set("api", entry("n2", "api-1", "10.0.0.2", 8081, "api-1-ttl=critical"))
	s := h.until("api-1 critical", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.HasSuffix(got, "usable=false") {
			return errors.New(got)
		}
		return nil
	})
	d, _ := s.Destination("api")
	if ep := d.Endpoints[0]; ep.ProxyHealth != Healthy || ep.ServiceHealth != Unhealthy || ep.Health != Unhealthy {
		t.Errorf("api's endpoint health: proxy %s, service %s, overall %s; want healthy, unhealthy, unhealthy", ep.ProxyHealth, ep.ServiceHealth, ep.Health)
	}
	f.Set("api", entry("n2", "api-1", "10.0.0.2", 8081, "api-1-ttl=passing"))
	h.until("api-1 passing", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.HasSuffix(got, "usable=true") {
			return errors.New(got)
		}
		return nil
	})
	f.Set("api") // listed, no instances: the sidecar fronts nothing
	h.until("api-1 deregistered", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.HasSuffix(got, "usable=false") {
			return errors.New(got)
		}
		return nil
	})
}

// TestMeshQueryCountIndependentOfProxies: 40 instances of web, each with a
// sidecar, cost no more queries than one.
func TestMeshQueryCountIndependentOfProxies(t *testing.T) {
	f, _ := meshFake(t)
	var many []*consulapi.ServiceEntry
	for i := range 40 {
		many = append(many, sidecarEntry(fmt.Sprintf("n%02d", i), fmt.Sprintf("web-%d", i), 21000, 8080, nil, []string{"api:9191"}))
	}
	f.Set("web-sidecar-proxy", many...)
	h := startMesh(t, f, nil)
	s := h.next()
	if n := len(s.SidecarIDs()); n != 41 { // web-0..39 and api-1
		t.Fatalf("%d sidecars; want 41", n)
	}
	want := []string{
		"/v1/agent/connect/ca/leaf/api", "/v1/agent/connect/ca/leaf/web", "/v1/agent/connect/ca/roots",
		"/v1/agent/self", "/v1/catalog/services", "/v1/config/service-intentions",
		"/v1/health/connect/api", "/v1/health/service/api",
		"/v1/health/service/api-sidecar-proxy", "/v1/health/service/web-sidecar-proxy",
	}
	if got := f.Queried(); !slices.Equal(got, want) {
		t.Errorf("queried %v;\nwant %v", got, want)
	}
}

func TestMeshProblemsLoggedOnceAndOthersServed(t *testing.T) {
	f, _ := meshFake(t)
	bad := sidecarEntry("n1", "web-1", 21000, 8080, map[string]any{"protocol": "HTTP3", "connect_timeout_ms": float64(5000)},
		[]string{"api:9191", "billing:9191", "api:9292"})
	bad.Service.Proxy.Upstreams = append(bad.Service.Proxy.Upstreams,
		consulapi.Upstream{DestinationType: consulapi.UpstreamDestTypePreparedQuery, DestinationName: "q", LocalBindPort: 9393})
	f.Set("web-sidecar-proxy", bad)
	h := startMesh(t, f, nil)
	s := h.next()
	web, _ := s.Sidecar("web-1-sidecar-proxy")
	if web.Protocol != ProtocolTCP || len(web.Problems) != 1 || !strings.Contains(web.Problems[0], `"HTTP3"`) {
		t.Errorf("protocol %q, problems %q; want tcp and one problem naming HTTP3", web.Protocol, web.Problems)
	}
	if web.Config["connect_timeout_ms"] != "5000" {
		t.Errorf("config %v; want connect_timeout_ms 5000", web.Config)
	}
	var got []string
	for _, u := range web.Upstreams {
		got = append(got, fmt.Sprintf("%s:%d %q", u.DestinationName, u.LocalBindPort, u.Problem))
	}
	want := []string{
		`api:9191 ""`,
		`billing:9191 "bind address 127.0.0.1:9191 is already used by the upstream to api"`,
		`api:9292 ""`,
		`q:9393 "destination type \"prepared_query\" is not supported (only service)"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upstreams (-want +got):\n%s", diff)
	}
	if names := s.DestinationNames(); !slices.Equal(names, []string{"api"}) {
		t.Errorf("destinations %v; want api only (the bad upstreams are not watched)", names)
	}

	// An unrelated change republishes; the problems are not logged again.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, nil, nil))
	h.until("api moved", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21005") {
			return errors.New(got)
		}
		return nil
	})
	if n := strings.Count(h.logs.String(), "proxy_id=web-1-sidecar-proxy"); n != 1 {
		t.Errorf("web's problems logged %d times; want once", n)
	}
	// The hook runs after the log line, on the publishing goroutine.
	eventually(t, "3 SidecarProblem calls", func() bool { _, _, p := h.recorded(); return len(p) >= 3 })
	_, _, problems := h.recorded()
	if len(problems) != 3 || !strings.HasPrefix(problems[0], "web-1-sidecar-proxy: ") {
		t.Errorf("SidecarProblem calls %q; want 3 for web-1-sidecar-proxy", problems)
	}
}

func TestMeshLeafFailureKeepsLastGood(t *testing.T) {
	f, ca := meshFake(t)
	h := startMesh(t, f, nil)
	first, _ := h.next().Leaf("web")

	f.FailLeaf("web", "rpc error: CA is uninitialized", "")
	eventually(t, "leaf failure reported", func() bool {
		errs, _, _ := h.recorded()
		return slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, "mesh:leaf:web: ") })
	})
	// Something else changes: the published snapshot still has the leaf.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, nil, nil))
	s := h.until("api moved", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21005") {
			return errors.New(got)
		}
		return nil
	})
	if l, ok := s.Leaf("web"); !ok || l.SerialNumber != first.SerialNumber {
		t.Errorf("web's leaf during the failure: %v %s; want the last good one (%s)", ok, l.SerialNumber, first.SerialNumber)
	}

	f.FailLeaf("web", "", "")
	f.SetLeaf(t, ca, fakeTrustDomain, "web", 200)
	h.until("renewed leaf", func(s *MeshSnapshot) error {
		if l, _ := s.Leaf("web"); l.SerialNumber != "200" {
			return fmt.Errorf("serial %s", l.SerialNumber)
		}
		return nil
	})
}

func TestMeshLeafNeverFetchedDoesNotBlockSync(t *testing.T) {
	f, _ := meshFake(t)
	f.FailLeaf("api", "Permission denied", "")
	h := startMesh(t, f, nil)
	s := h.next()
	if _, ok := s.Leaf("api"); ok {
		t.Errorf("api has a leaf; want none (never fetched)")
	}
	if _, ok := s.Leaf("web"); !ok {
		t.Errorf("web has no leaf")
	}
}

// TestMeshKeyNeverPrinted: leaf private keys appear in no log line, hook
// error or formatted value, whatever goes wrong with the leaf.
func TestMeshKeyNeverPrinted(t *testing.T) {
	f, ca := meshFake(t)
	key := f.SetLeaf(t, ca, fakeTrustDomain, "web", 100).KeyPEM
	other := ca.Issue(t, LeafOptionsFor("web", nil, 7))
	h := startMesh(t, f, nil)
	s := h.next()
	l, _ := s.Leaf("web")
	if !bytes.Equal(l.KeyPEM, key) {
		t.Fatalf("the leaf's key is not the one Consul sent")
	}

	// A proxy echoing the key in an error, a truncated answer holding it,
	// and a certificate that does not match the key.
	badLeaf, _ := json.Marshal(consulapi.LeafCert{CertPEM: string(other.CertPEM), PrivateKeyPEM: string(key), ServiceURI: "spiffe://x/svc/web"})
	for _, fail := range []struct{ body, raw string }{
		{body: "upstream said: " + string(key)},
		{raw: `{"SerialNumber":"9","PrivateKeyPEM":` + strings.TrimSuffix(fmt.Sprintf("%q", key), `"`)},
		{raw: string(badLeaf)},
	} {
		h.mu.Lock()
		n := len(h.watchErrs)
		h.mu.Unlock()
		f.FailLeaf("web", fail.body, fail.raw)
		eventually(t, "leaf failure reported", func() bool {
			errs, _, _ := h.recorded()
			return len(errs) > n
		})
	}
	f.FailLeaf("web", "", "")

	var printed bytes.Buffer
	fmt.Fprintf(&printed, "%v %+v %#v %s %q %x\n", l, l, l, l.KeyPEM, l.KeyPEM, l.KeyPEM)
	j, _ := json.Marshal(l)
	printed.Write(j)
	slog.New(slog.NewJSONHandler(&printed, nil)).Info("leaf", "leaf", l, "key", l.KeyPEM, "raw", l)
	slog.New(slog.NewTextHandler(&printed, nil)).Info("leaf", "leaf", l, "key", l.KeyPEM)
	errs, _, _ := h.recorded()
	all := h.logs.String() + strings.Join(errs, "\n") + printed.String()

	body := strings.Split(strings.TrimSpace(string(key)), "\n")[1] // a line of the key's base64
	for _, secret := range []string{"PRIVATE KEY", body[:20]} {
		if strings.Contains(all, secret) {
			t.Errorf("%q appears in logs, errors or formatted leaves:\n%s", secret, all)
		}
	}
	if !strings.Contains(strings.Join(errs, "\n"), "mesh:leaf:web") {
		t.Errorf("the leaf failures were not reported: %q", errs)
	}
}

func TestMeshConnectDisabledIsAClearError(t *testing.T) {
	f, _ := meshFake(t)
	f.SetConnectDisabled(true)
	m, err := NewMeshWatcher(testConfig(f.Addr()), nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	published := make(chan struct{}, 1)
	go func() {
		done <- m.Run(context.Background(), func(*MeshSnapshot) { published <- struct{}{} })
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnectDisabled) || !strings.Contains(err.Error(), "connect { enabled = true }") {
			t.Errorf("Run: %v; want ErrConnectDisabled naming connect { enabled = true }", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s with Connect disabled")
	}
	select {
	case <-published:
		t.Errorf("published a snapshot with Connect disabled")
	default:
	}
}

func TestMeshSidecarDeregisteredDropsItsWatches(t *testing.T) {
	f, _ := meshFake(t)
	h := startMesh(t, f, nil)
	h.next()
	f.Remove("web-sidecar-proxy")
	s := h.until("web's sidecar gone", func(s *MeshSnapshot) error {
		if _, ok := s.Sidecar("web-1-sidecar-proxy"); ok {
			return errors.New("still there")
		}
		return nil
	})
	if _, ok := s.Destination("api"); ok {
		t.Errorf("api is still a destination; no upstream names it any more")
	}
	if got := s.LeafServices(); !slices.Equal(got, []string{"api"}) {
		t.Errorf("leaves %v; want api only", got)
	}
	_, fs, _ := h.recorded()
	if len(fs) != 0 {
		t.Errorf("FailStatic for a real deregistration: %v", fs)
	}
}

func TestMeshWantDestinationsAndLeaves(t *testing.T) {
	f, ca := meshFake(t)
	f.SetLeaf(t, ca, fakeTrustDomain, "edge", 300)
	h := startMesh(t, f, func(m *MeshWatcher) { m.WantLeaves([]string{"edge"}) })
	if s := h.next(); !slices.Equal(s.LeafServices(), []string{"api", "edge", "web"}) {
		t.Errorf("leaves %v; want api, edge, web", s.LeafServices())
	}
	h.m.WantDestinations([]string{"web", "billing"})
	h.until("web and billing watched", func(s *MeshSnapshot) error {
		if got := s.DestinationNames(); !slices.Equal(got, []string{"api", "billing", "web"}) {
			return fmt.Errorf("destinations %v", got)
		}
		if got := endpoints(s, "billing"); got != "" {
			return fmt.Errorf("billing: %s; want no endpoints", got)
		}
		return nil
	})
}

func TestMeshAgentRestartKeepsLastState(t *testing.T) {
	f, ca := meshFake(t)
	h := startMesh(t, f, nil)
	h.next()
	f.Restart(3)
	// The restarted agent knows only its CA (Consul keeps it in raft).
	f.SetRoots(fakeTrustDomain, ca)
	eventually(t, "FailStatic for the sidecars", func() bool {
		_, fs, _ := h.recorded()
		return len(fs) > 0
	})
	time.Sleep(300 * time.Millisecond)
	// Drain: every snapshot published since the restart kept the sidecars
	// and api's endpoint.
	for {
		select {
		case s := <-h.snaps:
			if len(s.SidecarIDs()) != 2 || endpoints(s, "api") == "" || endpoints(s, "api") == "absent" {
				t.Fatalf("a snapshot after the restart lost state: sidecars %v, api %q", s.SidecarIDs(), endpoints(s, "api"))
			}
			continue
		default:
		}
		break
	}
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21009, 8081, nil, nil))
	h.until("api live again", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21009") {
			return errors.New(got)
		}
		return nil
	})
}

func TestMeshConversions(t *testing.T) {
	native := entry("n1", "pay-1", "10.9.0.1", 7000)
	native.Service.Service = "pay"
	native.Service.Connect = &consulapi.AgentServiceConnect{Native: true}
	gw := entry("n1", "gw-1", "10.9.0.2", 7001)
	gw.Service.Kind = consulapi.ServiceKindMeshGateway
	d := destination("pay", "dc1", []*consulapi.ServiceEntry{gw, native})
	if len(d.Endpoints) != 1 || !d.Endpoints[0].Native || d.Endpoints[0].ServiceID != "pay-1" || d.Endpoints[0].Port != 7000 {
		t.Errorf("pay's endpoints %+v; want the native instance only", d.Endpoints)
	}

	e := sidecarEntry("n1", "web-1", 21000, 0, map[string]any{"protocol": " gRPC ", "nested": map[string]any{"a": 1}}, []string{"api:0"})
	e.Service.Proxy.Upstreams[0].Datacenter = "dc2"
	sc := sidecar(e, "dc1")
	if sc.Protocol != ProtocolGRPC || len(sc.Config) != 1 {
		t.Errorf("protocol %q config %v; want grpc and only the scalar key", sc.Protocol, sc.Config)
	}
	if len(sc.Problems) != 1 || !strings.Contains(sc.Problems[0], "LocalServicePort") {
		t.Errorf("problems %q; want one about LocalServicePort", sc.Problems)
	}
	if p := sc.Upstreams[0].Problem; !strings.Contains(p, `datacenter "dc2"`) {
		t.Errorf("upstream problem %q; want the other datacenter named", p)
	}
}

func TestMeshRunStopsEverything(t *testing.T) {
	f, _ := meshFake(t)
	h := startMesh(t, f, nil)
	h.next()
	h.stop()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "registry.(*meshState)") || strings.Contains(stacks, "registry.(*MeshWatcher)") {
		t.Errorf("mesh watcher goroutines still running after Run returned:\n%s", stacks)
	}

	// A second Run works once the first has returned; a concurrent one fails.
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *MeshSnapshot, 1)
	done := make(chan error)
	go func() { done <- h.m.Run(ctx, func(s *MeshSnapshot) { got <- s }) }()
	<-got
	if err := h.m.Run(ctx, func(*MeshSnapshot) {}); err == nil {
		t.Errorf("concurrent Run: got nil error; want one")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestMeshDuplicateProxyIDServedOnceAndReported(t *testing.T) {
	f, _ := meshFake(t)
	f.Set("web-sidecar-proxy",
		sidecarEntry("n1", "web-1", 21000, 8080, nil, []string{"api:9191"}),
		sidecarEntry("n9", "web-1", 21000, 8080, nil, []string{"api:9191"}))
	h := startMesh(t, f, nil)
	s := h.next()
	web, _ := s.Sidecar("web-1-sidecar-proxy")
	if web.Node != "n1" || len(web.Problems) != 1 || !strings.Contains(web.Problems[0], "node n9") {
		t.Errorf("web-1-sidecar-proxy on %s with problems %q; want n1's, naming n9", web.Node, web.Problems)
	}
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, nil, nil))
	h.until("api moved", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21005") {
			return errors.New(got)
		}
		return nil
	})
	_, _, problems := h.recorded()
	if len(problems) != 1 || !strings.HasPrefix(problems[0], "web-1-sidecar-proxy: proxy ID also registered on node n9") {
		t.Errorf("SidecarProblem calls %q; want one for the duplicate", problems)
	}
}

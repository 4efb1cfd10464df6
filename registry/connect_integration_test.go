package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// listen accepts (and closes) connections on a free loopback port, so that
// Consul's default "Connect Sidecar Listening" TCP check of a sidecar
// registered there passes, as it does when its Envoy runs.
func listen(t *testing.T) int {
	t.Helper()
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return port
}

// TestConsulIntegrationMesh proves the mesh watcher against a real Consul
// dev agent with Connect: sidecar registrations as Consul makes them from a
// SidecarService, their upstreams, a destination's connect health following
// its service instance's check (through Consul's alias check), the leaf
// and roots, a CA rotation (both roots trusted, the leaf renewed), and no
// private key in the logs.
func TestConsulIntegrationMesh(t *testing.T) {
	c := testenv.Consul(t)
	client := c.Client(t)
	agent := client.Agent()
	webProxyPort, apiProxyPort := listen(t), listen(t)

	// register registers a service instance with a TTL check and a
	// sidecar; sidecarChecks replace Consul's default sidecar checks (a TCP
	// check on the proxy port and an alias of the instance).
	register := func(name, id string, port, proxyPort int, proxy *consulapi.AgentServiceConnectProxyConfig, sidecarChecks ...*consulapi.AgentServiceCheck) {
		t.Helper()
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			Name: name, ID: id, Port: port,
			Check: &consulapi.AgentServiceCheck{CheckID: id + "-ttl", TTL: "10m", Status: consulapi.HealthPassing},
			Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
				Port: proxyPort, Proxy: proxy, Checks: sidecarChecks,
			}},
		})
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	register("web", "web-1", 8080, webProxyPort, &consulapi.AgentServiceConnectProxyConfig{
		Config:    map[string]any{"protocol": "http"},
		Upstreams: []consulapi.Upstream{{DestinationName: "api", LocalBindPort: 9191}},
	})
	register("api", "api-1", 8081, apiProxyPort, nil)
	// api-2's sidecar has a check of its own and no alias of api-2: its
	// endpoint must still follow api-2's health.
	api2ProxyPort := testenv.FreePort(t)
	register("api", "api-2", 8082, api2ProxyPort, nil,
		&consulapi.AgentServiceCheck{CheckID: "api-2-sidecar-ttl", TTL: "10m", Status: consulapi.HealthPassing})

	w := runMeshWatcher(t, c.HTTPAddr)
	logs := &w.logs
	snap := func() (*MeshSnapshot, error) {
		if s := w.latest(); s != nil {
			return s, nil
		}
		return nil, errors.New("nothing published yet")
	}
	// apiUsable waits for api's two endpoints, api-1's and api-2's
	// sidecars, to be usable or not.
	apiUsable := func(api1, api2 bool) func() error {
		return func() error {
			s, err := snap()
			if err != nil {
				return err
			}
			d, ok := s.Destination("api")
			if !ok || len(d.Endpoints) != 2 {
				return fmt.Errorf("api's endpoints: %+v (present %t); want two", d.Endpoints, ok)
			}
			for i, want := range []struct {
				usable bool
				port   int
			}{{api1, apiProxyPort}, {api2, api2ProxyPort}} {
				ep, id := d.Endpoints[i], fmt.Sprintf("api-%d", i+1)
				if ep.ProxyID != id+"-sidecar-proxy" || ep.ServiceID != id || ep.Port != want.port || ep.Address != "127.0.0.1" {
					return fmt.Errorf("api's endpoint %+v; want %s-sidecar-proxy at 127.0.0.1:%d", ep, id, want.port)
				}
				if ep.Usable() != want.usable {
					return fmt.Errorf("%s's endpoint is %s (proxy %s, service %s); want usable=%t", id, ep.Health, ep.ProxyHealth, ep.ServiceHealth, want.usable)
				}
			}
			return nil
		}
	}

	// The sidecar TCP checks run every 10 s: the first pass can take that long.
	testenv.Eventually(t, 30*time.Second, "api's sidecars usable", apiUsable(true, true))
	s, _ := snap()
	web, ok := s.Sidecar("web-1-sidecar-proxy")
	if !ok {
		t.Fatalf("no web-1-sidecar-proxy; sidecars %v", s.SidecarIDs())
	}
	if web.Service != "web" || web.ServiceID != "web-1" || web.Name != "web-sidecar-proxy" || web.Port != webProxyPort ||
		web.LocalServiceAddress != "127.0.0.1" || web.LocalServicePort != 8080 || web.Protocol != ProtocolHTTP ||
		web.Node != "switchyard-test" || web.Address != "127.0.0.1" || len(web.Problems) != 0 {
		t.Errorf("web's sidecar: %+v", web)
	}
	if len(web.Upstreams) != 1 || !reflect.DeepEqual(web.Upstreams[0], Upstream{DestinationType: "service", DestinationName: "api",
		LocalBindAddress: "127.0.0.1", LocalBindPort: 9191}) {
		t.Errorf("web's upstreams: %+v", web.Upstreams)
	}
	if api, _ := s.Sidecar("api-1-sidecar-proxy"); api.Protocol != ProtocolTCP || api.LocalServicePort != 8081 {
		t.Errorf("api's sidecar: %+v; want protocol tcp (Consul's default), local port 8081", api)
	}

	// Roots and the leaf, checked against what Consul's own API says.
	caRoots, _, err := client.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	roots, ok := s.Roots()
	if !ok || roots.TrustDomain != caRoots.TrustDomain || roots.ActiveRootID != caRoots.ActiveRootID || len(roots.Roots) != 1 {
		t.Fatalf("roots %+v; consul says trust domain %s, active %s", roots, caRoots.TrustDomain, caRoots.ActiveRootID)
	}
	leaf, ok := s.Leaf("web")
	if !ok {
		t.Fatalf("no leaf for web; leaves for %v", s.LeafServices())
	}
	if want := "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/web"; leaf.SPIFFE != want {
		t.Errorf("web's SPIFFE ID %s; want %s", leaf.SPIFFE, want)
	}
	verifyLeaf(t, leaf, roots)

	// api-1's own check fails: its sidecar's alias check follows, and the
	// endpoint is no longer usable; and back.
	if err := agent.UpdateTTL("api-1-ttl", "test", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "api-1's endpoint unusable with api-1 critical", apiUsable(false, true))
	if err := agent.UpdateTTL("api-1-ttl", "test", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "api-1's endpoint usable again", apiUsable(true, true))
	// api-2's sidecar keeps passing; api-2 itself fails.
	if err := agent.UpdateTTL("api-2-ttl", "test", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "api-2's endpoint unusable with api-2 critical", apiUsable(true, false))
	if err := agent.UpdateTTL("api-2-ttl", "test", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "api-2's endpoint usable again", apiUsable(true, true))

	// A CA rotation (a new key type makes the built-in CA generate a new
	// root, cross-signed by the old): both roots are published during the
	// overlap, and the leaf is renewed under the new root.
	if _, err := client.Connect().CASetConfig(&consulapi.CAConfig{
		Provider: "consul",
		Config:   map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048},
	}, nil); err != nil {
		t.Fatalf("rotate the CA: %v", err)
	}
	// Consul's agent spreads leaf renewals after a rotation over up to 30 s.
	testenv.Eventually(t, 60*time.Second, "new root and renewed leaf", func() error {
		s, err := snap()
		if err != nil {
			return err
		}
		r, _ := s.Roots()
		if len(r.Roots) != 2 || r.ActiveRootID == roots.ActiveRootID {
			return fmt.Errorf("roots %d, active %s; want 2 with a new active one", len(r.Roots), r.ActiveRootID)
		}
		l, _ := s.Leaf("web")
		if l.SerialNumber == leaf.SerialNumber {
			return fmt.Errorf("web's leaf is still serial %s", l.SerialNumber)
		}
		return nil
	})
	s, _ = snap()
	r, _ := s.Roots()
	renewed, _ := s.Leaf("web")
	verifyLeaf(t, renewed, r)

	keyLine := strings.Split(strings.TrimSpace(string(leaf.KeyPEM)), "\n")[1]
	for _, secret := range []string{"PRIVATE KEY", keyLine[:20]} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the watcher's log contains %q", secret)
		}
	}
	if !strings.Contains(logs.String(), "spiffe://") {
		t.Errorf("the leaf was not logged at all (its identity should be): the key check above proves nothing")
	}
}

// verifyLeaf checks that the leaf's certificate and key form a pair and
// that the certificate chains to one of the roots.
func verifyLeaf(t *testing.T, l Leaf, r Roots) {
	t.Helper()
	if _, err := tls.X509KeyPair([]byte(l.CertPEM), l.KeyPEM); err != nil {
		t.Errorf("%s's leaf certificate and key: %v", l.Service, err)
	}
	b, _ := pem.Decode([]byte(l.CertPEM))
	if b == nil {
		t.Fatalf("%s's leaf: no PEM certificate", l.Service)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, root := range r.Roots {
		pool.AppendCertsFromPEM([]byte(root.CertPEM))
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("%s's leaf does not verify against the published roots: %v", l.Service, err)
	}
	if !l.NotAfter.Equal(cert.NotAfter) || l.NotAfter.Before(time.Now()) {
		t.Errorf("%s's leaf NotAfter %s; certificate says %s", l.Service, l.NotAfter, cert.NotAfter)
	}
}

// TestConsulIntegrationMeshConnectDisabled: an agent with Connect off makes
// Run fail at once with an error naming the setting.
func TestConsulIntegrationMeshConnectDisabled(t *testing.T) {
	c := testenv.Consul(t, testenv.WithHCL(`connect { enabled = false }`))
	m, err := NewMeshWatcher(Config{Address: c.HTTPAddr, WaitTime: 10 * time.Second}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- m.Run(context.Background(), func(*MeshSnapshot) { t.Error("published with Connect disabled") })
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnectDisabled) || !strings.Contains(err.Error(), "connect { enabled = true }") {
			t.Errorf("Run: %v; want ErrConnectDisabled naming connect { enabled = true }", err)
		}
		t.Logf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s against an agent with Connect disabled")
	}
}

// TestConsulIntegrationMeshIntentions proves the intentions watch against a
// real Consul dev agent: an L4 entry written with ConfigEntries().Set is in
// the next snapshot with Consul's precedence, an L7 one (after the
// service-defaults entry that makes api http, as Consul requires) with its
// permission, a deletion removes it; the one list query blocks on its index;
// the intention default is allow (ACLs are off on a dev agent).
func TestConsulIntegrationMeshIntentions(t *testing.T) {
	c := testenv.Consul(t)
	client := c.Client(t)
	w := runMeshWatcher(t, c.HTTPAddr)
	logs := &w.logs
	intentionsAre := func(want string) func() error {
		return func() error {
			s := w.latest()
			if s == nil {
				return errors.New("nothing published yet")
			}
			if got := intentionsOfSnap(s, "api"); got != want {
				return fmt.Errorf("api's intentions %s; want %s", got, want)
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, "first snapshot, no intentions", intentionsAre("absent"))
	if d := w.latest().IntentionDefault(); d != IntentionAllow {
		t.Errorf("IntentionDefault %q; want allow (ACLs are off on a dev agent)", d)
	}

	// The list query blocks on its index: with nothing written, a query
	// at the current index returns only when its wait ends.
	_, meta, err := client.ConfigEntries().List(consulapi.ServiceIntentions, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, meta2, err := client.ConfigEntries().List(consulapi.ServiceIntentions, &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("a list query at the current index %d returned after %s (index %d); want it to block until its 2 s wait ends", meta.LastIndex, took, meta2.LastIndex)
	}
	// ... and a write wakes it.
	woke := make(chan uint64, 1)
	go func() {
		_, m, err := client.ConfigEntries().List(consulapi.ServiceIntentions, &consulapi.QueryOptions{WaitIndex: meta2.LastIndex, WaitTime: time.Minute})
		if err != nil {
			woke <- 0
			return
		}
		woke <- m.LastIndex
	}()

	set := func(e consulapi.ConfigEntry) {
		t.Helper()
		if ok, _, err := client.ConfigEntries().Set(e, nil); err != nil || !ok {
			t.Fatalf("write %s %s: %t, %v", e.GetKind(), e.GetName(), ok, err)
		}
	}
	set(&consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "api", Sources: []*consulapi.SourceIntention{
		{Name: "web", Action: consulapi.IntentionActionDeny},
		{Name: "*", Action: consulapi.IntentionActionAllow},
	}})
	select {
	case idx := <-woke:
		if idx <= meta2.LastIndex {
			t.Errorf("the blocked list query returned index %d after a write; want more than %d", idx, meta2.LastIndex)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("a write did not wake a blocked list query within 30 s")
	}
	// Precedence 9 and 8: what Consul computes, and what we publish.
	testenv.Eventually(t, 30*time.Second, "L4 intentions", intentionsAre("api: web=deny(9) *=allow(8)"))
	entry, _, err := client.ConfigEntries().Get(consulapi.ServiceIntentions, "api", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range entry.(*consulapi.ServiceIntentionsConfigEntry).Sources {
		if want := precedence("api", s.Name); s.Precedence != want {
			t.Errorf("consul gives source %s precedence %d; we compute %d", s.Name, s.Precedence, want)
		}
	}

	// L7 needs api to speak http.
	set(&consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "api", Protocol: "http"})
	set(&consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "api", Sources: []*consulapi.SourceIntention{
		{Name: "web", Permissions: []*consulapi.IntentionPermission{{
			Action: consulapi.IntentionActionAllow,
			HTTP:   &consulapi.IntentionHTTPPermission{PathPrefix: "/public", Methods: []string{"GET"}},
		}}},
	}})
	testenv.Eventually(t, 30*time.Second, "L7 intentions",
		intentionsAre(`api: web=[{"Action":"allow","HTTP":{"PathExact":"","PathPrefix":"/public","PathRegex":"","Methods":["GET"],"Header":null}}](9)`))

	if _, err := client.ConfigEntries().Delete(consulapi.ServiceIntentions, "api", nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "intentions deleted", intentionsAre("absent"))
	if !strings.Contains(logs.String(), "ACLs are disabled") {
		t.Errorf("the log does not say where the intention default comes from")
	}
}

// TestConsulIntegrationMeshIntentionDefaultACLDeny: on an agent with ACLs
// enabled and default_policy deny, the intention default is deny, read
// from /v1/agent/self with a token that may (management), and from
// Consul's X-Consul-Default-ACL-Policy header with one that may not (no
// agent:read).
func TestConsulIntegrationMeshIntentionDefaultACLDeny(t *testing.T) {
	const mgmt = "6a1b7c1e-8f2d-4c3a-9e5b-0d4f1a2b3c4d"
	c := testenv.Consul(t, testenv.WithHCL(`acl { enabled = true default_policy = "deny" tokens { initial_management = "`+mgmt+`" } }`))
	cfg := consulapi.DefaultConfig()
	cfg.Address, cfg.Token = c.HTTPAddr, mgmt
	admin, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A token that reads services, nodes and intentions, but not the agent.
	var limited string
	testenv.Eventually(t, 30*time.Second, "a limited token", func() error {
		p, _, err := admin.ACL().PolicyCreate(&consulapi.ACLPolicy{
			Name:  "mesh-reader",
			Rules: `service_prefix "" { policy = "read" intentions = "read" } node_prefix "" { policy = "read" }`,
		}, nil)
		if err != nil {
			return err
		}
		tok, _, err := admin.ACL().TokenCreate(&consulapi.ACLToken{Policies: []*consulapi.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
		if err != nil {
			return err
		}
		limited = tok.SecretID
		return nil
	})

	for _, tc := range []struct{ name, token, from string }{
		{"management token", mgmt, "acl.default_policy (/v1/agent/self DebugConfig)"},
		{"no agent:read", limited, "X-Consul-Default-ACL-Policy header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.SyncBuffer
			m, err := NewMeshWatcher(Config{Address: c.HTTPAddr, Token: tc.token, AllowStale: true, WaitTime: 10 * time.Second,
				BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond},
				slog.New(slog.NewTextHandler(&logs, nil)), Hooks{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			got := make(chan *MeshSnapshot, 100)
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx, func(s *MeshSnapshot) { got <- s }) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				if t.Failed() {
					t.Logf("mesh watcher log:\n%s", logs.String())
				}
			}()
			select {
			case s := <-got:
				if d := s.IntentionDefault(); d != IntentionDeny {
					t.Errorf("IntentionDefault %q; want deny (ACLs on, default_policy deny)", d)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no snapshot within 30 s")
			}
			if !strings.Contains(logs.String(), tc.from) {
				t.Errorf("the log does not say the default comes from %s", tc.from)
			}
			if strings.Contains(logs.String(), tc.token) {
				t.Errorf("the token appears in the log")
			}
		})
	}
}

// meshRun is a MeshWatcher running against a real agent until the test
// ends, keeping its latest snapshot and its log.
type meshRun struct {
	mu   sync.Mutex
	snap *MeshSnapshot
	logs testenv.SyncBuffer
}

func (r *meshRun) latest() *MeshSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

func runMeshWatcher(t *testing.T, addr string) *meshRun {
	t.Helper()
	r := &meshRun{}
	m, err := NewMeshWatcher(Config{
		Address:    addr,
		AllowStale: true,
		WaitTime:   10 * time.Second,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(&r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, func(s *MeshSnapshot) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.snap = s
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("mesh watcher log:\n%s", r.logs.String())
		}
	})
	return r
}

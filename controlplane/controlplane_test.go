package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
)

const edgePolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    port: 8443
    tls: { certificates: [shop] }
    hosts:
      - domains: ["*"]
        routes:
          - service: web
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop
certFile: shop.crt
keyFile: shop.key
`

// writeCert writes a certificate for shop.example.com and its key into dir
// and returns the key PEM.
func writeCert(t *testing.T, dir string) string {
	t.Helper()
	leaf := testenv.NewCA(t, "test CA").Issue(t, testenv.LeafOptions{Name: "shop.example.com"})
	testenv.WriteFile(t, dir, "shop.crt", leaf.CertPEM)
	testenv.WriteFile(t, dir, "shop.key", leaf.KeyPEM)
	return string(leaf.KeyPEM)
}

func webSnapshot(web2 registry.Health) *registry.Snapshot {
	return registry.NewSnapshot(registry.Service{Name: "web", Instances: []registry.Instance{
		{ID: "web-1", Node: "a", Address: "10.0.0.1", Port: 80, Datacenter: "dc1", Health: registry.Healthy, Weight: 1},
		{ID: "web-2", Node: "b", Address: "10.0.0.2", Port: 80, Datacenter: "dc1", Health: web2, Weight: 1},
	}})
}

// adminGet asks the server's admin handler for path.
func adminGet(s *Server, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// newTestServer is a server fed directly, without Consul or file watching.
func newTestServer(t *testing.T, logs *bytes.Buffer) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	keyPEM := writeCert(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{PolicyPaths: []string{dir}}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	set, diags := policy.Load(dir)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	s.in.policy = set
	return s, keyPEM
}

func TestHealthFlipChangesOnlyEndpointsVersion(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	before := s.pub.groups["edge"].versions

	s.in.consul = webSnapshot(registry.Unhealthy)
	s.rebuild()
	after := s.pub.groups["edge"].versions

	for typ, v := range before {
		changed := after[typ] != v
		if want := typ == resource.EndpointType; changed != want {
			t.Errorf("%s version changed = %v; want %v (before %s, after %s)", typ, changed, want, v, after[typ])
		}
	}
}

func TestVersionsAreContentHashes(t *testing.T) {
	var logs bytes.Buffer
	a, _ := newTestServer(t, &logs)
	a.in.consul = webSnapshot(registry.Healthy)
	a.rebuild()
	// A second server (a restart, or another replica) with the same inputs
	// serves the same versions, so Envoys see nothing new.
	b, _ := newTestServer(t, &logs)
	b.in.policy = a.in.policy
	b.in.consul = webSnapshot(registry.Healthy)
	b.rebuild()
	for typ, v := range a.pub.groups["edge"].versions {
		if got := b.pub.groups["edge"].versions[typ]; got != v {
			t.Errorf("%s: got version %s on the second server; want %s", typ, got, v)
		}
	}
}

func TestNotReadyUntilConsulAndPolicy(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	h := s.adminHandler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	s.rebuild() // no Consul snapshot yet: must not publish anything
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "Consul") {
		t.Fatalf("readyz before Consul sync: got %d %q; want 503 naming Consul", code, body)
	}
	if _, err := s.cache.GetSnapshot("edge"); err == nil {
		t.Fatal("a snapshot was published before the first Consul sync")
	}
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz after sync: got %d %q; want 200", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz: got %d; want 200", code)
	}
}

func TestDebugConfigRedactsPrivateKeys(t *testing.T) {
	var logs bytes.Buffer
	s, keyPEM := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	rec := adminGet(s, "/debug/config?group=edge")
	if rec.Code != http.StatusOK {
		t.Fatalf("got %d %s; want 200", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	keyBody := strings.Split(keyPEM, "\n")[1] // a line of base64 key material
	if strings.Contains(body, keyBody) || strings.Contains(logs.String(), keyBody) {
		t.Fatal("private key material in /debug/config or the log")
	}
	var out debugConfigResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Resources["Secret"]) != 1 || !strings.Contains(string(out.Resources["Secret"][0]), "[redacted]") {
		t.Fatalf("got secrets %s; want one, with its key redacted", out.Resources["Secret"])
	}
	if len(out.Resources["Cluster"]) != 1 || out.Versions["ClusterLoadAssignment"] == "" {
		t.Fatalf("got %+v; want the web cluster and an endpoints version", out.Versions)
	}

	rec = adminGet(s, "/debug/config?group=nope")
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), `"edge"`) {
		t.Fatalf("unknown group: got %d %s; want 404 listing the groups", rec.Code, rec.Body)
	}
}

func TestNACKIsLoggedAndCounted(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	err := cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: resource.ListenerType, VersionInfo: "abc", ResponseNonce: "7",
		ErrorDetail: &statuspb.Status{Message: "error adding listener 'https': bad cert"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(s.metrics.nacks.WithLabelValues("Listener")); got != 1 {
		t.Errorf("got %v NACKs counted; want 1", got)
	}
	if !strings.Contains(logs.String(), "bad cert") || !strings.Contains(logs.String(), "edge-1") {
		t.Errorf("NACK log lacks Envoy's error detail or the node:\n%s", logs.String())
	}
}

// After a state-of-the-world NACK, the request reaching the cache must
// claim the rejected version, or the cache re-sends it at once, forever.
func TestSotWNACKClaimsRejectedVersion(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	first := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}
	if err := cb.OnStreamRequest(7, first); err != nil {
		t.Fatal(err)
	}
	cb.OnStreamResponse(context.Background(), 7, first, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ListenerType, VersionInfo: "v2", Nonce: "1"})
	nack := &discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: resource.ListenerType, VersionInfo: "v1", ResponseNonce: "1",
		ErrorDetail: &statuspb.Status{Message: "cannot bind"},
	}
	if err := cb.OnStreamRequest(7, nack); err != nil {
		t.Fatal(err)
	}
	if nack.VersionInfo != "v2" {
		t.Fatalf("got request version %q after the NACK; want the rejected %q", nack.VersionInfo, "v2")
	}
	// A delta stream with the same number is another stream.
	if err := cb.OnStreamDeltaRequest(7, &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "edge-2", Cluster: "edge"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "node=edge-2") {
		t.Errorf("the delta stream 7 was taken for the state-of-the-world stream 7:\n%s", logs.String())
	}
}

// A policy directory that defines no proxy group would serve Envoys an
// empty config: it is rejected like any invalid policy, at start and on
// reload, and the last good policy keeps serving.
func TestEmptyPolicyIsRejected(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir)
	var logs testenv.SyncBuffer // the policy goroutine writes while the test reads
	s, err := New(Config{PolicyPaths: []string{dir}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.watchPolicy(ctx) }()
	defer func() { cancel(); <-done }()

	current := func() *policy.Set {
		_, latest := s.in.policies()
		return latest
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s; log:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("empty policy rejected", func() bool {
		return testutil.ToFloat64(s.metrics.policyReloads.WithLabelValues("error")) == 1
	})
	if current() != nil || !strings.Contains(logs.String(), "no proxy group is defined") {
		t.Fatalf("an empty policy directory was accepted; log:\n%s", logs.String())
	}

	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(edgePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("valid policy loaded", func() bool { return current() != nil })
	good := current()

	if err := os.Remove(filepath.Join(dir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor("emptied policy rejected", func() bool {
		return testutil.ToFloat64(s.metrics.policyReloads.WithLabelValues("error")) == 2
	})
	if current() != good {
		t.Fatal("emptying the policy directory replaced the last good policy")
	}
}

// The admin API serves Go's profiler, for operators chasing CPU or memory.
func TestAdminServesPprof(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1"} {
		if rec := adminGet(s, path); rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d, %d bytes; want a profile", path, rec.Code, rec.Body.Len())
		}
	}
}

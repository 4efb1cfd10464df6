package controlplane

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
)

// meshData is web calling api; api has one instance whose health is given;
// db has a sidecar and calls nothing.
func meshData(t *testing.T, apiHealth registry.Health, withRoots bool, sidecars ...string) registry.MeshData {
	t.Helper()
	ca := testenv.NewCA(t, "mesh CA")
	leaf := func(svc string) registry.Leaf {
		l := ca.Issue(t, testenv.LeafOptions{Name: svc})
		return registry.Leaf{Service: svc, CertPEM: string(l.CertPEM), KeyPEM: registry.KeyPEM(l.KeyPEM), NotAfter: time.Unix(1900000000, 0)}
	}
	all := map[string]registry.Sidecar{
		"web": {ID: "web-1-sidecar-proxy", Service: "web", ServiceID: "web-1", Address: "127.0.0.1", Port: 21000, Datacenter: "dc1",
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080, Protocol: "http", Health: registry.Healthy,
			Upstreams: []registry.Upstream{{DestinationType: "service", DestinationName: "api", LocalBindPort: 9191}}},
		"api": {ID: "api-1-sidecar-proxy", Service: "api", ServiceID: "api-1", Address: "127.0.0.1", Port: 21001, Datacenter: "dc1",
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 8081, Protocol: "http", Health: registry.Healthy},
		"db": {ID: "db-1-sidecar-proxy", Service: "db", ServiceID: "db-1", Address: "127.0.0.1", Port: 21002, Datacenter: "dc1",
			LocalServiceAddress: "127.0.0.1", LocalServicePort: 5432, Protocol: "tcp", Health: registry.Healthy},
	}
	d := registry.MeshData{
		Destinations: []registry.Destination{{Name: "api", Endpoints: []registry.Endpoint{{ProxyID: "api-1-sidecar-proxy", ServiceID: "api-1",
			Address: "127.0.0.1", Port: 21001, Datacenter: "dc1", Health: apiHealth, Weight: 1}}}},
		Leaves:           []registry.Leaf{leaf("web"), leaf("api"), leaf("db")},
		IntentionDefault: registry.IntentionAllow,
	}
	if withRoots {
		d.Roots = &registry.Roots{TrustDomain: "11111111-2222-3333-4444-555555555555.consul", Roots: []registry.Root{{ID: "a", CertPEM: string(ca.PEM)}}}
	}
	for _, name := range sidecars {
		d.Sidecars = append(d.Sidecars, all[name])
	}
	return d
}

func newMeshServer(t *testing.T) (*Server, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	s, err := New(Config{PolicyPaths: []string{t.TempDir()}, Mesh: true}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, &logs
}

// A health flip of api changes only the endpoints of api's callers; a
// sidecar that does not call api is not republished. Without CA roots
// nothing is withdrawn. A sidecar gone from Consul is withdrawn (no Envoy
// uses it). /debug/config shows a sidecar's config without its key.
func TestPublishMesh(t *testing.T) {
	s, logs := newMeshServer(t)
	healthy := meshData(t, registry.Healthy, true, "web", "api", "db")
	s.pub.publishMesh(registry.NewMeshSnapshot(healthy), nil)
	web, db := s.pub.groups[sidecarKey("web-1-sidecar-proxy")], s.pub.groups[sidecarKey("db-1-sidecar-proxy")]
	if web == nil || db == nil || s.pub.groups[sidecarKey("api-1-sidecar-proxy")] == nil {
		t.Fatalf("sidecars published: %v; want web, api and db\n%s", groupNames(s), logs)
	}

	flipped := healthy
	flipped.Destinations = meshData(t, registry.Unhealthy, true).Destinations
	s.pub.publishMesh(registry.NewMeshSnapshot(flipped), nil)
	web2, db2 := s.pub.groups[sidecarKey("web-1-sidecar-proxy")], s.pub.groups[sidecarKey("db-1-sidecar-proxy")]
	for typ, v := range web.versions {
		if changed, want := web2.versions[typ] != v, typ == resource.EndpointType; changed != want {
			t.Errorf("web's %s version changed = %v on api's health flip; want %v", typ, changed, want)
		}
	}
	if db2 != db {
		t.Error("db's snapshot was replaced on a flip of a service it does not call")
	}

	noRoots := flipped
	noRoots.Roots = nil
	s.pub.publishMesh(registry.NewMeshSnapshot(noRoots), nil)
	if s.pub.groups[sidecarKey("web-1-sidecar-proxy")] == nil {
		t.Error("web's config withdrawn when Consul had no CA roots; want the last config kept")
	}

	if got := testutil.ToFloat64(s.metrics.leafExpiry.WithLabelValues("web")); got != 1900000000 {
		t.Errorf("switchyard_mesh_leaf_expiry_timestamp_seconds{service=web} = %v; want the leaf's NotAfter", got)
	}

	rec := adminGet(s, "/debug/config?group="+sidecarKey("web-1-sidecar-proxy"))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "PRIVATE KEY") || !strings.Contains(rec.Body.String(), "mesh.leaf") {
		t.Errorf("/debug/config for web's sidecar: %d, key shown or leaf missing:\n%.400s", rec.Code, rec.Body)
	}

	s.pub.publishMesh(registry.NewMeshSnapshot(meshData(t, registry.Unhealthy, true, "web", "api")), nil)
	if s.pub.groups[sidecarKey("db-1-sidecar-proxy")] != nil {
		t.Error("db's config still published after its sidecar left Consul")
	}
	if _, err := s.cache.GetSnapshot(sidecarKey("db-1-sidecar-proxy")); err == nil {
		t.Error("db's snapshot still in the cache")
	}
}

// A sidecar gone from Consul keeps its config while its Envoy is
// connected and for the linger after it leaves (a reconnect finds it),
// then is withdrawn.
func TestGoneSidecarLingers(t *testing.T) {
	s, logs := newMeshServer(t)
	s.pub.publishMesh(registry.NewMeshSnapshot(meshData(t, registry.Healthy, true, "web", "api", "db")), nil)
	key := sidecarKey("db-1-sidecar-proxy")
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "db-1-sidecar-proxy", Cluster: envoy.SidecarNodeCluster}
	if err := cb.OnStreamRequest(7, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	s.pub.publishMesh(registry.NewMeshSnapshot(meshData(t, registry.Healthy, true, "web", "api")), nil)
	if s.pub.groups[key] == nil {
		t.Fatalf("db's config withdrawn while its Envoy is connected\n%s", logs)
	}
	s.px.linger = time.Hour
	cb.OnStreamClosed(7, node)
	s.pub.publishMesh(s.pub.mesh.last, nil)
	if s.pub.groups[key] == nil {
		t.Fatal("db's config withdrawn right after its Envoy disconnected; want it kept for the linger")
	}
	s.px.linger = 0
	s.pub.publishMesh(s.pub.mesh.last, nil)
	if s.pub.groups[key] != nil {
		t.Error("db's config still published after the linger")
	}
}

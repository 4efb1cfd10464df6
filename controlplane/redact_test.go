package controlplane

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-io/switchyard/registry"
)

// Viewing /debug/config redacts the private keys on the page only: the
// secrets in the snapshot cache, and what an Envoy receives over xDS (state
// of the world and delta), still carry the key file's bytes. A redaction
// that changed the served secret in place instead of a copy would blank the
// keys every Envoy gets, and every other test would still pass.
func TestDebugConfigLeavesServedKeysIntact(t *testing.T) {
	var logs bytes.Buffer
	s, keyPEM := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()

	// View the page, for the group and for all groups, more than once.
	for _, path := range []string{"/debug/config?group=edge", "/debug/config", "/debug/config?group=edge"} {
		rec := adminGet(s, path)
		if rec.Code != 200 {
			t.Fatalf("GET %s: got %d %s; want 200", path, rec.Code, rec.Body)
		}
		body := rec.Body.String()
		if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, strings.Split(keyPEM, "\n")[1]) {
			t.Fatalf("GET %s shows the private key:\n%s", path, body)
		}
		if path != "/debug/config" && !strings.Contains(body, "[redacted]") {
			t.Fatalf("GET %s: no redacted key; the test means to view a page that redacts one:\n%s", path, body)
		}
	}

	// The snapshot the cache serves.
	snap, err := s.cache.GetSnapshot("edge")
	if err != nil {
		t.Fatalf("no snapshot for edge: %v", err)
	}
	secrets := snap.GetResources(resource.SecretType)
	if len(secrets) != 1 {
		t.Fatalf("got %d secrets in the snapshot; want 1 (shop)", len(secrets))
	}
	var name string
	for n, r := range secrets {
		name = n
		requireKey(t, "the snapshot cache", r.(*tlsv3.Secret), keyPEM)
	}

	// What an Envoy receives, on both protocols.
	addr := serveXDS(t, s)
	for _, delta := range []bool{false, true} {
		sec := fetchSecret(t, addr, name, delta)
		requireKey(t, map[bool]string{false: "a state-of-the-world xDS stream", true: "a delta xDS stream"}[delta], sec, keyPEM)
	}
}

// requireKey fails unless sec's private key is exactly keyPEM.
func requireKey(t *testing.T, where string, sec *tlsv3.Secret, keyPEM string) {
	t.Helper()
	ds := sec.GetTlsCertificate().GetPrivateKey()
	got := ds.GetInlineBytes()
	if got == nil {
		got = []byte(ds.GetInlineString())
	}
	if string(got) != keyPEM {
		shown := "other key material" // never print a key, even a test one
		if !strings.Contains(string(got), "PRIVATE KEY") {
			shown = string(got)
		}
		t.Fatalf("secret %s in %s: private key is %d bytes (%.40q); want the key file's %d bytes",
			sec.GetName(), where, len(got), shown, len(keyPEM))
	}
}

// serveXDS serves s's xDS on a loopback port until the test ends.
func serveXDS(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := s.newGRPCServer(ctx)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
	})
	return lis.Addr().String()
}

// fetchSecret asks for one secret as an Envoy of group edge would, and
// returns the first response's.
func fetchSecret(t *testing.T, addr, name string, delta bool) *tlsv3.Secret {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	var resources []*anypb.Any
	if delta {
		stream, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{name}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("delta secret %s: %v", name, err)
		}
		for _, r := range resp.GetResources() {
			resources = append(resources, r.GetResource())
		}
	} else {
		stream, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNames: []string{name}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("secret %s: %v", name, err)
		}
		resources = resp.GetResources()
	}
	if len(resources) != 1 {
		t.Fatalf("got %d secrets for %s; want 1", len(resources), name)
	}
	var sec tlsv3.Secret
	if err := resources[0].UnmarshalTo(&sec); err != nil {
		t.Fatal(err)
	}
	if sec.GetName() != name {
		t.Fatalf("got secret %q; want %q", sec.GetName(), name)
	}
	return &sec
}

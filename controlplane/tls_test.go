package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/test/testenv"
)

// xDS TLS settings are checked at start, and errors name the files,
// never their contents.
func TestXDSTLSSettings(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "switchyard"})
	cert := testenv.WriteFile(t, dir, "xds.crt", leaf.CertPEM)
	key := testenv.WriteFile(t, dir, "xds.key", leaf.KeyPEM)
	caFile := testenv.WriteFile(t, dir, "ca.crt", ca.PEM)
	notPEM := testenv.WriteFile(t, dir, "notes.txt", []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.crt")

	for _, tc := range []struct {
		name  string
		files TLSFiles
		want  string // in the error; "" for none
	}{
		{"TLS", TLSFiles{CertFile: cert, KeyFile: key}, ""},
		{"mutual TLS", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: caFile}, ""},
		{"no key", TLSFiles{CertFile: cert}, "give both"},
		{"only a client CA", TLSFiles{ClientCAFile: caFile}, "give both"},
		{"missing certificate", TLSFiles{CertFile: missing, KeyFile: key}, missing},
		{"key is not a key", TLSFiles{CertFile: cert, KeyFile: notPEM}, notPEM},
		{"client CA is not PEM", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: notPEM}, notPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{PolicyPaths: []string{dir}, XDSTLS: tc.files}, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New: got %v; want an error with %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "PRIVATE KEY"):
				t.Fatalf("the error carries key material: %v", err)
			}
		})
	}
}

// within runs f and fails the test if it does not return within a generous
// bound, for code whose bug is never returning.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%s did not return", what)
	}
}

// A named pipe, a device or a huge file given as an xDS TLS file is refused
// at start, naming the file, and a running server that finds one there keeps
// its certificate instead of hanging the handshake that checks the files.
func TestXDSTLSOddFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "switchyard"})
	cert := testenv.WriteFile(t, dir, "xds.crt", leaf.CertPEM)
	key := testenv.WriteFile(t, dir, "xds.key", leaf.KeyPEM)
	fifo := filepath.Join(dir, "fifo.crt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := testenv.WriteFile(t, dir, "huge.crt", append(bytes.Repeat([]byte("#"), 1<<20), leaf.CertPEM...))

	for _, tc := range []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"certificate is a named pipe", TLSFiles{CertFile: fifo, KeyFile: key}, "xds TLS certificate: read " + fifo + ": not a regular file (a named pipe)"},
		{"key is a named pipe", TLSFiles{CertFile: cert, KeyFile: fifo}, "xds TLS key: read " + fifo + ": not a regular file (a named pipe)"},
		{"client CA is endless", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: "/dev/zero"}, "xds TLS client CA: read /dev/zero: not a regular file (a character device)"},
		{"certificate is huge", TLSFiles{CertFile: huge, KeyFile: key}, "xds TLS certificate: read " + huge + ": file too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			within(t, "New", func() {
				_, err = New(Config{PolicyPaths: []string{dir}, XDSTLS: tc.files}, slog.New(slog.DiscardHandler))
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: got %v; want an error with %q", err, tc.want)
			}
		})
	}

	var logs bytes.Buffer
	r := &tlsReloader{files: TLSFiles{CertFile: cert, KeyFile: key}, log: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	loaded, _ := r.current()
	if err := os.Remove(cert); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cert, 0o600); err != nil {
		t.Fatal(err)
	}
	r.checked = time.Time{} // due for a check of the files
	var got *tls.Certificate
	within(t, "a handshake's certificate check", func() { got, _ = r.current() })
	if got != loaded {
		t.Error("the certificate changed; want the one loaded before the file became a named pipe")
	}
	if !strings.Contains(logs.String(), "not a regular file") {
		t.Errorf("no log line saying why the files do not load:\n%s", logs.String())
	}
}

// With groups bound to certificates, a stream gets only the groups its
// client certificate names, on every request that names a node.
func TestBindGroupsToClientCertificates(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.px.bindGroups = true
	ca := testenv.NewCA(t, "test CA")
	leaf, err := x509.ParseCertificate(pemBlock(t, ca.Issue(t, testenv.LeafOptions{Name: "edge", DNS: []string{"edge-canary"}, Client: true}).CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}},
	}}})
	cb := s.px.callbacks()
	request := func(id int64, group string) error {
		return cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "n", Cluster: group}, TypeUrl: resource.ListenerType})
	}
	for id := range int64(3) {
		_ = cb.OnStreamOpen(ctx, 10+id, "")
	}
	if err := request(10, "edge"); err != nil {
		t.Errorf("group edge, named by the certificate's common name: %v", err)
	}
	if err := request(11, "edge-canary"); err != nil {
		t.Errorf("group edge-canary, named by a DNS SAN: %v", err)
	}
	if err := request(12, "payments"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("group payments: got %v; want PermissionDenied", err)
	}
	_ = cb.OnStreamOpen(context.Background(), 2, "") // no client certificate at all
	if err := request(2, "edge"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("no certificate: got %v; want PermissionDenied", err)
	}
	if n := testutil.ToFloat64(s.metrics.refusedStreams.WithLabelValues("certificate")); n != 2 {
		t.Errorf("refused streams counted %v; want 2", n)
	}
	if !strings.Contains(logs.String(), "does not name proxy group") {
		t.Errorf("no log line for the refusal:\n%s", logs.String())
	}

	if _, err := New(Config{PolicyPaths: []string{t.TempDir()}, XDSTLS: TLSFiles{BindGroups: true}}, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "client CA") {
		t.Errorf("binding groups without a client CA: got %v; want an error", err)
	}
}

func pemBlock(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
}

// With groups bound to certificates, a sidecar's Envoy gets only the
// sidecar its certificate names (sidecar.<proxy ID>): not another
// sidecar's identity, and a group's certificate opens no sidecar.
func TestBindSidecarsToClientCertificates(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.px.bindGroups = true
	ca := testenv.NewCA(t, "test CA")
	ctxFor := func(names ...string) context.Context {
		leaf, err := x509.ParseCertificate(pemBlock(t, ca.Issue(t, testenv.LeafOptions{Name: names[0], DNS: names[1:], Client: true}).CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}},
		}}})
	}
	cb := s.px.callbacks()
	request := func(id int64, ctx context.Context, proxyID string) error {
		_ = cb.OnStreamOpen(ctx, id, "")
		return cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: proxyID, Cluster: envoy.SidecarNodeCluster}, TypeUrl: resource.ListenerType})
	}
	if err := request(1, ctxFor("web", SidecarCertName("web-1-sidecar-proxy")), "web-1-sidecar-proxy"); err != nil {
		t.Errorf("web's sidecar with its own certificate: %v", err)
	}
	if err := request(2, ctxFor("web", SidecarCertName("web-1-sidecar-proxy")), "api-1-sidecar-proxy"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("web's certificate asking for api's sidecar: %v; want PermissionDenied", err)
	}
	if err := request(3, ctxFor("api-1-sidecar-proxy"), "api-1-sidecar-proxy"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a certificate naming the bare proxy ID (a group-style name): %v; want PermissionDenied", err)
	}
}

// With groups bound to certificates, the rate limit service's stream (no
// node.cluster, RateLimitConfig) needs a certificate naming
// RateLimitCertName; a group's certificate does not open it.
func TestBindRateLimitServiceToClientCertificate(t *testing.T) {
	s, _ := newTestServer(t, &bytes.Buffer{})
	s.px.bindGroups = true
	ca := testenv.NewCA(t, "test CA")
	ctxFor := func(name string) context.Context {
		leaf, err := x509.ParseCertificate(pemBlock(t, ca.Issue(t, testenv.LeafOptions{Name: name, Client: true}).CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
			PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}},
		}}})
	}
	cb := s.px.callbacks()
	request := func(id int64, ctx context.Context) error {
		_ = cb.OnStreamOpen(ctx, id, "")
		return cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "ratelimit-1"}, TypeUrl: resource.RateLimitConfigType})
	}
	if err := request(1, ctxFor(RateLimitCertName)); err != nil {
		t.Errorf("the rate limit service with its certificate: %v", err)
	}
	if err := request(2, ctxFor("edge")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a group's certificate asking for the rate limits: %v; want PermissionDenied", err)
	}
}

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Envoy reaches Switchyard over mutual TLS, bootstrapped by `switchyard
// bootstrap --xds-ca-file ... --xds-cert-file ...`: it gets its config and
// traffic flows. A client without a certificate from the CA gets nothing,
// a certificate gets only the group it names, and a replaced server
// certificate is served to new connections without a restart.
func TestXDSOverMutualTLS(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{XDSTLS: true})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web.ID {
		t.Fatalf("through an Envoy on mutual TLS xDS: got %d %q %v; want web-1", code, body, err)
	}
	if !e.SwitchyardLogContains(`xds_security="mutual TLS"`) {
		t.Errorf("the startup log does not say xDS is on mutual TLS:\n%s", e.Switchyard.Output())
	}
	x := e.XDSTLS

	// No client certificate: the ADS stream fails.
	creds := credentials.NewTLS(&tls.Config{RootCAs: x.CA.Pool, ServerName: "127.0.0.1"})
	if err := adsListeners(e.XDSAddr, "edge", creds); err == nil {
		t.Error("an xDS client without a certificate got listeners")
	}
	// With Envoy's: it works (the check above can fail).
	cert, err := tls.LoadX509KeyPair(x.EnvoyCert, x.EnvoyKey)
	if err != nil {
		t.Fatal(err)
	}
	withCert := &tls.Config{RootCAs: x.CA.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}
	if err := adsListeners(e.XDSAddr, "edge", credentials.NewTLS(withCert)); err != nil {
		t.Errorf("an xDS client with a certificate from the CA: %v", err)
	}
	// Groups are bound to certificates: edge's certificate gets no other
	// group's config.
	if err := adsListeners(e.XDSAddr, "payments", credentials.NewTLS(withCert)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("edge's certificate asking for group payments: got %v; want PermissionDenied", err)
	}
	if n := e.Metric("switchyard_xds_refused_streams_total", ""); n != 1 {
		t.Errorf("switchyard_xds_refused_streams_total = %v; want 1", n)
	}

	// Rotation: a new certificate in the same files is served to new
	// connections; Envoy's stream carries on.
	next := x.CA.Issue(t, testenv.LeafOptions{Name: "switchyard", Serial: 77, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	writeAtomic(t, x.KeyFile, next.KeyPEM)
	writeAtomic(t, x.CertFile, next.CertPEM)
	testenv.Eventually(t, settle, "the new server certificate served", func() error {
		conn, err := tls.Dial("tcp", e.XDSAddr, withCert)
		if err != nil {
			return err
		}
		defer conn.Close()
		if s := conn.ConnectionState().PeerCertificates[0].SerialNumber; s.Cmp(big.NewInt(77)) != 0 {
			return fmt.Errorf("serial %s", s)
		}
		return nil
	})
	if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web.ID {
		t.Errorf("after the rotation: got %d %q %v; want web-1", code, body, err)
	}
	if strings.Contains(e.Switchyard.Output(), "PRIVATE KEY") {
		t.Errorf("the log shows key material")
	}
}

// adsListeners opens an ADS stream as a node of group and waits for
// listeners.
func adsListeners(addr, group string, creds credentials.TransportCredentials) error {
	return adsListenersAs(addr, &corev3.Node{Id: "probe", Cluster: group}, creds)
}

// adsListenersAs is adsListeners for any node (a sidecar's proxy ID).
func adsListenersAs(addr string, node *corev3.Node, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: resource.ListenerType,
	}); err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetResources()) == 0 {
		return fmt.Errorf("no listeners")
	}
	return nil
}

// writeAtomic replaces a file by renaming a new one over it, as certificate
// tools do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

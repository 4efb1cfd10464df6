package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	consulapi "github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/controlplane"
	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/test/testenv"
)

// Sidecars on mutual TLS xDS with certificates bound to proxies: each
// sidecar's Envoy presents a certificate naming sidecar.<its proxy ID>
// and gets its config (web reaches api through both), while web's
// certificate cannot open api's sidecar, whose config carries api's leaf
// key.
func TestMeshSidecarsBoundToCertificates(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true, XDSTLS: true})
	x := e.XDSTLS
	dir := t.TempDir()
	certFor := func(proxyID string, serial int64) []string {
		c := x.CA.Issue(t, testenv.LeafOptions{Name: proxyID, DNS: []string{controlplane.SidecarCertName(proxyID)}, Serial: serial, Client: true})
		return []string{"--xds-ca-file", x.CAFile,
			"--xds-cert-file", testenv.WriteFile(t, dir, proxyID+".crt", c.CertPEM),
			"--xds-key-file", testenv.WriteFile(t, dir, proxyID+".key", c.KeyPEM)}
	}
	apiSidecar, webSidecar, bind := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	registerWithSidecar(t, e, "api", "api-1", "http", startAPIApp(t, "api-1"), apiSidecar)
	registerWithSidecar(t, e, "web", "web-1", "http", testenv.FreePort(t), webSidecar,
		consulapi.Upstream{DestinationName: "api", LocalBindPort: bind})
	startSidecar(t, e, "api-1", certFor("api-1-sidecar-proxy", 10)...)
	webArgs := certFor("web-1-sidecar-proxy", 11)
	startSidecar(t, e, "web-1", webArgs...)
	testenv.Eventually(t, 60*time.Second, "web reaches api through sidecars on bound xDS certificates", func() error {
		code, b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", bind), nil)
		if err == nil && (code != http.StatusOK || !strings.HasPrefix(b, "api-1")) {
			err = fmt.Errorf("got %d %q", code, b)
		}
		return err
	})

	webCert, err := tls.LoadX509KeyPair(webArgs[3], webArgs[5])
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: x.CA.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{webCert}})
	asProxy := func(id string) error {
		return adsListenersAs(e.XDSAddr, &corev3.Node{Id: id, Cluster: envoy.SidecarNodeCluster}, creds)
	}
	if err := asProxy("web-1-sidecar-proxy"); err != nil {
		t.Errorf("web's certificate asking for web's sidecar: %v", err)
	}
	if err := asProxy("api-1-sidecar-proxy"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("web's certificate asking for api's sidecar: %v; want PermissionDenied", err)
	}
	// The edge group's certificate (named "edge") opens no sidecar either.
	edgeCert, err := tls.LoadX509KeyPair(x.EnvoyCert, x.EnvoyKey)
	if err != nil {
		t.Fatal(err)
	}
	edgeCreds := credentials.NewTLS(&tls.Config{RootCAs: x.CA.Pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{edgeCert}})
	if err := adsListenersAs(e.XDSAddr, &corev3.Node{Id: "api-1-sidecar-proxy", Cluster: envoy.SidecarNodeCluster}, edgeCreds); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the edge group's certificate asking for api's sidecar: %v; want PermissionDenied", err)
	}
	if strings.Contains(e.Switchyard.Output(), "PRIVATE KEY") {
		t.Errorf("the log shows key material")
	}
}

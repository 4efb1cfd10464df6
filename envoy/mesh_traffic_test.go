package envoy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
	"github.com/switchyard-io/switchyard/translator/ir"
)

const trafficTD = "11111111-2222-3333-4444-555555555555.consul"

// TestMeshTraffic runs real Envoys with the resources the builders make
// (as static config, see staticSidecarConfig) and sends real requests:
// web's app -> web's sidecar (upstream listener) -> mutual TLS -> api's
// sidecar (intentions) -> api's app. It proves that the TLS on both sides
// fits together (SNI, SPIFFE SAN, roots, leaves), that the caller's
// identity reaches the app, and that intentions decide as Consul's do:
// L7 permissions in order with the default for no match, a named source
// before "*", and a client without a mesh certificate refused at the
// handshake.
func TestMeshTraffic(t *testing.T) {
	ca := testenv.NewCA(t, "Consul CA")
	var mu sync.Mutex
	var xfcc []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		xfcc = append(xfcc, r.Header.Get("X-Forwarded-Client-Cert"))
		mu.Unlock()
		fmt.Fprintf(w, "api %s %s", r.Method, r.URL.Path)
	}))
	defer app.Close()
	appPort := app.Listener.Addr().(*net.TCPAddr).Port

	apiPublic, webPublic, webUpstream := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	sni := ir.MeshSNI("api", "dc1", trafficTD)
	mesh := &ir.Mesh{
		Roots: ir.MeshRoots{TrustDomain: trafficTD, RootsPEM: string(ca.PEM)},
		Clusters: []ir.MeshCluster{{
			Service: "api", Datacenter: "dc1", SNI: sni, SPIFFEID: ir.SPIFFEID(trafficTD, "dc1", "api"),
			Protocol:  ir.ProtocolHTTP,
			Endpoints: []ir.Endpoint{{ID: "api-1-sidecar-proxy", Address: "127.0.0.1", Port: uint32(apiPublic), Health: ir.Healthy, Weight: 1}},
		}},
	}
	api := &ir.Sidecar{
		ProxyID: "api-1-sidecar-proxy", Service: "api", TrustDomain: trafficTD,
		PublicAddress: "127.0.0.1", PublicPort: uint32(apiPublic),
		LocalAddress: "127.0.0.1", LocalPort: uint32(appPort),
		Protocol: ir.ProtocolHTTP,
		Intentions: ir.Intentions{Default: ir.Deny, Rules: []ir.Intention{
			{Source: "web", Permissions: []ir.Permission{
				{Action: ir.Deny, HTTP: &ir.PermissionHTTP{Methods: []string{"POST"}}},
				{Action: ir.Allow, HTTP: &ir.PermissionHTTP{PathPrefix: "/public"}},
			}},
			{Source: "billing", Action: ir.Deny},
			{Source: "*", Action: ir.Allow},
		}},
		Leaf: leafFor(t, ca, "api"),
	}
	web := &ir.Sidecar{
		ProxyID: "web-1-sidecar-proxy", Service: "web", TrustDomain: trafficTD,
		PublicAddress: "127.0.0.1", PublicPort: uint32(webPublic),
		LocalAddress: "127.0.0.1", LocalPort: 1, // web's own app is not called here
		Protocol:   ir.ProtocolHTTP,
		Intentions: ir.Intentions{Default: ir.Deny},
		Upstreams: []ir.Upstream{{Destination: "api", BindAddress: "127.0.0.1", BindPort: uint32(webUpstream),
			Protocol: ir.ProtocolHTTP, Cluster: sni}},
		Leaf: leafFor(t, ca, "web"),
	}
	for _, s := range []*ir.Sidecar{api, web} {
		admin := testenv.FreePort(t)
		testenv.StartEnvoy(t, s.ProxyID, string(staticSidecarConfig(t, s, mesh, admin)), testenv.Addr(admin))
	}

	// Through web's sidecar, as web's app calls api.
	viaWeb := "http://" + testenv.Addr(webUpstream)
	testenv.Eventually(t, 10*time.Second, "GET /public through web's sidecar", func() error {
		return expectStatus(http.DefaultClient, "GET", viaWeb+"/public/x", 200)
	})
	mu.Lock()
	got := xfcc[len(xfcc)-1]
	mu.Unlock()
	if want := "URI=" + ir.SPIFFEID(trafficTD, "dc1", "web"); !strings.Contains(got, want) {
		t.Errorf("api's app got x-forwarded-client-cert %q; want it to carry %q", got, want)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/public/x", 403},  // the first permission denies POST
		{"GET", "/private", 403},    // no permission matches: the default, deny
		{"GET", "//public/x", 200},  // normalized to /public/x
		{"GET", "/%70ublic/x", 200}, // normalized to /public/x
		{"GET", "/public%2Fx", 400}, // an escaped slash is refused
	} {
		if err := expectStatus(http.DefaultClient, tc.method, viaWeb+tc.path, tc.want); err != nil {
			t.Errorf("web: %v", err)
		}
	}

	// Straight to api's public port, as other services' sidecars would.
	apiURL := "https://" + testenv.Addr(apiPublic) + "/public/x"
	for _, tc := range []struct {
		service string
		want    int
	}{
		{"billing", 403},  // its own deny rule, before "*"
		{"checkout", 200}, // "*": allow
	} {
		if err := expectStatus(meshClient(t, leafFor(t, ca, tc.service), sni), "GET", apiURL, tc.want); err != nil {
			t.Errorf("%s: %v", tc.service, err)
		}
	}
	// A caller cannot forge the identity the app sees.
	req, err := http.NewRequest("GET", apiURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-Client-Cert", "URI=spiffe://evil/ns/default/dc/dc1/svc/admin")
	resp, err := meshClient(t, leafFor(t, ca, "checkout"), sni).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	got = xfcc[len(xfcc)-1]
	mu.Unlock()
	if strings.Contains(got, "evil") || !strings.Contains(got, "URI="+ir.SPIFFEID(trafficTD, "dc1", "checkout")) {
		t.Errorf("api's app got x-forwarded-client-cert %q; want only checkout's verified identity", got)
	}
	// No client certificate, or one from another CA: no TLS session.
	other := testenv.NewCA(t, "another CA")
	for name, c := range map[string]*http.Client{
		"no certificate": meshClient(t, ir.MeshLeaf{}, sni),
		"another CA":     meshClient(t, leafFor(t, other, "web"), sni),
	} {
		resp, err := c.Get(apiURL)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: got status %d; want the TLS handshake refused", name, resp.StatusCode)
		}
	}
}

// TestMeshTrafficTCP: a tcp sidecar with default deny passes the allowed
// caller's bytes to its app and closes other callers' connections.
func TestMeshTrafficTCP(t *testing.T) {
	ca := testenv.NewCA(t, "Consul CA")
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	public, admin := testenv.FreePort(t), testenv.FreePort(t)
	db := &ir.Sidecar{
		ProxyID: "db-1-sidecar-proxy", Service: "db", TrustDomain: trafficTD,
		PublicAddress: "127.0.0.1", PublicPort: uint32(public),
		LocalAddress: "127.0.0.1", LocalPort: uint32(echo.Addr().(*net.TCPAddr).Port),
		Protocol:   ir.ProtocolTCP,
		Intentions: ir.Intentions{Default: ir.Deny, Rules: []ir.Intention{{Source: "api", Action: ir.Allow}}},
		Leaf:       leafFor(t, ca, "db"),
	}
	mesh := &ir.Mesh{Roots: ir.MeshRoots{TrustDomain: trafficTD, RootsPEM: string(ca.PEM)}}
	testenv.StartEnvoy(t, db.ProxyID, string(staticSidecarConfig(t, db, mesh, admin)), testenv.Addr(admin))

	roundTrip := func(caller string) (string, error) {
		cfg := meshTLS(t, leafFor(t, ca, caller), ir.MeshSNI("db", "dc1", trafficTD))
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", testenv.Addr(public), cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return string(buf), err
	}
	testenv.Eventually(t, 10*time.Second, "api's bytes echoed through db's sidecar", func() error {
		got, err := roundTrip("api")
		if err != nil || got != "ping" {
			return fmt.Errorf("got %q, %v; want ping", got, err)
		}
		return nil
	})
	if got, err := roundTrip("web"); err == nil {
		t.Errorf("web (no intention, default deny) got %q back; want the connection closed", got)
	}
}

// leafFor issues a service's Connect leaf (SPIFFE ID in dc1).
func leafFor(t *testing.T, ca *testenv.CA, service string) ir.MeshLeaf {
	t.Helper()
	cert, key := spiffeLeaf(t, ca, ir.SPIFFEID(trafficTD, "dc1", service))
	return ir.MeshLeaf{Service: service, CertPEM: cert, KeyPEM: ir.PrivateKey(key)}
}

// meshTLS is a test caller's TLS: its leaf (none when empty) and the SNI.
// It does not verify the server: these tests are about what the sidecar
// accepts.
func meshTLS(t *testing.T, leaf ir.MeshLeaf, sni string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if leaf.CertPEM != "" {
		pair, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.KeyPEM.Reveal()))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func meshClient(t *testing.T, leaf ir.MeshLeaf, sni string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: meshTLS(t, leaf, sni)}}
}

func expectStatus(c *http.Client, method, url string, want int) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: got status %d (%q); want %d", method, url, resp.StatusCode, body, want)
	}
	return nil
}

// TestMeshTrafficHTTP2: an http2 destination is called in HTTP/2 from its
// caller's sidecar to its own, and its h2c app gets HTTP/2 (what gRPC
// needs), while the calling app speaks HTTP/1.1 to its upstream listener.
func TestMeshTrafficHTTP2(t *testing.T) {
	ca := testenv.NewCA(t, "Consul CA")
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto %d", r.ProtoMajor)
	})}
	app.Protocols = new(http.Protocols)
	app.Protocols.SetUnencryptedHTTP2(true) // h2c only: HTTP/1.1 would fail
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(ln) }()
	defer app.Close()

	apiPublic, webPublic, webUpstream := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	sni := ir.MeshSNI("api", "dc1", trafficTD)
	mesh := &ir.Mesh{
		Roots: ir.MeshRoots{TrustDomain: trafficTD, RootsPEM: string(ca.PEM)},
		Clusters: []ir.MeshCluster{{
			Service: "api", Datacenter: "dc1", SNI: sni, SPIFFEID: ir.SPIFFEID(trafficTD, "dc1", "api"),
			Protocol:  ir.ProtocolHTTP2,
			Endpoints: []ir.Endpoint{{ID: "api-1-sidecar-proxy", Address: "127.0.0.1", Port: uint32(apiPublic), Health: ir.Healthy, Weight: 1}},
		}},
	}
	api := &ir.Sidecar{
		ProxyID: "api-1-sidecar-proxy", Service: "api", TrustDomain: trafficTD,
		PublicAddress: "127.0.0.1", PublicPort: uint32(apiPublic),
		LocalAddress: "127.0.0.1", LocalPort: uint32(ln.Addr().(*net.TCPAddr).Port),
		Protocol:   ir.ProtocolHTTP2,
		Intentions: ir.Intentions{Default: ir.Allow},
		Leaf:       leafFor(t, ca, "api"),
	}
	web := &ir.Sidecar{
		ProxyID: "web-1-sidecar-proxy", Service: "web", TrustDomain: trafficTD,
		PublicAddress: "127.0.0.1", PublicPort: uint32(webPublic),
		LocalAddress: "127.0.0.1", LocalPort: 1,
		Protocol:   ir.ProtocolHTTP,
		Intentions: ir.Intentions{Default: ir.Deny},
		Upstreams: []ir.Upstream{{Destination: "api", BindAddress: "127.0.0.1", BindPort: uint32(webUpstream),
			Protocol: ir.ProtocolHTTP2, Cluster: sni}},
		Leaf: leafFor(t, ca, "web"),
	}
	for _, s := range []*ir.Sidecar{api, web} {
		admin := testenv.FreePort(t)
		testenv.StartEnvoy(t, s.ProxyID, string(staticSidecarConfig(t, s, mesh, admin)), testenv.Addr(admin))
	}
	testenv.Eventually(t, 10*time.Second, "HTTP/2 through both sidecars", func() error {
		resp, err := http.Get("http://" + testenv.Addr(webUpstream) + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "proto 2" {
			return fmt.Errorf("got %d %q; want 200 \"proto 2\"", resp.StatusCode, body)
		}
		return nil
	})
}

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// tlsPolicy is an HTTPS listener with two certificates, one per domain.
// %[1]s is the directory holding the certificate and key files.
const tlsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    address: 127.0.0.1
    port: {{port}}
    tls: { certificates: [shop-cert, admin-cert] }
    hosts:
      - domains: [shop.example.com]
        routes:
          - service: shop
      - domains: [admin.example.com]
        routes:
          - service: admin
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop-cert
certFile: %[1]s/shop.crt
keyFile: %[1]s/shop.key
---
apiVersion: switchyard.io/v1
kind: Certificate
name: admin-cert
certFile: %[1]s/admin.crt
keyFile: %[1]s/admin.key
`

// Scenario 8: an HTTPS listener with two certificates serves each domain
// its own certificate (SNI), and a certificate replaced on disk is served
// within seconds without restarting Envoy. The private keys never show in
// Switchyard's debug output or log.
func TestTLSCertificatesBySNIAndRotation(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		ca := newTestCA(t)
		certDir := t.TempDir()
		shop := ca.issue(t, "shop.example.com", 1001)
		admin := ca.issue(t, "admin.example.com", 2001)
		shop.write(t, certDir, "shop")
		admin.write(t, certDir, "admin")

		e := NewEnv(t, delta, map[string]string{"edge.yaml": fmt.Sprintf(tlsPolicy, certDir)})
		e.StartBackend("shop", "shop-1")
		e.StartBackend("admin", "admin-1")
		e.WaitHosts("shop", 1, 1)
		e.WaitHosts("admin", 1, 1)
		addr := testenv.Addr(e.Port)
		pid := envoyPID(t, e)

		// Each server name gets its own certificate, verified against the
		// test CA, and its requests reach its backend.
		for _, c := range []struct {
			name, backend string
			serial        int64
		}{{"shop.example.com", "shop-1", 1001}, {"admin.example.com", "admin-1", 2001}} {
			leaf, err := tlsLeaf(addr, c.name, ca.pool)
			if err != nil {
				t.Fatalf("TLS handshake for %s: %v", c.name, err)
			}
			if leaf.SerialNumber.Int64() != c.serial || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != c.name {
				t.Fatalf("SNI %s: served certificate serial %s for %v; want serial %d for [%s]",
					c.name, leaf.SerialNumber, leaf.DNSNames, c.serial, c.name)
			}
			code, body, err := httpsGet(addr, c.name, false, ca.pool, "/")
			if err != nil || code != http.StatusOK || body != c.backend {
				t.Fatalf("GET https://%s/ (Host: %[1]s): got %d %q, %v; want 200 %q", c.name, code, body, err, c.backend)
			}
			// A client that connects to the listener's port directly names
			// the port in Host; the domain has no port and must still match.
			code, body, err = httpsGet(addr, c.name, true, ca.pool, "/")
			if err != nil || code != http.StatusOK || body != c.backend {
				t.Errorf("GET https://%s:%d/ (Host: %[1]s:%[2]d): got %d %q, %v; want 200 %q", c.name, e.Port, code, body, err, c.backend)
			}
		}

		// The debug page shows the certificates, never a private key.
		checkDebugConfig(t, e, []*testCert{shop, admin})

		// Rotate shop's certificate and key as certificate tools do: a new
		// file renamed over the old one, the certificate then the key.
		shop2 := ca.issue(t, "shop.example.com", 1002)
		shop2.write(t, certDir, "shop")
		rotated := time.Now()
		var leaf *x509.Certificate
		testenv.Eventually(t, settle, "envoy serves the rotated shop certificate", func() error {
			var err error
			leaf, err = tlsLeaf(addr, "shop.example.com", ca.pool)
			if err != nil {
				return err
			}
			if leaf.SerialNumber.Int64() != 1002 {
				return fmt.Errorf("serial %s", leaf.SerialNumber)
			}
			return nil
		})
		t.Logf("rotated certificate served after %s", time.Since(rotated).Round(time.Millisecond))
		if got := envoyPID(t, e); got != pid {
			t.Fatalf("envoy pid changed from %d to %d: rotation must not restart Envoy", pid, got)
		}
		if l, err := tlsLeaf(addr, "admin.example.com", ca.pool); err != nil {
			t.Fatalf("TLS handshake for admin.example.com after rotating shop: %v", err)
		} else if l.SerialNumber.Int64() != 2001 {
			t.Fatalf("admin.example.com after rotating shop: serial %s; want 2001", l.SerialNumber)
		}
		code, body, err := httpsGet(addr, "shop.example.com", false, ca.pool, "/")
		if err != nil || code != http.StatusOK || body != "shop-1" {
			t.Fatalf("GET https://shop.example.com/ after rotation: got %d %q, %v; want 200 \"shop-1\"", code, body, err)
		}
		checkDebugConfig(t, e, []*testCert{shop2, admin})

		for _, c := range []*testCert{shop, shop2, admin} {
			if leak := c.keyLeak(e.Switchyard.Output()); leak != "" {
				t.Fatalf("switchyard's log contains private key material of %s: %q", c.name, leak)
			}
		}
	})
}

// checkDebugConfig asserts /debug/config?group=edge carries every
// certificate and no private key.
func checkDebugConfig(t *testing.T, e *Env, certs []*testCert) {
	t.Helper()
	code, body, err := httpGet("http://"+e.AdminAddr+"/debug/config?group=edge", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("/debug/config?group=edge: %d %v\n%s", code, err, body)
	}
	// The PEM is inside JSON strings (newlines escaped): compare decoded.
	var doc any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/debug/config is not JSON: %v\n%s", err, body)
	}
	var decoded strings.Builder
	jsonStrings(doc, &decoded)
	for _, c := range certs {
		if !strings.Contains(decoded.String(), string(c.certPEM)) {
			t.Fatalf("/debug/config?group=edge does not contain the %s certificate (serial %d):\n%s", c.name, c.serial, body)
		}
		for _, s := range []string{body, decoded.String()} {
			if leak := c.keyLeak(s); leak != "" {
				t.Fatalf("/debug/config?group=edge contains private key material of %s: %q", c.name, leak)
			}
		}
	}
}

// jsonStrings writes every string (keys and values) in a decoded JSON value.
func jsonStrings(v any, w *strings.Builder) {
	switch v := v.(type) {
	case string:
		w.WriteString(v)
		w.WriteByte('\n')
	case []any:
		for _, x := range v {
			jsonStrings(x, w)
		}
	case map[string]any:
		for k, x := range v {
			w.WriteString(k)
			w.WriteByte('\n')
			jsonStrings(x, w)
		}
	}
}

// tlsLeaf does a fresh TLS handshake (no session resumption) with the given
// server name, verifying the chain and the name against roots, and returns
// the leaf certificate the server sent.
func tlsLeaf(addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		Config:    &tls.Config{ServerName: serverName, RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// httpsGet sends one HTTPS request for https://serverName:port/path to
// addr, with SNI serverName and the certificate verified. The Host header
// is serverName:port, as clients send it for a port other than 443, when
// hostWithPort is set, and serverName alone (a client reaching the listener
// through a load balancer on 443) when not.
func httpsGet(addr, serverName string, hostWithPort bool, roots *x509.CertPool, path string) (int, string, error) {
	c := http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
	_, port, _ := net.SplitHostPort(addr)
	req, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(serverName, port)+path, nil)
	if err != nil {
		return 0, "", err
	}
	if !hostWithPort {
		req.Host = serverName
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// envoyPID finds the Envoy process by the bootstrap path it reports in
// /server_info, so the test can tell a restart from a hot update.
func envoyPID(t *testing.T, e *Env) int {
	t.Helper()
	out, err := e.Envoy.Admin("/server_info")
	if err != nil {
		t.Fatalf("envoy /server_info: %v", err)
	}
	var info struct {
		CommandLineOptions struct {
			ConfigPath string `json:"config_path"`
		} `json:"command_line_options"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.CommandLineOptions.ConfigPath == "" {
		t.Fatalf("envoy /server_info without a config path (%v):\n%s", err, out)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	pid := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if !strings.HasPrefix(filepath.Base(string(args[0])), "envoy") { // envoy, or envoy-1.NN (hack/compat.sh)
			continue
		}
		for _, a := range args {
			if string(a) == info.CommandLineOptions.ConfigPath {
				if pid != 0 {
					t.Fatalf("two envoy processes use %s", a)
				}
				pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
			}
		}
	}
	if pid == 0 {
		t.Fatalf("no envoy process runs with %s", info.CommandLineOptions.ConfigPath)
	}
	return pid
}

// testCA signs the test's server certificates; nothing is committed.
type testCA struct {
	*testenv.CA
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := testenv.NewCA(t, "switchyard e2e test CA")
	return &testCA{CA: ca, pool: ca.Pool}
}

// testCert is a server certificate and its key, as PEM.
type testCert struct {
	name    string
	serial  int64
	certPEM []byte
	keyPEM  []byte
}

// issue signs a P-256 server certificate for one DNS name with the given
// serial.
func (ca *testCA) issue(t *testing.T, name string, serial int64) *testCert {
	t.Helper()
	leaf := ca.Issue(t, testenv.LeafOptions{Name: name, Serial: serial})
	return &testCert{name: name, serial: serial, certPEM: leaf.CertPEM, keyPEM: leaf.KeyPEM}
}

// write stores base.crt and base.key in dir, each written to a temporary
// file and renamed into place, the certificate first.
func (c *testCert) write(t *testing.T, dir, base string) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{base + ".crt", c.certPEM}, {base + ".key", c.keyPEM}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
}

// keyLeak returns the piece of the private key found in s, or "": the PEM
// block, its base64 body on one line, or any of its base64 lines.
func (c *testCert) keyLeak(s string) string {
	if strings.Contains(s, string(c.keyPEM)) {
		return string(c.keyPEM)
	}
	block, _ := pem.Decode(c.keyPEM)
	body := strings.TrimSpace(string(c.keyPEM))
	lines := strings.Split(body, "\n")
	lines = lines[1 : len(lines)-1] // the base64 between BEGIN and END
	if joined := strings.Join(lines, ""); strings.Contains(s, joined) {
		return joined
	}
	for _, l := range lines {
		if len(l) >= 16 && strings.Contains(s, l) {
			return l
		}
	}
	if block != nil && strings.Contains(s, fmt.Sprintf("%x", block.Bytes)) {
		return "hex of the key DER"
	}
	return ""
}

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// combinedPolicy serves a certificate whose certFile and keyFile are one
// combined PEM (certificate + key) and whose caFile holds the CA's
// certificate and the CA's own key, as many tools write them.
const combinedPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    address: 127.0.0.1
    port: {{port}}
    tls: { certificates: [shop] }
    hosts:
      - domains: ["*"]
        routes:
          - service: shop
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop
certFile: %[1]s/shop.pem
keyFile: %[1]s/shop.pem
caFile: %[1]s/ca.pem
`

// No private key from a combined PEM file shows anywhere: not in validate
// or translate output, /debug/config, /debug/proxies, /metrics or
// Switchyard's log, and not in what Envoy is sent (its config dump shows
// certificate chains and CAs in full). The listener still serves the
// certificate and verifies clients against the CA.
func TestCombinedPEMKeysNeverLeak(t *testing.T) {
	ca := testenv.NewCA(t, "combined CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "shop.example.com"})
	client := ca.Issue(t, testenv.LeafOptions{Name: "client", Client: true})
	caKeyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	caKey := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER})
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "shop.pem", append(append([]byte{}, leaf.CertPEM...), leaf.KeyPEM...))
	testenv.WriteFile(t, dir, "ca.pem", append(append([]byte{}, ca.PEM...), caKey...))

	secrets := [][]byte{leaf.KeyPEM, caKey}
	checkClean := func(where, text string) {
		t.Helper()
		if strings.Contains(text, "PRIVATE KEY") {
			t.Errorf("%s shows a PEM private key marker", where)
		}
		for _, k := range secrets {
			block, _ := pem.Decode(k)
			body := strings.Split(string(k), "\n")[1] // the first base64 line of the key
			if block != nil && strings.Contains(text, body) {
				t.Errorf("%s shows key material (%s)", where, block.Type)
			}
		}
	}

	e := NewEnv(t, true, map[string]string{"edge.yaml": fmt.Sprintf(combinedPolicy, dir)})
	policyDir := e.PolicyDir
	for _, args := range [][]string{{"validate", policyDir}, {"translate", policyDir}} {
		out, err := exec.Command(switchyardBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("switchyard %s: %v\n%s", args[0], err, out)
		}
		checkClean("switchyard "+args[0], string(out))
		if args[0] == "validate" && !strings.Contains(string(out), filepath.Join(dir, "ca.pem")) {
			t.Errorf("validate does not warn about the key in ca.pem, naming the file:\n%s", out)
		}
	}

	e.StartBackend("shop", "shop-1")
	e.WaitHosts("shop", 1, 1)
	// The certificate chain still works, and the CA still verifies clients.
	pair, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool, ServerName: "shop.example.com", Certificates: []tls.Certificate{pair},
	}}}
	testenv.Eventually(t, settle, "https with a client certificate answered 200", func() error {
		resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/", e.Port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})

	for _, path := range []string{"/debug/config?group=edge", "/debug/proxies", "/metrics"} {
		code, body, err := httpGet("http://"+e.AdminAddr+path, nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, code, err)
		}
		checkClean(path, body)
	}
	dump, err := e.Envoy.Admin("/config_dump?include_eds")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump, "BEGIN CERTIFICATE") {
		t.Fatalf("Envoy's config dump shows no certificate; the check below would prove nothing:\n%.2000s", dump)
	}
	checkClean("what Envoy was sent (config dump)", dump)
	checkClean("switchyard's log", e.Switchyard.Output())
}

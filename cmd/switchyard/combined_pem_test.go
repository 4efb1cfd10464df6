package main

import (
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Combined PEM files (a certificate with its key, a CA with the CA's key)
// are accepted, and neither key reaches translate's output, which is what
// Envoy is sent: only the warning naming each file says a key was there.
func TestCombinedPEMKeysNeverReachOutput(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "shop.example.com"})
	caKeyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER})
	testenv.WriteFile(t, dir, "shop.pem", slices.Concat(leaf.CertPEM, leaf.KeyPEM))
	testenv.WriteFile(t, dir, "ca.pem", slices.Concat(ca.PEM, caKeyPEM))
	testenv.WriteFile(t, dir, "edge.yaml", []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: public
    port: 8443
    tls: { certificates: [shop] }
    hosts:
      - domains: [shop.example.com]
        routes:
          - service: api
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop
certFile: shop.pem
keyFile: shop.pem
caFile: ca.pem
`))
	out, stderr, err := run(t, "translate", dir)
	if err != nil {
		t.Fatalf("translate: %v\n%s", err, stderr)
	}
	for _, key := range [][]byte{leaf.KeyPEM, caKeyPEM} {
		body := strings.Split(string(key), "\n")[1]
		if strings.Contains(out+stderr, body) {
			t.Errorf("a private key reached the output:\n%s\n%s", out, stderr)
		}
	}
	if strings.Contains(stderr, "PRIVATE KEY") {
		t.Errorf("a private key marker on stderr:\n%s", stderr)
	}
	if strings.Contains(out, "PRIVATE KEY") || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("want certificates and no private key in the output:\n%s", out)
	}
	for _, want := range []string{
		"edge.yaml:16: warning: certFile " + filepath.Join(dir, "shop.pem") + ` also holds a private key ("EC"), which is ignored`,
		"edge.yaml:18: warning: caFile " + filepath.Join(dir, "ca.pem") + ` also holds a private key ("EC"), which is ignored`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

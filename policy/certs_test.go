package policy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard-io/switchyard/policy"
)

// testNotAfter is the expiry of every generated certificate.
var testNotAfter = time.Date(2035, 1, 2, 3, 4, 5, 0, time.UTC)

// testCert is a self-signed ECDSA certificate generated for one test run, so
// that no private key is ever committed.
type testCert struct {
	certFile, keyFile string
	certPEM, keyPEM   []byte
}

// writeCert writes dir/name.crt and dir/name.key.
func writeCert(t *testing.T, dir, name string, dnsNames ...string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              dnsNames,
		NotBefore:             time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              testNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := testCert{
		certFile: filepath.Join(dir, name+".crt"),
		keyFile:  filepath.Join(dir, name+".key"),
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	writeFile(t, c.certFile, c.certPEM)
	writeFile(t, c.keyFile, c.keyPEM)
	return c
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func certDoc(certFile, keyFile, caFile string) []byte {
	doc := "apiVersion: switchyard.io/v1\nkind: Certificate\nname: c\ncertFile: " + certFile + "\nkeyFile: " + keyFile + "\n"
	if caFile != "" {
		doc += "caFile: " + caFile + "\n"
	}
	return []byte(doc)
}

func TestCertificateMistakes(t *testing.T) {
	dir := t.TempDir()
	a := writeCert(t, dir, "a", "a.example.com")
	b := writeCert(t, dir, "b", "b.example.com")
	writeFile(t, filepath.Join(dir, "empty.pem"), []byte("no pem here\n"))
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "certs.yaml")
	unused := file + ":3: warning: certificate \"c\" is not used by any listener"

	tests := []struct {
		name                      string
		certFile, keyFile, caFile string
		want                      []string
	}{
		{"mismatched pair", "a.crt", "b.key", "", []string{
			file + `:3: certificate "c": certFile and keyFile are not a valid pair: tls: private key does not match public key`, unused,
		}},
		{"swapped files", "a.key", "a.crt", "", []string{
			file + `:3: certificate "c": certFile and keyFile are not a valid pair: tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched`, unused,
		}},
		{"ca without certificates", "a.crt", "a.key", "empty.pem", []string{
			unused, file + ":6: caFile " + filepath.Join(dir, "empty.pem") + " holds no PEM certificate",
		}},
		{"ca is a key", "a.crt", "a.key", "b.key", []string{
			unused, file + ":6: caFile " + b.keyFile + " holds no PEM certificate",
		}},
		{"unreadable key", "a.crt", "adir", "", []string{
			unused, file + ":5: cannot read keyFile " + filepath.Join(dir, "adir") + ": not a regular file (a directory)",
		}},
		{"absolute paths", a.certFile, a.keyFile, b.certFile, []string{unused}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := policy.Parse(map[string][]byte{file: certDoc(tt.certFile, tt.keyFile, tt.caFile)})
			got := lines(diags)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
			if gotSet, wantSet := set != nil, !diags.HasErrors(); gotSet != wantSet {
				t.Errorf("returned a Set: %v; want %v", gotSet, wantSet)
			}
			for _, line := range got {
				for _, key := range [][]byte{a.keyPEM, b.keyPEM} {
					if strings.Contains(line, string(key)) || strings.Contains(line, "PRIVATE KEY-----") {
						t.Errorf("diagnostic %q contains private key material", line)
					}
				}
			}
		})
	}
}

// A Certificate must never show its private key, however it is printed.
func TestSecretIsNeverPrinted(t *testing.T) {
	dir := t.TempDir()
	c := writeCert(t, dir, "c", "c.example.com")
	set, diags := policy.Parse(map[string][]byte{filepath.Join(dir, "p.yaml"): certDoc("c.crt", "c.key", "")})
	if diags.HasErrors() {
		t.Fatalf("Parse: %v", diags.Err())
	}
	cert, _ := set.Certificate("c")
	if !bytes.Equal(cert.KeyPEM, c.keyPEM) {
		t.Fatal("KeyPEM does not hold the key file's bytes")
	}

	jsonCert, err := json.Marshal(cert)
	if err != nil {
		t.Fatal(err)
	}
	yamlCert, err := yaml.Marshal(cert)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v %+v %#v":     fmt.Sprintf("%v %+v %#v", cert, cert, cert),
		"%s %x %q %#x":   fmt.Sprintf("%s %x %q %#x", cert.KeyPEM, cert.KeyPEM, cert.KeyPEM, cert.KeyPEM),
		"pointer %+v":    fmt.Sprintf("%+v", &cert),
		"set %+v":        fmt.Sprintf("%+v", set),
		"json":           string(jsonCert),
		"yaml":           string(yamlCert),
		"json of a set":  mustJSON(t, set),
		"Secret.String":  cert.KeyPEM.String(),
		"slice of certs": fmt.Sprint([]policy.Certificate{cert}),
	}
	// The key as bytes and as hex, and the base64 body of the PEM block.
	body := strings.Split(string(c.keyPEM), "\n")[1]
	for how, out := range outputs {
		for _, leak := range []string{string(c.keyPEM), body, fmt.Sprintf("%x", c.keyPEM), fmt.Sprint([]byte(c.keyPEM))} {
			if strings.Contains(out, leak) {
				t.Errorf("%s output contains the private key: %s", how, out)
			}
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s output does not say [redacted]: %s", how, out)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// One listener verifies client certificates for every name or for none, so
// its certificates must agree on caFile.
func TestListenerCertificatesMustShareCA(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "a", "a.example.com")
	writeCert(t, dir, "b", "b.example.com")
	file := filepath.Join(dir, "edge.yaml")
	doc := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    port: 8443
    tls: { certificates: [a, b] }
    hosts:
      - domains: ["*"]
        routes:
          - service: web
---
apiVersion: switchyard.io/v1
kind: Certificate
name: a
certFile: a.crt
keyFile: a.key
caFile: b.crt
---
apiVersion: switchyard.io/v1
kind: Certificate
name: b
certFile: b.crt
keyFile: b.key
`
	set, diags := policy.Parse(map[string][]byte{file: []byte(doc)})
	want := []string{file + `:7: listener "https": certificates "a" and "b" have different caFile settings; all certificates of a listener must name the same caFile, or none, because the listener verifies client certificates for every name or for none`}
	if diff := cmp.Diff(want, lines(diags)); diff != "" || set != nil {
		t.Errorf("got Set %v; diagnostics (-want +got):\n%s", set != nil, diff)
	}

	// The same caFile on both is fine.
	fixed := strings.Replace(doc, "keyFile: b.key\n", "keyFile: b.key\ncaFile: b.crt\n", 1)
	if set, diags := policy.Parse(map[string][]byte{file: []byte(fixed)}); set == nil {
		t.Errorf("same caFile on both certificates: got errors %v", diags)
	}
}

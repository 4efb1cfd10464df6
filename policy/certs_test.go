package policy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
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
			unused,
			file + ":4: certFile " + a.keyFile + ` holds no PEM certificate (it holds a private key); are certFile and keyFile swapped?`,
			file + ":5: keyFile " + a.certFile + ` holds no PEM private key (it holds a "CERTIFICATE" block); are certFile and keyFile swapped?`,
		}},
		{"ca without certificates", "a.crt", "a.key", "empty.pem", []string{
			unused, file + ":6: caFile " + filepath.Join(dir, "empty.pem") + " holds no PEM certificate",
		}},
		{"ca is a key", "a.crt", "a.key", "b.key", []string{
			unused, file + ":6: caFile " + b.keyFile + ` holds no PEM certificate (it holds a private key)`,
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

// Many tools write a certificate and its key, or a CA and the CA's key, to
// one file. certFile and caFile must contribute only their certificates:
// what they hold is sent to every Envoy of a group and shown by translate
// and /debug/config. keyFile contributes only its key.
func TestCombinedPEMFiles(t *testing.T) {
	dir := t.TempDir()
	leaf := writeCert(t, dir, "leaf", "leaf.example.com")
	ca := writeCert(t, dir, "ca", "ca.example.com")
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	combined := filepath.Join(dir, "combined.pem")      // certificate, then key
	keyFirst := filepath.Join(dir, "key-first.pem")     // key, then certificate
	caCombined := filepath.Join(dir, "ca-combined.pem") // the CA's key between two CA certificates
	opensslKey := filepath.Join(dir, "openssl.key")     // as `openssl ecparam -genkey` writes it
	writeFile(t, combined, slices.Concat(leaf.certPEM, leaf.keyPEM))
	writeFile(t, keyFirst, slices.Concat(leaf.keyPEM, leaf.certPEM))
	writeFile(t, caCombined, slices.Concat(ca.certPEM, ca.keyPEM, ca.certPEM))
	writeFile(t, opensslKey, slices.Concat(ecParams, leaf.keyPEM))

	file := filepath.Join(dir, "certs.yaml")
	unused := file + ":3: warning: certificate \"c\" is not used by any listener"
	tests := []struct {
		name                      string
		certFile, keyFile, caFile string
		want                      []string
	}{
		{"one file for certificate and key", "combined.pem", "combined.pem", "", []string{
			unused,
			file + ":4: warning: certFile " + combined + ` also holds a private key, which is ignored: only its CERTIFICATE blocks are used, so that no key is ever sent to Envoy or shown`,
		}},
		{"key before certificate", "key-first.pem", "key-first.pem", "", []string{
			unused,
			file + ":4: warning: certFile " + keyFirst + ` also holds a private key, which is ignored: only its CERTIFICATE blocks are used, so that no key is ever sent to Envoy or shown`,
		}},
		{"CA with its key", "leaf.crt", "leaf.key", "ca-combined.pem", []string{
			unused,
			file + ":6: warning: caFile " + caCombined + ` also holds a private key, which is ignored: only its CERTIFICATE blocks are used, so that no key is ever sent to Envoy or shown`,
		}},
		{"key with EC parameters", "leaf.crt", "openssl.key", "", []string{unused}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := policy.Parse(map[string][]byte{file: certDoc(tt.certFile, tt.keyFile, tt.caFile)})
			if diff := cmp.Diff(tt.want, lines(diags)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
			if set == nil {
				t.Fatal("got no Set; want the certificate accepted")
			}
			c, _ := set.Certificate("c")
			for field, b := range map[string][]byte{"CertPEM": c.CertPEM, "CAPEM": c.CAPEM} {
				if bytes.Contains(b, []byte("PRIVATE KEY")) || bytes.Contains(b, []byte("EC PARAMETERS")) {
					t.Errorf("%s holds more than certificates:\n%s", field, b)
				}
			}
			if !bytes.Equal(c.CertPEM, leaf.certPEM) {
				t.Errorf("CertPEM = %q; want the leaf certificate alone", c.CertPEM)
			}
			if !bytes.Equal(c.KeyPEM, leaf.keyPEM) {
				t.Error("KeyPEM is not the leaf's key block alone")
			}
			if tt.caFile != "" && !bytes.Equal(c.CAPEM, slices.Concat(ca.certPEM, ca.certPEM)) {
				t.Errorf("CAPEM = %q; want the two CA certificates", c.CAPEM)
			}
			if _, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
				t.Errorf("CertPEM and KeyPEM are not a pair: %v", err)
			}
			if len(c.DNSNames) != 1 || c.DNSNames[0] != "leaf.example.com" {
				t.Errorf("DNSNames = %v; want the leaf's", c.DNSNames)
			}
			for _, line := range lines(diags) {
				body := strings.Split(string(leaf.keyPEM), "\n")[1]
				caBody := strings.Split(string(ca.keyPEM), "\n")[1]
				if strings.Contains(line, body[:20]) || strings.Contains(line, caBody[:20]) {
					t.Errorf("diagnostic %q contains private key material", line)
				}
			}
		})
	}
}

// A keyFile with two keys uses the first and says so.
func TestKeyFileWithTwoKeys(t *testing.T) {
	dir := t.TempDir()
	a := writeCert(t, dir, "a", "a.example.com")
	b := writeCert(t, dir, "b", "b.example.com")
	keys := filepath.Join(dir, "two.key")
	writeFile(t, keys, slices.Concat(a.keyPEM, b.keyPEM))
	file := filepath.Join(dir, "certs.yaml")
	set, diags := policy.Parse(map[string][]byte{file: certDoc("a.crt", "two.key", "")})
	want := []string{
		file + ":3: warning: certificate \"c\" is not used by any listener",
		file + ":5: warning: keyFile " + keys + " holds 2 private keys; only the first is used",
	}
	if diff := cmp.Diff(want, lines(diags)); diff != "" || set == nil {
		t.Fatalf("got Set %v; diagnostics (-want +got):\n%s", set != nil, diff)
	}
	if c, _ := set.Certificate("c"); !bytes.Equal(c.KeyPEM, a.keyPEM) {
		t.Error("KeyPEM is not the first key alone")
	}
}

// A key pasted into keyFile (or a certificate into certFile) instead of its
// path must not be echoed by the error that refuses it.
func TestPastedKeyIsNotEchoed(t *testing.T) {
	dir := t.TempDir()
	k := writeCert(t, dir, "k", "k.example.com")
	body := strings.Split(string(k.keyPEM), "\n")[1]
	indented := "    " + strings.ReplaceAll(strings.TrimSpace(string(k.keyPEM)), "\n", "\n    ")
	file := filepath.Join(dir, "certs.yaml")
	head := "apiVersion: switchyard.io/v1\nkind: Certificate\nname: c\ncertFile: k.crt\n"
	notShown := "the value is not shown, in case it is a key"
	tests := []struct {
		name, doc, want string
	}{
		{"PEM block", head + "keyFile: |\n" + indented + "\n",
			file + ":5: keyFile holds what looks like PEM content, not a file path; write it to a file and give that file's path (" + notShown + ")"},
		{"PEM on one line", head + "keyFile: \"-----BEGIN PRIVATE KEY-----" + body + "-----END PRIVATE KEY-----\"\n",
			file + ":5: keyFile holds what looks like PEM content, not a file path; write it to a file and give that file's path (" + notShown + ")"},
		{"base64 without PEM lines", head + "keyFile: " + strings.Repeat(body, 5) + "\n",
			file + fmt.Sprintf(":5: keyFile is %d bytes long, too long for a file path (at most 256 bytes; %s)", 5*len(body), notShown)},
		{"base64 lines", head + "keyFile: |\n    " + body + "\n    " + body + "\n",
			file + ":5: keyFile must not contain control characters (such as newline, carriage return, tab or NUL); it is a file path (" + notShown + ")"},
		{"PEM in another field", "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: 8080\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - match: { headers: [{ name: x-key, exact: \"-----BEGIN PRIVATE KEY-----" + body + "\" }] }\n            service: web\n",
			file + ":10: exact holds what looks like PEM content; keys and certificates belong in files named by certFile, keyFile and caFile (" + notShown + ")"},
		{"PEM where a number belongs", "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: |\n" + strings.ReplaceAll(indented, "    ", "      ") + "\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - service: web\n",
			file + ":6: port must be an integer, got a string that looks like PEM content (not shown, in case it is a key)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := policy.Parse(map[string][]byte{file: []byte(tt.doc)})
			if set != nil {
				t.Fatal("got a Set; want the value refused")
			}
			got := diags.Errors()
			if len(got) != 1 || got[0].String() != tt.want {
				t.Errorf("got errors %q; want only %q", lines(got), tt.want)
			}
			for _, line := range lines(diags) {
				if strings.Contains(line, body[:16]) || strings.Contains(line, "PRIVATE KEY") {
					t.Errorf("diagnostic %q shows key material", line)
				}
			}
		})
	}
}

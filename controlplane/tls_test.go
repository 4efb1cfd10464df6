package controlplane

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

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

package redact

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB2x\n-----END EC PRIVATE KEY-----\n"

func TestPEMKeys(t *testing.T) {
	cert := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	quoted, _ := json.Marshal(cert + key)
	for _, tc := range []struct{ name, in, want string }{
		{"no key", cert, cert},
		{"combined", cert + key, cert + Text + "\n"},
		{"key first", key + cert, Text + "\n" + cert},
		{"two keys", key + key, Text + "\n" + Text + "\n"},
		{"PKCS#8", "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----", Text},
		{"encrypted", "x -----BEGIN ENCRYPTED PRIVATE KEY-----\nAA\n-----END ENCRYPTED PRIVATE KEY----- y", "x " + Text + " y"},
		{"cut short", "error: -----BEGIN RSA PRIVATE KEY-----\nMIIEow", "error: " + Text},
		{"JSON-quoted", string(quoted), strings.Replace(string(quoted), `-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB2x\n-----END EC PRIVATE KEY-----`, Text, 1)},
		{"Go-quoted", fmt.Sprintf("%q", key), `"` + Text + `\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PEMKeys(tc.in)
			if got != tc.want {
				t.Errorf("PEMKeys(%q) = %q; want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "PRIVATE KEY") {
				t.Errorf("PEMKeys left a key marker: %q", got)
			}
			if HasPEMKey(got) {
				t.Errorf("HasPEMKey(%q) after redaction", got)
			}
		})
	}
	if !HasPEMKey(key) || HasPEMKey(cert) {
		t.Error("HasPEMKey wrong on a key or a certificate")
	}
}

func TestHandler(t *testing.T) {
	var b strings.Builder
	log := slog.New(Handler(slog.NewTextHandler(&b, nil))).With("pre", key)
	log.Error("bad "+key, "s", key, "err", errors.New("x "+key), "bytes", []byte(key),
		slog.Group("g", "inner", key), "ok", "fine", "n", 3)
	out := b.String()
	if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "MHcCAQEEIB2x") {
		t.Errorf("a key reached the log:\n%s", out)
	}
	for _, want := range []string{"ok=fine", "n=3", `g.inner="[redacted]`, `pre="[redacted]`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	slog.New(Handler(slog.NewJSONHandler(&b, nil))).Info("x", "s", key)
	if strings.Contains(b.String(), "PRIVATE KEY") {
		t.Errorf("a key reached the JSON log:\n%s", b.String())
	}
}

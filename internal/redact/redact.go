// Package redact removes secrets from text that Switchyard shows: logs,
// errors, debug pages and CLI output.
package redact

import (
	"regexp"
	"strings"
)

// Text replaces whatever was redacted.
const Text = "[redacted]"

// pemKey matches a PEM private key block (PKCS#1, PKCS#8, SEC 1, OpenSSH,
// encrypted), or the rest of the text when the block is cut short. JSON and
// Go quoting keep the markers intact, so it matches escaped text too.
var pemKey = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`)

// HasPEMKey reports whether s holds (the start of) a PEM private key.
func HasPEMKey(s string) bool {
	return strings.Contains(s, "PRIVATE KEY-----") && pemKey.MatchString(s)
}

// PEMKeys returns s with every PEM private key block replaced by Text.
func PEMKeys(s string) string {
	if !strings.Contains(s, "PRIVATE KEY-----") {
		return s // the common case, without a regexp
	}
	return pemKey.ReplaceAllLiteralString(s, Text)
}

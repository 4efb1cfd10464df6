package policy_test

import (
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
)

func regexDoc(re string) []byte {
	return []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathRegex: '` + re + `' }
            service: web
`)
}

// Envoy refuses regexes whose RE2 program is over its size limit, so a
// regex that Go accepts but whose RE2 program may be over the limit is an
// error with its line. RE2 matches bytes, not runes: one Unicode class is a
// single Go instruction and a tree of UTF-8 byte ranges in RE2, so Go's
// count is no measure.
func TestRegexTooComplexForEnvoy(t *testing.T) {
	for _, re := range []string{
		`^/api/v[0-9]+/(users|orders)/[a-z0-9-]{1,64}$`,
		`^/[a-z]{1,1000}$`, // RE2: 2,003 instructions; Envoy accepts it
		`/items/(?:a{3}){333}`,
	} {
		if set, diags := policy.Parse(map[string][]byte{"edge.yaml": regexDoc(re)}); set == nil {
			t.Errorf("%s: an acceptable regex was rejected: %v", re, diags)
		}
	}
	for _, tt := range []struct{ re, want string }{
		// Go: 1,004 instructions; RE2 in Envoy 1.40: 10,004, over the
		// bootstrap's limit of 10,000 (and far more with full Unicode tables).
		{`[\p{L}\p{N}]{1000}`, "too complex for Envoy: its RE2 program may have up to "},
		{`/(.*){1000}`, "too complex for Envoy"},
		// RE2 refuses nested repetitions past 1,000 copies, and so does
		// Go's parser (Envoy: "invalid repetition size").
		{`/items/(?:a{3}){334}`, "invalid repeat count"},
		{`/(?:(?:a{10}){10}){11}`, "invalid repeat count"},
	} {
		_, diags := policy.Parse(map[string][]byte{"edge.yaml": regexDoc(tt.re)})
		got := lines(diags)
		if len(got) != 1 || !strings.HasPrefix(got[0], "edge.yaml:10: ") || !strings.Contains(got[0], tt.want) {
			t.Errorf("%s: got %q; want one error at edge.yaml:10 containing %q", tt.re, got, tt.want)
		}
	}
}

// Validation's regex limit is the one the bootstrap sets in Envoy: a lower
// one refuses what Envoy accepts, a higher one accepts what it refuses.
func TestRegexLimitIsTheBootstraps(t *testing.T) {
	if policy.MaxRegexProgramSize != envoy.RE2MaxProgramSize {
		t.Errorf("policy.MaxRegexProgramSize = %d; envoy.RE2MaxProgramSize = %d; want them equal", policy.MaxRegexProgramSize, envoy.RE2MaxProgramSize)
	}
}

// A path match Envoy's path normalization makes unreachable is an error.
func TestUnnormalizedPathsRefused(t *testing.T) {
	for _, tc := range []struct {
		match string
		ok    bool
	}{
		{"path: /api/login", true},
		{"pathPrefix: /api/", true},
		{"pathPrefix: /.well-known/", true},
		{"pathPrefix: /api/.", true},
		{"path: /a%20b", true}, // a space stays escaped
		{"path: /api//login", false},
		{"pathPrefix: /api/./x", false},
		{"pathPrefix: /api/../x", false},
		{"path: /api/..", false},
		{"path: /api/%6cogin", false},
		{"pathPrefix: /api%2F", false},
		{"path: /a%7Eb", false},
	} {
		doc := "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: 8080\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - match: { " + tc.match + " }\n            service: web\n"
		_, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(doc)})
		if got := !diags.HasErrors(); got != tc.ok {
			t.Errorf("%s: valid = %v; want %v (%v)", tc.match, got, tc.ok, diags)
		} else if !tc.ok && !strings.Contains(diags.Errors()[0].Message, "can never match") {
			t.Errorf("%s: error %q; want it to say the path can never match", tc.match, diags.Errors()[0].Message)
		}
	}
}

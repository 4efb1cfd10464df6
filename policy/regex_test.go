package policy_test

import (
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// Envoy refuses regexes over its program size limit, so a regex that Go
// accepts but that would blow the limit is an error with its line.
func TestRegexTooComplexForEnvoy(t *testing.T) {
	doc := func(re string) []byte {
		return []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathRegex: "` + re + `" }
            service: web
`)
	}
	if set, diags := policy.Parse(map[string][]byte{"edge.yaml": doc(`^/api/v[0-9]+/(users|orders)/[a-z0-9-]{1,64}$`)}); set == nil {
		t.Fatalf("an ordinary regex was rejected: %v", diags)
	}
	_, diags := policy.Parse(map[string][]byte{"edge.yaml": doc(`^/[a-z]{1,1000}$`)})
	got := lines(diags)
	if len(got) != 1 || !strings.HasPrefix(got[0], "edge.yaml:10: pathRegex ") || !strings.Contains(got[0], "too complex for Envoy") {
		t.Fatalf("got %q; want one error at edge.yaml:10 saying the regex is too complex", got)
	}
}

package e2e

import (
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// The regex size check is an upper bound on RE2's own count, so a regex
// at the very edge of what validation accepts is accepted by real Envoy
// (bootstrapped with its limit of 10,000). `\b*` is the construct whose
// RE2 count validation estimates most tightly, so this edge is within a
// few instructions of Envoy's.
func TestRegexAtTheLimitIsAcceptedByEnvoy(t *testing.T) {
	regexPolicy := func(re string) string {
		return strings.Replace(webPolicy, "match: { pathPrefix: / }", "match: { pathRegex: '"+re+"' }", 1)
	}
	valid := func(re string) bool {
		doc := strings.ReplaceAll(regexPolicy(re), "{{port}}", "8080")
		set, _ := policy.Parse(map[string][]byte{"edge.yaml": []byte(doc)})
		return set != nil
	}
	limitRegex := func(n int) string { return "/limit" + strings.Repeat(`\b*`, n) }
	// The largest n that validates.
	lo, hi := 1, 10_000
	if !valid(limitRegex(lo)) || valid(limitRegex(hi)) {
		t.Fatalf("validation accepts n=%d: %v, n=%d: %v; want the limit in between", lo, valid(limitRegex(lo)), hi, valid(limitRegex(hi)))
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; valid(limitRegex(mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	re := limitRegex(lo)
	t.Logf("largest accepted: /limit followed by %d \\b*", lo)

	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": regexPolicy(re)})
		e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)
		if code, body, err := e.Get("/limit", nil); err != nil || code != 200 || body != "web-1" {
			t.Fatalf("got %d %q %v; want web-1 through the regex route", code, body, err)
		}
		// The route answering proves Envoy took the route configuration;
		// and nothing else was rejected either.
		e.requireNoNACKs()
	})
}

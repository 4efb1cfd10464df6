package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
)

// manyRoutes is one host with n routes: exact paths, prefixes under them
// and header matches, each reachable, so the unreachable-route check looks
// at every pair a quadratic check would.
func manyRoutes(n int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: 8080\n    hosts:\n      - domains: [\"*\"]\n        routes:\n")
	for i := range n {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "          - { match: { path: /svc/%d/item }, service: web }\n", i)
		case 1:
			fmt.Fprintf(&b, "          - { match: { pathPrefix: /svc/%d/ }, service: web }\n", i)
		default:
			fmt.Fprintf(&b, "          - { match: { pathPrefix: /svc/%d/, headers: [{ name: x-v, exact: \"2\" }] }, service: web }\n", i)
		}
	}
	return []byte(b.String())
}

// BenchmarkUnreachableRouteCheck parses a host of 80,000 routes (23 s when
// the check compared every pair of routes).
func BenchmarkUnreachableRouteCheck(b *testing.B) {
	doc := map[string][]byte{"edge.yaml": manyRoutes(80_000)}
	for b.Loop() {
		if set, diags := policy.Parse(doc); set == nil || len(diags) != 0 {
			b.Fatalf("got %d diagnostics, first %v; want none", len(diags), diags[0])
		}
	}
}

package policy_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
)

// TestParseGlobalRateLimits reads every form of a global limit and the
// rate limit service's defaults.
func TestParseGlobalRateLimits(t *testing.T) {
	src := `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
rateLimitService: { service: ratelimit }
listeners:
  - name: public
    port: 8080
    hosts:
      - domains: ["*"]
        globalRateLimit: { requests: 1000, per: second }
        routes:
          - match: { pathPrefix: /api }
            service: api
            globalRateLimit:
              - { requests: 10, per: second, by: clientIP, shadow: true }
              - { requests: 100, per: minute, by: [clientIP, {header: X-Api-Key}, path, service] }
          - service: web
            globalRateLimit: { requests: 5, per: day, by: { header: x-user } }
---
# Shapes the rate limit cluster: no "not routed to" warning.
apiVersion: switchyard.io/v1
kind: Service
name: ratelimit
circuitBreakers: { maxRequests: 5000 }
`
	set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(src)})
	if len(diags) > 0 || set == nil {
		t.Fatalf("Parse: %v", diags)
	}
	g := set.Groups[0]
	wantService := &policy.RateLimitService{Pos: policy.Pos{File: "p.yaml", Line: 4}, Service: "ratelimit",
		Timeout: 20 * time.Millisecond, FailureMode: policy.FailureModeAllow}
	if diff := cmp.Diff(wantService, g.RateLimitService); diff != "" {
		t.Errorf("rateLimitService (-want +got):\n%s", diff)
	}
	h := g.Listeners[0].Hosts[0]
	at := func(line int) policy.Pos { return policy.Pos{File: "p.yaml", Line: line} }
	want := [][]policy.GlobalRateLimit{
		{{Pos: at(10), Requests: 1000, Per: policy.PerSecond}},
		{
			{Pos: at(15), Requests: 10, Per: policy.PerSecond, By: []policy.RateLimitKey{{By: policy.RateLimitByClientIP}}, Shadow: true},
			{Pos: at(16), Requests: 100, Per: policy.PerMinute, By: []policy.RateLimitKey{
				{By: policy.RateLimitByClientIP}, {By: policy.RateLimitByHeader, Header: "x-api-key"},
				{By: policy.RateLimitByPath}, {By: policy.RateLimitByService},
			}},
		},
		{{Pos: at(18), Requests: 5, Per: policy.PerDay, By: []policy.RateLimitKey{{By: policy.RateLimitByHeader, Header: "x-user"}}}},
	}
	got := [][]policy.GlobalRateLimit{h.GlobalRateLimits, h.Routes[0].GlobalRateLimits, h.Routes[1].GlobalRateLimits}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("global rate limits (-want +got):\n%s", diff)
	}
}

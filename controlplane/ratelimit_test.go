package controlplane

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
)

func limitConfig(domain string, requests uint32) *rlsconfv3.RateLimitConfig {
	return &rlsconfv3.RateLimitConfig{Name: domain, Domain: domain, Descriptors: []*rlsconfv3.RateLimitDescriptor{{
		Key: "limit", Value: "route/a", RateLimit: &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit_SECOND, RequestsPerUnit: requests},
	}}}
}

// The rate limit service is served every group's limits, by group name,
// and nothing of sidecars or of its own snapshot; the version follows the
// limits alone.
func TestRateLimitSnapshot(t *testing.T) {
	groups := map[string]*groupSnapshot{
		"web":                 {rateLimits: []*rlsconfv3.RateLimitConfig{limitConfig("switchyard_web", 10)}},
		"api":                 {rateLimits: []*rlsconfv3.RateLimitConfig{limitConfig("switchyard_api", 5)}},
		"plain":               {},
		"sidecar:web-1-proxy": {rateLimits: []*rlsconfv3.RateLimitConfig{limitConfig("not-served", 1)}},
	}
	gs := rateLimitSnapshot(groups)
	var domains []string
	for _, r := range gs.resources[resource.RateLimitConfigType] {
		domains = append(domains, r.(*rlsconfv3.RateLimitConfig).GetDomain())
	}
	if len(domains) != 2 || domains[0] != "switchyard_api" || domains[1] != "switchyard_web" {
		t.Fatalf("domains %v; want switchyard_api, switchyard_web (group order, no sidecar's)", domains)
	}
	if err := gs.snapshot.Consistent(); err != nil {
		t.Errorf("snapshot: %v", err)
	}
	v := gs.versions[resource.RateLimitConfigType]
	groups[rateLimitKey] = gs // published: must not feed itself
	if again := rateLimitSnapshot(groups); again.versions[resource.RateLimitConfigType] != v {
		t.Errorf("same limits, new version %s (was %s)", again.versions[resource.RateLimitConfigType], v)
	}
	groups["web"] = &groupSnapshot{rateLimits: []*rlsconfv3.RateLimitConfig{limitConfig("switchyard_web", 20)}}
	if raised := rateLimitSnapshot(groups); raised.versions[resource.RateLimitConfigType] == v {
		t.Errorf("a raised limit kept version %s", v)
	}
	if empty := rateLimitSnapshot(nil); len(empty.resources[resource.RateLimitConfigType]) != 0 || empty.versions[resource.RateLimitConfigType] == "" {
		t.Errorf("no limits: got %v, version %q; want an empty config with a version (the service waits for one)", empty.resources, empty.versions)
	}
}

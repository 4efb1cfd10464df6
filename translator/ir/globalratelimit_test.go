package ir

import (
	"strings"
	"testing"
	"time"
)

// Validate refuses global limits the envoy builders would render into a
// filter without a service, or into descriptors the rate limit service
// would misread or count together.
func TestValidateGlobalRateLimits(t *testing.T) {
	service := &RateLimitService{Cluster: RateLimitCluster, Domain: RateLimitDomain("edge"), Timeout: D(20 * time.Millisecond)}
	limit := func(id string, by ...RateLimitKey) GlobalRateLimit {
		return GlobalRateLimit{ID: id, Requests: 10, Unit: UnitSecond, By: by}
	}
	cfg := func(s *RateLimitService, host []GlobalRateLimit, route ...GlobalRateLimit) *Config {
		r := Route{Name: "r", Match: Match{PathPrefix: "/"}, Backends: []Backend{{Service: "web", Weight: 1}}, GlobalRateLimits: route}
		l := Listener{Name: "http", Port: 10000, RateLimitService: s,
			VirtualHosts: []VirtualHost{{Name: "*", Domains: []string{"*"}, GlobalRateLimits: host, Routes: []Route{r}}}}
		return &Config{Group: "edge", Clusters: []Cluster{{Service: "web"}, {Service: RateLimitCluster, HTTP2: true}}, Listeners: []Listener{l}}
	}
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string // "": valid
	}{
		{"host and route limits", cfg(service, []GlobalRateLimit{limit("h/1")}, limit("r/1", RateLimitKey{By: RateLimitByClientIP}), limit("r/2", RateLimitKey{By: RateLimitByHeader, Header: "x-api-key"})), ""},
		{"a service without limits", cfg(service, nil), ""},
		{"limits without a service", cfg(nil, nil, limit("r/1")), `route "r": global rate limits without a rate limit service`},
		{"service on no cluster", cfg(&RateLimitService{Cluster: "nope", Domain: "d", Timeout: D(time.Millisecond)}, nil), `unknown cluster "nope"`},
		{"service without a timeout", cfg(&RateLimitService{Cluster: RateLimitCluster, Domain: "d"}, nil), "timeout 0s"},
		{"one id twice", cfg(service, []GlobalRateLimit{limit("x/1")}, limit("x/1")), `id "x/1" used twice`},
		{"an id the service takes for a pattern", cfg(service, nil, limit("route/*")), `id "route/*"`},
		{"no requests", cfg(service, nil, GlobalRateLimit{ID: "r/1", Unit: UnitDay}), "no requests"},
		{"unknown unit", cfg(service, nil, GlobalRateLimit{ID: "r/1", Requests: 1, Unit: "week"}), `unit "week"`},
		{"by twice", cfg(service, nil, limit("r/1", RateLimitKey{By: RateLimitByPath}, RateLimitKey{By: RateLimitByPath})), `by "path" twice`},
		{"header without a name", cfg(service, nil, limit("r/1", RateLimitKey{By: RateLimitByHeader})), `by "header" with header ""`},
		{"unknown by", cfg(service, nil, limit("r/1", RateLimitKey{By: "user"})), `by "user"`},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v; want valid", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

package ir

import (
	"strings"
	"testing"
	"time"
)

// Validate refuses protections the envoy builders would turn into config
// Envoy rejects or that would not do what the policy says.
func TestValidateProtection(t *testing.T) {
	web := []Backend{{Service: "web", Weight: 1}}
	cfg := func(l Listener, r Route) *Config {
		r.Name, r.Match, r.Backends = "r", Match{PathPrefix: "/"}, web
		l.Name, l.Port = "http", 10000
		l.VirtualHosts = []VirtualHost{{Name: "*", Domains: []string{"*"}, Routes: []Route{r}}}
		return &Config{Group: "edge", Clusters: []Cluster{{Service: "web"}}, Listeners: []Listener{l}}
	}
	bucket := func(by, header string, clients uint32) *RateLimit {
		return &RateLimit{Requests: 1, Per: D(time.Second), Burst: 1, By: by, Header: header, Clients: clients}
	}
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string // "": valid
	}{
		{"limits", cfg(Listener{MaxRequestHeadersKB: 16}, Route{MaxRequestBytes: 1024}), ""},
		{"headers bound too large", cfg(Listener{MaxRequestHeadersKB: 8193}, Route{}), "maxRequestHeadersKB 8193 above 8192"},
		{"body bound on a WebSocket route", cfg(Listener{}, Route{MaxRequestBytes: 1, WebSocket: true}), "body limit on a WebSocket route"},
		{"body bound on a WebSocket listener", cfg(Listener{WebSocket: true}, Route{MaxRequestBytes: 1}), "body limit on a WebSocket route"},
		{"ip access", cfg(Listener{}, Route{IPAccess: &IPAccess{Allow: []string{"10.0.0.0/8"}, Deny: []string{"2001:db8::/32"}}}), ""},
		{"empty ip access", cfg(Listener{}, Route{IPAccess: &IPAccess{}}), "neither allow nor deny"},
		{"address, not a range", cfg(Listener{}, Route{IPAccess: &IPAccess{Deny: []string{"10.0.0.1"}}}), `"10.0.0.1" is not a canonical CIDR range`},
		{"bits beyond the prefix", cfg(Listener{}, Route{IPAccess: &IPAccess{Deny: []string{"10.0.0.1/8"}}}), `"10.0.0.1/8" is not a canonical CIDR range`},
		{"per-header bucket", cfg(Listener{}, Route{RateLimit: bucket(RateLimitByHeader, "x-api-key", 10)}), ""},
		{"by header without one", cfg(Listener{}, Route{RateLimit: bucket(RateLimitByHeader, "", 10)}), `rate limit by "header" with header ""`},
		{"unknown by", cfg(Listener{}, Route{RateLimit: bucket("user", "", 10)}), `rate limit by "user"`},
		{"by without clients", cfg(Listener{}, Route{RateLimit: bucket(RateLimitByClientIP, "", 0)}), "for 0 clients"},
		{"empty bucket", cfg(Listener{}, Route{RateLimit: &RateLimit{Per: D(time.Second)}}), "rate limit of 0 per 1s"},
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

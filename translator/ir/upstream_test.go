package ir

import (
	"strings"
	"testing"
	"time"
)

// Validate refuses what the envoy builders would turn into a cluster or
// route Envoy rejects: subsets that do not line up with their backends,
// impossible upstream settings and hash policies.
func TestValidateSubsetsAndUpstream(t *testing.T) {
	sec := D(time.Second)
	zero := D(0)
	pct := uint32(101)
	cfg := func(c Cluster, r Route) *Config {
		r.Name, r.Match = "r", Match{PathPrefix: "/"}
		return &Config{Group: "edge", Clusters: []Cluster{c}, Listeners: []Listener{{
			Name: "http", Port: 10000, VirtualHosts: []VirtualHost{{Name: "*", Domains: []string{"*"}, Routes: []Route{r}}},
		}}}
	}
	to := func(subset string) Route {
		return Route{Backends: []Backend{{Service: "web", Subset: subset, Weight: 1}}}
	}
	for _, tc := range []struct {
		name string
		cfg  *Config
		want string // "" : valid
	}{
		{"subset backend and cluster", cfg(Cluster{Service: "web", Subset: "tag=v2"}, to("tag=v2")), ""},
		{"subset without its cluster", cfg(Cluster{Service: "web"}, to("tag=v2")), `no cluster for service "web" subset "tag=v2"`},
		{"tuned cluster", cfg(Cluster{Service: "web", LB: LBLeastRequest, SlowStart: &sec, ConnectTimeout: &sec, IdleTimeout: &zero}, to("")), ""},
		{"unknown policy", cfg(Cluster{Service: "web", LB: "fastest"}, to("")), `unknown load balancing policy "fastest"`},
		{"slow start with hashing", cfg(Cluster{Service: "web", LB: LBRingHash, SlowStart: &sec}, to("")), "slow start"},
		{"zero connect timeout", cfg(Cluster{Service: "web", ConnectTimeout: &zero}, to("")), "connect timeout 0s not positive"},
		{"ejection percent", cfg(Cluster{Service: "web", OutlierDetection: &OutlierDetection{MaxEjectionPercent: &pct}}, to("")), "max ejection percent 101"},
		{"health check without path", cfg(Cluster{Service: "web", HealthCheck: &HealthCheck{Interval: sec, Timeout: sec, HealthyThreshold: 1, UnhealthyThreshold: 1}}, to("")), "health check"},
		{"cookie hash", cfg(Cluster{Service: "web", LB: LBRingHash}, Route{Backends: to("").Backends, Hash: &HashPolicy{Cookie: &HashCookie{Name: "s"}}}), ""},
		{"hash on two things", cfg(Cluster{Service: "web", LB: LBRingHash}, Route{Backends: to("").Backends, Hash: &HashPolicy{Header: "x", SourceIP: true}}), "exactly one"},
		{"hash on a split", cfg(Cluster{Service: "web", LB: LBRingHash}, Route{
			Backends: []Backend{{Service: "web", Weight: 1}, {Service: "web", Weight: 1}}, Hash: &HashPolicy{SourceIP: true},
		}), "a hash policy on a split"},
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

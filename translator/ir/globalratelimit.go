package ir

import (
	"errors"
	"fmt"
	"strings"
)

// RateLimitCluster names the cluster of a group's rate limit service. A
// Consul service name never has a ':', so it cannot clash with a
// service's cluster.
const RateLimitCluster = "switchyard:ratelimit"

// RateLimitDomain is the rate limit service domain of a group's global
// limits: switchyard_<group>. Every limit is counted within its domain,
// and a group's name is unique, so two groups never share a counter,
// whatever their limits are called. It has no '.': the service's stat
// names are split into Prometheus labels at dots, the domain first.
func RateLimitDomain(group string) string { return "switchyard_" + group }

// RateLimitService is how a listener's Envoys ask the group's rate limit
// service about the global limits of its hosts and routes.
type RateLimitService struct {
	// Cluster names the cluster that reaches the service (over gRPC).
	Cluster string `json:"cluster"`
	// Domain is the domain its limits are counted in.
	Domain  string   `json:"domain"`
	Timeout Duration `json:"timeout"`
	// FailureModeDeny answers a request 500 when the service does not
	// answer in time; otherwise it is forwarded.
	FailureModeDeny bool `json:"failureModeDeny,omitempty"`
	// Headers adds x-ratelimit-* headers to counted requests' responses.
	Headers bool `json:"headers,omitempty"`
}

// Units of GlobalRateLimit.Unit, the rate limit service's.
const (
	UnitSecond = "second"
	UnitMinute = "minute"
	UnitHour   = "hour"
	UnitDay    = "day"
)

// What a global limit counts by (RateLimitKey.By).
const (
	RateLimitByService = "service"
)

// GlobalRateLimit is one limit counted by the rate limit service:
// Requests per Unit for each combination of the values of By.
type GlobalRateLimit struct {
	// ID names the limit within its domain: Envoy sends it as the first
	// entry of the request's descriptor, and the service's configuration
	// holds the limit under it. Unique within the domain.
	ID       string         `json:"id"`
	Requests uint32         `json:"requests"`
	Unit     string         `json:"unit"`
	By       []RateLimitKey `json:"by,omitempty"`
	// Shadow counts requests over the limit without refusing them.
	Shadow bool `json:"shadow,omitempty"`
	// Source is the policy file and line of the limit.
	Source string `json:"source,omitempty"`
}

// RateLimitKey is one thing a global limit counts by: RateLimitByClientIP,
// RateLimitByPath, RateLimitByService, or RateLimitByHeader with Header.
type RateLimitKey struct {
	By     string `json:"by"`
	Header string `json:"header,omitempty"`
}

func (l *GlobalRateLimit) validate() error {
	var errs []error
	if l.ID == "" || strings.HasSuffix(l.ID, "*") || strings.Contains(l.ID, ".") {
		// The service takes a value ending in '*' as a prefix pattern,
		// and its stats split names at dots.
		errs = append(errs, fmt.Errorf("global rate limit id %q", l.ID))
	}
	if l.Requests == 0 {
		errs = append(errs, fmt.Errorf("global rate limit %q: no requests", l.ID))
	}
	switch l.Unit {
	case UnitSecond, UnitMinute, UnitHour, UnitDay:
	default:
		errs = append(errs, fmt.Errorf("global rate limit %q: unit %q", l.ID, l.Unit))
	}
	seen := map[string]bool{}
	for _, k := range l.By {
		switch {
		case seen[k.By]:
			errs = append(errs, fmt.Errorf("global rate limit %q: by %q twice", l.ID, k.By))
		case k.By != RateLimitByClientIP && k.By != RateLimitByPath && k.By != RateLimitByService && k.By != RateLimitByHeader:
			errs = append(errs, fmt.Errorf("global rate limit %q: by %q", l.ID, k.By))
		case (k.By == RateLimitByHeader) != (k.Header != ""):
			errs = append(errs, fmt.Errorf("global rate limit %q: by %q with header %q", l.ID, k.By, k.Header))
		}
		seen[k.By] = true
	}
	return errors.Join(errs...)
}

// validateGlobalRateLimits checks a listener's global limits: each is
// well formed, has a rate limit service to ask, and has an ID no other
// limit of the domain (ids) has.
func (l *Listener) validateGlobalRateLimits(clusters map[string]bool, ids map[string]bool) error {
	var errs []error
	if s := l.RateLimitService; s != nil {
		if !clusters[clusterKey(s.Cluster, "")] {
			errs = append(errs, fmt.Errorf("listener %q: rate limit service on unknown cluster %q", l.Name, s.Cluster))
		}
		if s.Domain == "" || s.Timeout.Duration <= 0 {
			errs = append(errs, fmt.Errorf("listener %q: rate limit service with domain %q, timeout %s", l.Name, s.Domain, s.Timeout))
		}
	}
	check := func(where string, limits []GlobalRateLimit) {
		if len(limits) > 0 && l.RateLimitService == nil {
			errs = append(errs, fmt.Errorf("listener %q %s: global rate limits without a rate limit service", l.Name, where))
		}
		for i := range limits {
			errs = append(errs, limits[i].validate())
			if ids[limits[i].ID] {
				errs = append(errs, fmt.Errorf("listener %q %s: global rate limit id %q used twice", l.Name, where, limits[i].ID))
			}
			ids[limits[i].ID] = true
		}
	}
	for _, vh := range l.VirtualHosts {
		check(fmt.Sprintf("virtual host %q", vh.Name), vh.GlobalRateLimits)
		for _, r := range vh.Routes {
			check(fmt.Sprintf("route %q", r.Name), r.GlobalRateLimits)
		}
	}
	return errors.Join(errs...)
}

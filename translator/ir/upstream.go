package ir

import (
	"errors"
	"fmt"
)

// Load balancing policies of a Cluster (LB).
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBRingHash     = "ring_hash"
	LBMaglev       = "maglev"
	LBRandom       = "random"
)

// CircuitBreakers caps what an Envoy sends to a cluster at once; nil
// fields keep the envoy package's defaults.
type CircuitBreakers struct {
	MaxConnections     *uint32 `json:"maxConnections,omitempty"`
	MaxPendingRequests *uint32 `json:"maxPendingRequests,omitempty"`
	MaxRequests        *uint32 `json:"maxRequests,omitempty"`
	// MaxRetries, when set, replaces the default retry budget with a
	// fixed number of concurrent retries.
	MaxRetries *uint32 `json:"maxRetries,omitempty"`
}

// OutlierDetection overrides the envoy package's outlier detection
// defaults; nil fields keep them.
type OutlierDetection struct {
	Consecutive5xx                 *uint32   `json:"consecutive5xx,omitempty"`
	ConsecutiveGatewayErrors       *uint32   `json:"consecutiveGatewayErrors,omitempty"`
	ConsecutiveLocalOriginFailures *uint32   `json:"consecutiveLocalOriginFailures,omitempty"`
	Interval                       *Duration `json:"interval,omitempty"`
	BaseEjectionTime               *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionTime                *Duration `json:"maxEjectionTime,omitempty"`
	MaxEjectionPercent             *uint32   `json:"maxEjectionPercent,omitempty"`
}

// HealthCheck is an active HTTP health check of every endpoint.
type HealthCheck struct {
	Path               string   `json:"path"`
	Interval           Duration `json:"interval"`
	Timeout            Duration `json:"timeout"`
	HealthyThreshold   uint32   `json:"healthyThreshold"`
	UnhealthyThreshold uint32   `json:"unhealthyThreshold"`
}

// HashPolicy is what a route hashes requests on, for a cluster with
// consistent hashing (ring hash, maglev). Exactly one field is set.
type HashPolicy struct {
	Cookie   *HashCookie `json:"cookie,omitempty"`
	Header   string      `json:"header,omitempty"`
	SourceIP bool        `json:"sourceIP,omitempty"`
}

// HashCookie hashes on a cookie that Envoy sets when the request lacks it.
type HashCookie struct {
	Name string   `json:"name"`
	TTL  Duration `json:"ttl"` // 0: a session cookie
	Path string   `json:"path,omitempty"`
}

// validateUpstream checks the cluster's upstream settings.
func (c *Cluster) validateUpstream() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("cluster %q subset %q: "+format, append([]any{c.Service, c.Subset}, args...)...))
	}
	switch c.LB {
	case "", LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom:
	default:
		bad("unknown load balancing policy %q", c.LB)
	}
	if c.SlowStart != nil && (c.SlowStart.Duration <= 0 || c.LB != "" && c.LB != LBRoundRobin && c.LB != LBLeastRequest) {
		bad("slow start %s with policy %q", c.SlowStart, c.LB)
	}
	if c.ConnectTimeout != nil && c.ConnectTimeout.Duration <= 0 {
		bad("connect timeout %s not positive", c.ConnectTimeout)
	}
	if c.IdleTimeout != nil && c.IdleTimeout.Duration < 0 {
		bad("idle timeout %s negative", c.IdleTimeout)
	}
	if od := c.OutlierDetection; od != nil && od.MaxEjectionPercent != nil && *od.MaxEjectionPercent > 100 {
		bad("max ejection percent %d over 100", *od.MaxEjectionPercent)
	}
	if hc := c.HealthCheck; hc != nil {
		if hc.Path == "" || hc.Path[0] != '/' || hc.Interval.Duration <= 0 || hc.Timeout.Duration <= 0 || hc.HealthyThreshold == 0 || hc.UnhealthyThreshold == 0 {
			bad("health check %+v incomplete", *hc)
		}
	}
	return errors.Join(errs...)
}

// validate checks a route's hash policy.
func (h *HashPolicy) validate() error {
	n := 0
	if h.Cookie != nil {
		n++
		if h.Cookie.Name == "" || h.Cookie.TTL.Duration < 0 {
			return fmt.Errorf("hash cookie %+v", *h.Cookie)
		}
	}
	if h.Header != "" {
		n++
	}
	if h.SourceIP {
		n++
	}
	if n != 1 {
		return errors.New("hash policy: want exactly one of cookie, header and sourceIP")
	}
	return nil
}

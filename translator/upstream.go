package translator

import (
	"time"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// upstream copies a Service policy's settings for the edge's cluster to
// the service (or to a subset of it) into c. Unset settings stay nil, so
// the envoy package's defaults apply.
func (t *translation) upstream(c *ir.Cluster) {
	sv, ok := t.set.Service(c.Service)
	if !ok {
		return
	}
	if lb := sv.LoadBalancer; lb != nil {
		if lb.Policy != policy.LBRoundRobin {
			c.LB = lb.Policy
		}
		c.SlowStart = optD(lb.SlowStart)
	}
	c.ConnectTimeout = ptrD(sv.ConnectTimeout)
	c.IdleTimeout = ptrD(sv.IdleTimeout)
	if cb := sv.CircuitBreakers; cb != nil {
		c.CircuitBreakers = &ir.CircuitBreakers{
			MaxConnections: cb.MaxConnections, MaxPendingRequests: cb.MaxPendingRequests,
			MaxRequests: cb.MaxRequests, MaxRetries: cb.MaxRetries,
		}
	}
	if od := sv.OutlierDetection; od != nil {
		c.OutlierDetection = &ir.OutlierDetection{
			Consecutive5xx:                 od.Consecutive5xx,
			ConsecutiveGatewayErrors:       od.ConsecutiveGatewayErrors,
			ConsecutiveLocalOriginFailures: od.ConsecutiveLocalOriginFailures,
			Interval:                       ptrD(od.Interval),
			BaseEjectionTime:               ptrD(od.BaseEjectionTime),
			MaxEjectionTime:                ptrD(od.MaxEjectionTime),
			MaxEjectionPercent:             od.MaxEjectionPercent,
		}
	}
	if hc := sv.HealthCheck; hc != nil {
		c.HealthCheck = &ir.HealthCheck{
			Path: hc.Path, Interval: ir.D(hc.Interval), Timeout: ir.D(hc.Timeout),
			HealthyThreshold: hc.HealthyThreshold, UnhealthyThreshold: hc.UnhealthyThreshold,
		}
	}
}

// hash sets a route's hash policy from its service's hashOn: a route to
// one service (or one subset of it) hashes requests to its instances.
// Policy validation refuses hashOn for a service in a split, since a split
// picks its destination at random per request.
func (t *translation) hash(r *policy.Route, out *ir.Route) {
	if r.Service == "" {
		return
	}
	sv, ok := t.set.Service(r.Service)
	if !ok || !sv.Hashes() {
		return
	}
	h := sv.LoadBalancer.Hash
	out.Hash = &ir.HashPolicy{Header: h.Header, SourceIP: h.SourceIP}
	if c := h.Cookie; c != nil {
		out.Hash.Cookie = &ir.HashCookie{Name: c.Name, TTL: ir.D(c.TTL), Path: c.Path}
	}
}

// ptrD converts an optional duration.
func ptrD(d *time.Duration) *ir.Duration {
	if d == nil {
		return nil
	}
	v := ir.D(*d)
	return &v
}

// optD converts a duration whose zero means unset.
func optD(d time.Duration) *ir.Duration {
	if d == 0 {
		return nil
	}
	return ptrD(&d)
}

package envoy

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// This file applies a Service policy's settings (ir.Cluster's LB,
// timeouts, circuit breakers, outlier detection, health check) to the
// edge's cluster for the service, and a route's hash policy.

// lbPolicies maps the IR's load balancing policies to Envoy's.
var lbPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"":                clusterv3.Cluster_ROUND_ROBIN,
	ir.LBRoundRobin:   clusterv3.Cluster_ROUND_ROBIN,
	ir.LBLeastRequest: clusterv3.Cluster_LEAST_REQUEST,
	ir.LBRingHash:     clusterv3.Cluster_RING_HASH,
	ir.LBMaglev:       clusterv3.Cluster_MAGLEV,
	ir.LBRandom:       clusterv3.Cluster_RANDOM,
}

// applyUpstream sets a cluster's load balancing, connect timeout, health
// check and upstream protocol options from c; circuit breakers and
// outlier detection are built from c by their own functions.
func applyUpstream(cl *clusterv3.Cluster, c *ir.Cluster) {
	cl.LbPolicy = lbPolicies[c.LB]
	if c.SlowStart != nil {
		ss := &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(c.SlowStart.Duration)}
		if c.LB == ir.LBLeastRequest {
			cl.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
		} else {
			cl.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
		}
	}
	if c.ConnectTimeout != nil {
		cl.ConnectTimeout = durationpb.New(c.ConnectTimeout.Duration)
	}
	if hc := c.HealthCheck; hc != nil {
		http := &corev3.HealthCheck_HttpHealthCheck{Path: hc.Path}
		if c.HTTP2 {
			http.CodecClientType = typev3.CodecClientType_HTTP2
		}
		cl.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            durationpb.New(hc.Timeout.Duration),
			Interval:           durationpb.New(hc.Interval.Duration),
			HealthyThreshold:   wrapperspb.UInt32(hc.HealthyThreshold),
			UnhealthyThreshold: wrapperspb.UInt32(hc.UnhealthyThreshold),
			HealthChecker:      &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: http},
		}}
	}
	if opts := upstreamProtocolOptions(c); opts != nil {
		cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsName: mustAny(opts)}
	}
}

// upstreamProtocolOptions says how Envoy speaks HTTP to a cluster's
// hosts: HTTP/2 for an HTTP/2 or gRPC service, and the idle timeout of its
// connections when the Service sets one. Nil: HTTP/1.1 with Envoy's
// defaults (connections idle out after an hour).
func upstreamProtocolOptions(c *ir.Cluster) *httpv3.HttpProtocolOptions {
	if c.IdleTimeout == nil {
		if c.HTTP2 {
			return http2UpstreamOptions
		}
		return nil
	}
	explicit := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}
	if c.HTTP2 {
		explicit.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	return &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(c.IdleTimeout.Duration)},
		UpstreamProtocolOptions:   &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
	}
}

// hashPolicy is a route's hash policy. A cookie with a TTL (zero
// included) is one Envoy sets itself on a request that lacks it, so the
// first request of a session already sticks.
func hashPolicy(h *ir.HashPolicy) []*routev3.RouteAction_HashPolicy {
	hp := &routev3.RouteAction_HashPolicy{}
	switch {
	case h.Cookie != nil:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{
			Name: h.Cookie.Name, Ttl: durationpb.New(h.Cookie.TTL.Duration), Path: h.Cookie.Path,
		}}
	case h.Header != "":
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}
	default:
		hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// tunedOutlierDetection is outlierDetection with a Service policy's
// settings (set) replacing single values; counting 5xx or gateway errors
// turns that kind of ejection on.
func tunedOutlierDetection(set *ir.OutlierDetection) *clusterv3.OutlierDetection {
	od := outlierDetection()
	if set == nil {
		return od
	}
	if v := set.Consecutive5xx; v != nil {
		od.Consecutive_5Xx, od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(*v), wrapperspb.UInt32(100)
	}
	if v := set.ConsecutiveGatewayErrors; v != nil {
		od.ConsecutiveGatewayFailure, od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(*v), wrapperspb.UInt32(100)
	}
	if v := set.ConsecutiveLocalOriginFailures; v != nil {
		od.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(*v)
	}
	if v := set.Interval; v != nil {
		od.Interval = durationpb.New(v.Duration)
	}
	if v := set.BaseEjectionTime; v != nil {
		od.BaseEjectionTime = durationpb.New(v.Duration)
	}
	if v := set.MaxEjectionTime; v != nil {
		od.MaxEjectionTime = durationpb.New(v.Duration)
	}
	if v := set.MaxEjectionPercent; v != nil {
		od.MaxEjectionPercent = wrapperspb.UInt32(*v)
	}
	return od
}

// tunedCircuitBreakers is circuitBreakers with a Service policy's limits
// (set); its maxRetries replaces the retry budget with a fixed cap, as
// Envoy ignores max_retries beside a budget.
func tunedCircuitBreakers(set *ir.CircuitBreakers) *clusterv3.CircuitBreakers {
	cb := circuitBreakers()
	if set == nil {
		return cb
	}
	th := cb.Thresholds[0]
	th.MaxConnections = optUInt32(set.MaxConnections)
	th.MaxPendingRequests = optUInt32(set.MaxPendingRequests)
	th.MaxRequests = optUInt32(set.MaxRequests)
	if set.MaxRetries != nil {
		th.RetryBudget, th.MaxRetries = nil, wrapperspb.UInt32(*set.MaxRetries)
	}
	return cb
}

// optUInt32 wraps an optional value; nil stays nil (Envoy's default).
func optUInt32(v *uint32) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(*v)
}

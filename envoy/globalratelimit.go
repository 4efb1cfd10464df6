package envoy

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// A global rate limit is enforced by Envoy's rate limit filter, which
// sends the rate limit service (envoyproxy/ratelimit) one descriptor per
// limit that applies to a request, and by the service, which counts each
// descriptor against the limit its configuration holds for it. Both halves
// are built here from the same IR, so that they agree: a descriptor the
// configuration does not hold is never limited, silently.
//
// A limit's descriptor is its ID, then the value of each thing it counts
// by, in order:
//
//	limit=<ID>, remote_address=<client IP>, header=<value>, path=<path>, destination_cluster=<cluster>
//
// The configuration holds, under the domain, a descriptor limit=<ID>
// whose nested descriptors name the same keys without values, so that
// each value gets a counter of its own, with the limit at the depth of the
// last. A header entry is left out of a request without the header (so
// such requests share a counter rather than escape the limit), so the
// configuration also holds the limit at the path that skips it.

// Descriptor keys. remote_address and destination_cluster are the keys
// Envoy's remote_address and destination_cluster actions use; the others
// are Switchyard's. None is another followed by '_', which the service
// joins keys and values with, so a value can never pass for a key.
const (
	DescriptorKeyLimit   = "limit"
	DescriptorKeyClient  = "remote_address"
	DescriptorKeyHeader  = "header"
	DescriptorKeyPath    = "path"
	DescriptorKeyService = "destination_cluster"
)

const rateLimitFilterName = "envoy.filters.http.ratelimit"

// globalRateLimitFilters is the rate limit filter for s, for a listener's
// chain; none when the group has no rate limit service (s nil). listener
// places it after the local rate limit and the authentication filters, so
// a request they refuse costs no call to the service. The filter is in
// every listener of a group with a service, so adding, editing or
// removing a limit changes routes only.
func globalRateLimitFilters(s *ir.RateLimitService) []*hcmv3.HttpFilter {
	if s == nil {
		return nil
	}
	return []*hcmv3.HttpFilter{{Name: rateLimitFilterName, ConfigType: typedConfig(mustAny(rateLimitFilter(s)))}}
}

// rateLimitFilter asks the group's rate limit service, over gRPC, about
// every request with global limits (one call with all their
// descriptors). An over-limit answer is a 429 (RESOURCE_EXHAUSTED to a
// gRPC client, rather than Envoy's default UNAVAILABLE, which clients
// retry at once); no answer within Timeout forwards the request, or with
// FailureModeDeny answers it 500. (enable_retry_after_header would add
// Retry-After, but Envoy before 1.40 refuses the field.)
func rateLimitFilter(s *ir.RateLimitService) *ratelimitfilterv3.RateLimit {
	f := &ratelimitfilterv3.RateLimit{
		Domain:                         s.Domain,
		Timeout:                        durationpb.New(s.Timeout.Duration),
		FailureModeDeny:                s.FailureModeDeny,
		RateLimitedAsResourceExhausted: true,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterName(s.Cluster)},
			}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
	}
	if s.Headers {
		f.EnableXRatelimitHeaders = ratelimitfilterv3.RateLimit_DRAFT_VERSION_03
	}
	return f
}

// includeHostLimits makes a host's global limits apply to its routes
// that have limits of their own too (Envoy's default applies the host's
// only to routes without), so a host's limit is a limit on all of it.
func includeHostLimits() *anypb.Any {
	return mustAny(&ratelimitfilterv3.RateLimitPerRoute{VhRateLimits: ratelimitfilterv3.RateLimitPerRoute_INCLUDE})
}

// rateLimits is the rate limit actions of a host's or route's global
// limits: one descriptor each.
func rateLimits(limits []ir.GlobalRateLimit) []*routev3.RateLimit {
	if len(limits) == 0 {
		return nil
	}
	out := make([]*routev3.RateLimit, len(limits))
	for i := range limits {
		out[i] = &routev3.RateLimit{Actions: rateLimitActions(&limits[i])}
	}
	return out
}

// rateLimitActions makes a limit's descriptor (see the top of this file).
func rateLimitActions(l *ir.GlobalRateLimit) []*routev3.RateLimit_Action {
	actions := []*routev3.RateLimit_Action{{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: DescriptorKeyLimit, DescriptorValue: l.ID},
	}}}
	for _, k := range l.By {
		var a routev3.RateLimit_Action
		switch k.By {
		case ir.RateLimitByClientIP:
			a.ActionSpecifier = &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}
		case ir.RateLimitByHeader:
			a.ActionSpecifier = &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
				HeaderName: k.Header, DescriptorKey: DescriptorKeyHeader, SkipIfAbsent: true,
			}}
		case ir.RateLimitByPath:
			a.ActionSpecifier = &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
				HeaderName: ":path", DescriptorKey: DescriptorKeyPath,
			}}
		case ir.RateLimitByService:
			a.ActionSpecifier = &routev3.RateLimit_Action_DestinationCluster_{DestinationCluster: &routev3.RateLimit_Action_DestinationCluster{}}
		}
		actions = append(actions, &a)
	}
	return actions
}

// descriptorKey is the key a limit's action for k gives its entry.
func descriptorKey(k ir.RateLimitKey) string {
	switch k.By {
	case ir.RateLimitByClientIP:
		return DescriptorKeyClient
	case ir.RateLimitByHeader:
		return DescriptorKeyHeader
	case ir.RateLimitByPath:
		return DescriptorKeyPath
	}
	return DescriptorKeyService
}

// RateLimitConfigs is the configuration the group's rate limit service
// needs for the group's global limits: one RateLimitConfig per domain its
// listeners ask in (a group has one, ir.RateLimitDomain(cfg.Group); the
// resource is named after it), holding a descriptor for each limit of
// each host and route. It is nil when the group has no rate limit
// service, and a config without descriptors when the group has a service
// but no limits.
//
// The control plane serves these to envoyproxy/ratelimit over xDS
// (resource.RateLimitConfigType), the configs of every group together:
// domains, and so resource names, never clash between groups. Call it
// with the same IR that Build turns into the group's Envoy resources:
// the descriptors Envoy sends are made from that IR, and only these match
// them. Pure and deterministic, like Build; the result is new on each call.
func RateLimitConfigs(cfg *ir.Config) []*rlsconfv3.RateLimitConfig {
	var out []*rlsconfv3.RateLimitConfig
	byDomain := map[string]*rlsconfv3.RateLimitConfig{}
	for _, l := range cfg.Listeners {
		s := l.RateLimitService
		if s == nil {
			continue
		}
		c := byDomain[s.Domain]
		if c == nil {
			c = &rlsconfv3.RateLimitConfig{Name: s.Domain, Domain: s.Domain}
			byDomain[s.Domain] = c
			out = append(out, c)
		}
		for _, vh := range l.VirtualHosts {
			for i := range vh.GlobalRateLimits {
				c.Descriptors = append(c.Descriptors, limitDescriptor(&vh.GlobalRateLimits[i]))
			}
			for _, r := range vh.Routes {
				for i := range r.GlobalRateLimits {
					c.Descriptors = append(c.Descriptors, limitDescriptor(&r.GlobalRateLimits[i]))
				}
			}
		}
	}
	return out
}

// rateLimitUnits maps the IR's units to the service's.
var rateLimitUnits = map[string]rlsconfv3.RateLimitUnit{
	ir.UnitSecond: rlsconfv3.RateLimitUnit_SECOND,
	ir.UnitMinute: rlsconfv3.RateLimitUnit_MINUTE,
	ir.UnitHour:   rlsconfv3.RateLimitUnit_HOUR,
	ir.UnitDay:    rlsconfv3.RateLimitUnit_DAY,
}

// limitDescriptor is the configuration of one limit: limit=<ID> and,
// nested under it, each descriptor Envoy can send for the limit (every
// one with or without its header entry), the limit at the end of each.
func limitDescriptor(l *ir.GlobalRateLimit) *rlsconfv3.RateLimitDescriptor {
	root := &rlsconfv3.RateLimitDescriptor{Key: DescriptorKeyLimit, Value: l.ID}
	for _, keys := range sentKeys(l.By) {
		d := root
		for _, key := range keys {
			d = child(d, key)
		}
		d.RateLimit = &rlsconfv3.RateLimitPolicy{Unit: rateLimitUnits[l.Unit], RequestsPerUnit: l.Requests}
		d.ShadowMode = l.Shadow
	}
	return root
}

// sentKeys lists the key sequences Envoy can send after limit=<ID> for a
// limit counting by keys: all of them, and without each header entry
// (skipped when the request lacks the header), the full one first.
func sentKeys(keys []ir.RateLimitKey) [][]string {
	seqs := [][]string{nil}
	for _, k := range keys {
		key := descriptorKey(k)
		next := make([][]string, 0, 2*len(seqs))
		for _, s := range seqs {
			next = append(next, append(append([]string(nil), s...), key))
		}
		if k.By == ir.RateLimitByHeader {
			next = append(next, seqs...)
		}
		seqs = next
	}
	return seqs
}

// child returns d's nested descriptor for key (any value), adding it.
func child(d *rlsconfv3.RateLimitDescriptor, key string) *rlsconfv3.RateLimitDescriptor {
	for _, c := range d.Descriptors {
		if c.Key == key && c.Value == "" {
			return c
		}
	}
	c := &rlsconfv3.RateLimitDescriptor{Key: key}
	d.Descriptors = append(d.Descriptors, c)
	return c
}

package envoy

import (
	"net/http"
	"net/netip"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// ipAccessPolicy names the one RBAC policy of a route's IP access, which
// Envoy's rbac stats and debug logs show.
const ipAccessPolicy = "ip-access"

// rbacFilter has no rules of its own: routes with IP access set theirs.
func rbacFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: httpRBACFilterName, ConfigType: typedConfig(mustAny(&rbachttpv3.RBAC{}))}
}

// ipAccessRBAC turns a route's IP access into one DENY policy: a client
// in any denied range, or (with an allow list) in no allowed one. Envoy's
// remote_ip is the client's address as the listener determined it: the
// peer's, or with trusted hops the one X-Forwarded-For gives.
func ipAccessRBAC(a *ir.IPAccess) *anypb.Any {
	var refused []*rbacv3.Principal
	if len(a.Deny) > 0 {
		refused = append(refused, anyOf(a.Deny))
	}
	if len(a.Allow) > 0 {
		refused = append(refused, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyOf(a.Allow)}})
	}
	rules := &rbacv3.RBAC{
		Action: rbacv3.RBAC_DENY,
		Policies: map[string]*rbacv3.Policy{ipAccessPolicy: {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  refused,
		}},
	}
	return mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: rules}})
}

// anyOf matches a client address in any of the ranges, which the IR
// holds in canonical form.
func anyOf(cidrs []string) *rbacv3.Principal {
	ids := make([]*rbacv3.Principal, 0, len(cidrs))
	for _, c := range cidrs {
		p := netip.MustParsePrefix(c)
		ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{
			AddressPrefix: p.Addr().String(),
			PrefixLen:     wrapperspb.UInt32(uint32(p.Bits())),
		}}})
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

// localRateLimit is a route's token bucket. Envoy answers 429 when it is
// empty and counts it under <stat prefix>.http_local_rate_limit; in
// shadow mode it counts and forwards.
//
// With By, the request's client (its address, or a header's or the
// path's value) picks a bucket: a wildcard descriptor gives each value
// its own, of the route's size, up to Clients of them. The route's own
// bucket then serves only the requests without a value (no such header).
func localRateLimit(listener, virtualHost string, r *ir.Route) *localratelimitv3.LocalRateLimit {
	rl := r.RateLimit
	bucket := &typev3.TokenBucket{
		MaxTokens:     rl.Burst,
		TokensPerFill: wrapperspb.UInt32(rl.Requests),
		FillInterval:  durationpb.New(rl.Per.Duration),
	}
	out := &localratelimitv3.LocalRateLimit{
		StatPrefix:     LocalRateLimitStatPrefix(listener, virtualHost, r.Name),
		TokenBucket:    bucket,
		FilterEnabled:  percent(100),
		FilterEnforced: percent(100),
	}
	if rl.Shadow {
		out.FilterEnforced = percent(0)
	}
	if rl.Headers {
		out.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	}
	if rl.By != "" {
		key, action := rateLimitAction(rl)
		out.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{action}}}
		out.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{
			Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: key}},
			TokenBucket: bucket,
		}}
		out.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
		out.MaxDynamicDescriptors = wrapperspb.UInt32(rl.Clients)
	}
	return out
}

// rateLimitAction is the descriptor entry's key and the action that
// fills in its value for a request.
func rateLimitAction(rl *ir.RateLimit) (string, *routev3.RateLimit_Action) {
	header := func(name, key string) *routev3.RateLimit_Action {
		return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
			RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: name, DescriptorKey: key},
		}}
	}
	switch rl.By {
	case ir.RateLimitByHeader:
		return "header", header(rl.Header, "header")
	case ir.RateLimitByPath:
		return "path", header(":path", "path")
	}
	// Envoy names this action's key itself.
	return "remote_address", &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RemoteAddress_{
		RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{},
	}}
}

func percent(n uint32) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED,
	}}
}

// rateLimitReply gives a listener's own 429 answers (those of the rate
// limit filter; a service's 429 is not Envoy's local reply, so it is
// kept) the policy's body, as is: Envoy's %...% commands in it are not
// expanded. It matches the status, not the RL response flag: the rate
// limit filter sets the flag only after its reply has been mapped.
func rateLimitReply(rr *ir.RateLimitResponse) *hcmv3.LocalReplyConfig {
	ct := rr.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
				Op:    accesslogv3.ComparisonFilter_EQ,
				Value: &corev3.RuntimeUInt32{DefaultValue: http.StatusTooManyRequests},
			}},
		}},
		Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: rr.Body}},
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: "%LOCAL_REPLY_BODY%"},
			}},
			ContentType: ct,
		},
	}}}
}

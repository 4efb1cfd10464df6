package envoy

import (
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Envoy extension names Switchyard configures.
const (
	hcmFilterName            = "envoy.filters.network.http_connection_manager"
	bufferFilterName         = "envoy.filters.http.buffer"
	corsFilterName           = "envoy.filters.http.cors"
	faultFilterName          = "envoy.filters.http.fault"
	localRateLimitFilterName = "envoy.filters.http.local_ratelimit"
	routerFilterName         = "envoy.filters.http.router"
	tlsTransportSocketName   = "envoy.transport_sockets.tls"
)

// listener builds an HTTP listener whose routes come over RDS.
//
// The CORS, local rate limit and fault injection filters are always in
// the chain, with no policy, limit or fault of their own: routes switch
// them on through their per-filter config. So adding or editing a CORS
// policy, a rate limit or a fault changes only the RouteConfiguration, and
// Envoy never drains the listener's connections for it. CORS comes first,
// so that a preflight is answered before anything else looks at it;
// faults come last, so an injected one looks to the client as the
// service's own failure would, after every check of the edge.
//
// The RBAC filter, which enforces routes' IP access, comes first of all:
// a refused client is told nothing else, not even CORS.
//
// The local rate limit comes right after CORS, before JWT validation and
// external authorization (authFilters): it costs nothing to check, while
// an authorization check is a call to another service, so a flood over
// the limit is refused before it can cost one call per request. The
// global rate limit (in a group with a rate limit service:
// globalRateLimitFilters) comes after them, so that its keys can come
// from authenticated values, and a request without a valid token costs no
// call to the rate limit service. So the order is IP access, CORS, local
// rate limit, the removal of clients' copies of the checks' headers, JWT,
// external authorization, global rate limit, body limit, faults, router.
//
// The buffer filter, which enforces a body limit, is listed disabled and
// switched on by the routes of a listener with one (its limit is per
// route); it comes after the rate limits and authorization, so that a
// rejected request is not read first.
func listener(l *ir.Listener) (_ *listenerv3.Listener, err error) {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: StatPrefix(l.Name),
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsConfig(),
			RouteConfigName: RouteConfigName(l.Name),
		}},
		HttpFilters: slices.Concat([]*hcmv3.HttpFilter{
			rbacFilter(),
			{Name: corsFilterName, ConfigType: typedConfig(mustAny(&corsv3.Cors{}))},
			{Name: localRateLimitFilterName, ConfigType: typedConfig(mustAny(&localratelimitv3.LocalRateLimit{
				StatPrefix: "http_local_rate_limiter",
			}))},
		}, authFilters(l), globalRateLimitFilters(l.RateLimitService), []*hcmv3.HttpFilter{
			bufferFilter(),
			{Name: faultFilterName, ConfigType: typedConfig(mustAny(&faultv3.HTTPFault{}))},
			{Name: routerFilterName, ConfigType: typedConfig(mustAny(&routerv3.Router{}))},
		}),
		// Take the client address from the connection, not from a
		// client-supplied X-Forwarded-For (Envoy's edge best practice),
		// unless the listener trusts that many proxies in front of it
		// to append to X-Forwarded-For.
		UseRemoteAddress:  wrapperspb.Bool(true),
		XffNumTrustedHops: l.XFFTrustedHops,
		// Route, rate-limit and forward one spelling of each path, so a
		// limit on /api/login also counts /api//login, /api/./login and
		// /api/%6cogin: RFC 3986 normalization (dot segments resolved,
		// escaped unreserved characters decoded) and runs of slashes merged.
		NormalizePath: wrapperspb.Bool(true),
		MergeSlashes:  true,
		// An escaped slash (%2F, %5C) is neither kept (the route would see
		// /api%2Flogin while many upstreams decode it to /api/login: a
		// bypass) nor silently rewritten: the client is redirected to the
		// unescaped path, so client, Envoy and upstream all see the path
		// that is matched. Browsers and HTTP libraries follow the redirect;
		// gRPC clients get an error, as with REJECT_REQUEST.
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
	}
	if l.MaxRequestHeadersKB > 0 {
		hcm.MaxRequestHeadersKb = wrapperspb.UInt32(l.MaxRequestHeadersKB)
	}
	// WebSocket upgrades for the whole listener, or off here and on for the
	// routes that ask (a route's setting overrides this one); Envoy answers
	// an upgrade it does not allow with 403. Always listed, so that a route
	// turning WebSockets on or off changes its RouteConfiguration only and
	// never drains the listener's connections.
	hcm.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{
		{UpgradeType: webSocketUpgrade, Enabled: wrapperspb.Bool(l.WebSocket)},
	}
	if l.RateLimitResponse != nil {
		hcm.LocalReplyConfig = rateLimitReply(l.RateLimitResponse)
	}
	hcm.Tracing = tracing(l.Tracing)
	if hcm.AccessLog, err = accessLogs(l.AccessLog); err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.Name, err)
	}
	hcmAny, err := anypb.New(hcm)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.Name, err)
	}
	chain := &listenerv3.FilterChain{
		Filters: []*listenerv3.Filter{{
			Name:       hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
		}},
	}
	if l.TLS != nil {
		ts, err := downstreamTLS(l.TLS)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.Name, err)
		}
		chain.TransportSocket = ts
	}
	return &listenerv3.Listener{
		Name:         ListenerName(l.Name),
		Address:      socketAddress(l.Address, l.Port),
		FilterChains: []*listenerv3.FilterChain{chain},
	}, nil
}

// downstreamTLS terminates TLS with certificates fetched over SDS. With
// several certificates Envoy picks the one whose names match the client's
// SNI, so one listener can serve several domains.
func downstreamTLS(t *ir.TLS) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", "http/1.1"}}
	for _, s := range t.Secrets {
		common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs,
			&tlsv3.SdsSecretConfig{Name: SecretName(s), SdsConfig: adsConfig()})
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if t.ClientCA != "" {
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: CASecretName(t.ClientCA), SdsConfig: adsConfig()},
		}
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
	}
	a, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a},
	}, nil
}

// bufferFilter is off unless a route's per-filter config sets its limit.
// Envoy requires a limit even so: the one given is never applied.
func bufferFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       bufferFilterName,
		Disabled:   true,
		ConfigType: typedConfig(mustAny(&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1)})),
	}
}

// bodyLimit switches a route's buffer filter on with its body limit;
// Envoy answers 413 to a larger body.
func bodyLimit(maxBytes uint32) *anypb.Any {
	return mustAny(&bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{
		Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(maxBytes)},
	}})
}

func typedConfig(a *anypb.Any) *hcmv3.HttpFilter_TypedConfig {
	return &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
}

// mustAny wraps a message whose type is linked into this binary; wrapping
// fails only for unregistered types, a programming error. Maps inside (an
// access log's JSON format) are marshalled in key order, so the same
// message always gives the same bytes, and so the same version.
func mustAny(m proto.Message) *anypb.Any {
	a := new(anypb.Any)
	err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		panic(fmt.Sprintf("anypb.New(%T): %v", m, err))
	}
	return a
}

// webSocketUpgrade is Envoy's upgrade type for WebSockets.
const webSocketUpgrade = "websocket"

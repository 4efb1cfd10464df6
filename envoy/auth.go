package envoy

import (
	"slices"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Envoy extension names of a listener's authentication and authorization.
const (
	jwtAuthnFilterName       = "envoy.filters.http.jwt_authn"
	extAuthzFilterName       = "envoy.filters.http.ext_authz"
	headerMutationFilterName = "envoy.filters.http.header_mutation"
)

// authFilters are a listener's JWT and external authorization filters, in
// that order: a request without a valid token is refused before the
// authorization service is asked about it (and so cannot load it), and
// the service sees the claims' headers the JWT filter added. Only a
// listener with them has them; routes choose through their per-filter
// config (routeAuth).
//
// Before them, every header those checks may set (claimHeaders,
// payloadHeader, upstreamHeaders) is removed from the request as the
// client sent it: the checks then add only verified values. Without this
// a client's own x-user would reach the upstream wherever a check did not
// overwrite it: on a route without the check on Envoy 1.39 and earlier
// (see authHeadersToRemove), and with an authorization service that
// allows a request without returning that header, on every Envoy.
func authFilters(l *ir.Listener) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if strip := authHeaders(l); len(strip) > 0 {
		mutations := make([]*mutationrulesv3.HeaderMutation, 0, len(strip))
		for _, h := range strip {
			mutations = append(mutations, &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Remove{Remove: h}})
		}
		out = append(out, &hcmv3.HttpFilter{Name: headerMutationFilterName, ConfigType: typedConfig(mustAny(&headermutationv3.HeaderMutation{
			Mutations: &headermutationv3.Mutations{RequestMutations: mutations},
		}))})
	}
	if l.JWT != nil {
		out = append(out, &hcmv3.HttpFilter{Name: jwtAuthnFilterName, ConfigType: typedConfig(mustAny(jwtAuthn(l)))})
	}
	if l.ExtAuthz != nil {
		out = append(out, &hcmv3.HttpFilter{Name: extAuthzFilterName, ConfigType: typedConfig(mustAny(extAuthz(l.ExtAuthz)))})
	}
	return out
}

// routeAuth adds what a route says to its listener's JWT and external
// authorization filters to its per-filter config. A route without a
// JWT requirement is not checked; authHeadersToRemove keeps clients from
// sending the headers those filters would have set.
func routeAuth(r *ir.Route, perFilter map[string]*anypb.Any) {
	if len(r.JWTRequire) > 0 {
		perFilter[jwtAuthnFilterName] = mustAny(&jwtauthnv3.PerRouteConfig{
			RequirementSpecifier: &jwtauthnv3.PerRouteConfig_RequirementName{RequirementName: ir.JWTRequirement(r.JWTRequire)},
		})
	}
	if r.ExtAuthzOff {
		perFilter[extAuthzFilterName] = mustAny(&extauthzv3.ExtAuthzPerRoute{
			Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true},
		})
	}
}

// authHeadersToRemove are the headers a route that forwards requests
// removes from them: those its listener's JWT providers (claimHeaders,
// payloadHeader) and HTTP authorization service (upstreamHeaders) set,
// less those the route's own checks set, and less those already in
// removed. Before envoyproxy/envoy#46586 (Envoy 1.39 and earlier) the JWT
// filter drops a client's copy of a provider's headers only on routes
// whose requirement names that provider, and the authorization filter
// never drops its upstream headers; so on a route without the check, a
// client could send its own x-user and the upstream would take it for a
// verified one.
//
// Envoy's router applies a route's header removals as it forwards the
// request, after every other filter has run (RouteEntry::
// finalizeRequestHeaders, called from the router's decodeHeaders): so a
// header the route's own checks set is never removed here, lest its
// verified value go too. A header the host's requestHeaders set or add
// is left alone: the route's removals apply after the host's changes
// (most_specific_header_mutations_wins), and would drop the operator's
// own value.
func authHeadersToRemove(l *ir.Listener, vh *ir.VirtualHost, r *ir.Route, removed []string) []string {
	keep := map[string]bool{}
	for _, h := range removed {
		keep[h] = true
	}
	if h := vh.RequestHeaders; h != nil {
		for _, hd := range slices.Concat(h.Set, h.Add) {
			keep[hd.Name] = true
		}
	}
	var set []string // every header the listener's checks may set
	if l.JWT != nil {
		for _, p := range l.JWT.Providers {
			headers := providerHeaders(&p)
			set = append(set, headers...)
			if slices.Contains(r.JWTRequire, p.Name) {
				for _, h := range headers {
					keep[h] = true
				}
			}
		}
	}
	if a := l.ExtAuthz; a != nil {
		set = append(set, a.UpstreamHeaders...)
		if !r.ExtAuthzOff {
			for _, h := range a.UpstreamHeaders {
				keep[h] = true
			}
		}
	}
	var out []string
	for _, h := range slices.Compact(slices.Sorted(slices.Values(set))) {
		if !keep[h] {
			out = append(out, h)
		}
	}
	return out
}

// authHeaders are the request headers a listener's JWT providers and
// HTTP authorization service may set, sorted, each once.
func authHeaders(l *ir.Listener) []string {
	var set []string
	if l.JWT != nil {
		for _, p := range l.JWT.Providers {
			set = append(set, providerHeaders(&p)...)
		}
	}
	if l.ExtAuthz != nil {
		set = append(set, l.ExtAuthz.UpstreamHeaders...)
	}
	return slices.Compact(slices.Sorted(slices.Values(set)))
}

// providerHeaders are the request headers a JWT provider sets from a
// verified token.
func providerHeaders(p *ir.JWTProvider) []string {
	var out []string
	if p.PayloadHeader != "" {
		out = append(out, p.PayloadHeader)
	}
	for _, c := range p.ClaimHeaders {
		out = append(out, c.Header)
	}
	return out
}

// jwtAuthn is a listener's JWT filter: its providers, and one requirement
// per provider and per set of providers a route accepts (named by
// ir.JWTRequirement), which routes pick by name.
func jwtAuthn(l *ir.Listener) *jwtauthnv3.JwtAuthentication {
	out := &jwtauthnv3.JwtAuthentication{
		Providers:      map[string]*jwtauthnv3.JwtProvider{},
		RequirementMap: map[string]*jwtauthnv3.JwtRequirement{},
	}
	one := func(name string) *jwtauthnv3.JwtRequirement {
		return &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: name}}
	}
	for _, p := range l.JWT.Providers {
		out.Providers[p.Name] = jwtProvider(&p)
		out.RequirementMap[p.Name] = one(p.Name)
	}
	for _, vh := range l.VirtualHosts {
		for _, r := range vh.Routes {
			name := ir.JWTRequirement(r.JWTRequire)
			if len(r.JWTRequire) < 2 || out.RequirementMap[name] != nil {
				continue
			}
			any := &jwtauthnv3.JwtRequirementOrList{}
			names := slices.Sorted(slices.Values(r.JWTRequire))
			for _, p := range slices.Compact(names) {
				any.Requirements = append(any.Requirements, one(p))
			}
			out.RequirementMap[name] = &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{RequiresAny: any}}
		}
	}
	return out
}

// jwtProvider checks tokens from one issuer against its keys: inline, or
// fetched over HTTP through a cluster when first needed and cached.
func jwtProvider(p *ir.JWTProvider) *jwtauthnv3.JwtProvider {
	out := &jwtauthnv3.JwtProvider{
		Issuer:               p.Issuer,
		Audiences:            p.Audiences,
		Forward:              p.Forward,
		ForwardPayloadHeader: p.PayloadHeader,
	}
	if r := p.RemoteJWKS; r != nil {
		out.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtauthnv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              r.URI,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ClusterName(r.Cluster)},
				Timeout:          durationpb.New(r.Timeout.Duration),
			},
			CacheDuration: durationpb.New(r.CacheDuration.Duration),
		}}
	} else {
		out.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: p.LocalJWKS},
		}}
	}
	for _, c := range p.ClaimHeaders {
		out.ClaimToHeaders = append(out.ClaimToHeaders, &jwtauthnv3.JwtClaimToHeader{HeaderName: c.Header, ClaimName: c.Claim})
	}
	return out
}

// extAuthz is a listener's external authorization filter. A denied
// request gets the service's answer (HTTP) or 403; one the service could
// not judge gets 403, or passes with FailOpen.
func extAuthz(a *ir.ExtAuthz) *extauthzv3.ExtAuthz {
	out := &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    a.FailOpen,
		AllowedHeaders:      headerList(a.Headers),
	}
	timeout := durationpb.New(a.Timeout.Duration)
	if a.GRPC {
		out.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterName(a.Cluster)}},
			Timeout:         timeout,
		}}
		return out
	}
	svc := &extauthzv3.HttpService{
		ServerUri: &corev3.HttpUri{
			Uri:              "http://" + a.Authority,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: ClusterName(a.Cluster)},
			Timeout:          timeout,
		},
		PathPrefix: a.PathPrefix,
	}
	if a.UpstreamHeaders != nil || a.ClientHeaders != nil {
		svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
			AllowedUpstreamHeaders: headerList(a.UpstreamHeaders),
			AllowedClientHeaders:   headerList(a.ClientHeaders),
		}
	}
	out.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: svc}
	return out
}

// headerList matches the named headers, whatever their case; nil for none.
func headerList(names []string) *matcherv3.ListStringMatcher {
	if names == nil {
		return nil
	}
	out := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		out.Patterns = append(out.Patterns, &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}, IgnoreCase: true,
		})
	}
	return out
}

package envoy

import (
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// routeConfig builds the RouteConfiguration a listener fetches over RDS.
func routeConfig(l *ir.Listener) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{Name: RouteConfigName(l.Name)}
	taken := map[string]bool{}
	for _, vh := range l.VirtualHosts {
		for _, d := range vh.Domains {
			taken[strings.ToLower(d)] = true
		}
	}
	for _, vh := range l.VirtualHosts {
		v := &routev3.VirtualHost{Name: vh.Name, Domains: withListenerPort(vh.Domains, l.Port, taken)}
		if vh.HTTPSRedirect {
			// Envoy redirects a request whose x-forwarded-proto is not
			// https, which the listener sets from the connection itself
			// (use_remote_address), before any route is matched.
			v.RequireTls = routev3.VirtualHost_ALL
		}
		v.RequestHeadersToAdd, v.RequestHeadersToRemove = headerChanges(vh.RequestHeaders)
		v.ResponseHeadersToAdd, v.ResponseHeadersToRemove = headerChanges(vh.ResponseHeaders)
		if v.RateLimits = rateLimits(vh.GlobalRateLimits); v.RateLimits != nil {
			v.TypedPerFilterConfig = map[string]*anypb.Any{rateLimitFilterName: includeHostLimits()}
		}
		if vh.RequestHeaders != nil || vh.ResponseHeaders != nil {
			// A route's header changes are applied after its host's, so
			// the route's win where both name a header (Envoy's default
			// is the reverse). Set only where a host changes headers.
			rc.MostSpecificHeaderMutationsWins = true
		}
		for i := range vh.Routes {
			r, err := route(l.Name, vh.Name, &vh.Routes[i])
			if err != nil {
				return nil, fmt.Errorf("listener %q virtual host %q: %w", l.Name, vh.Name, err)
			}
			if r.GetRoute() != nil { // it forwards requests
				r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, authHeadersToRemove(l, &vh, &vh.Routes[i], r.RequestHeadersToRemove)...)
			}
			v.Routes = append(v.Routes, r)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	return rc, nil
}

// withListenerPort adds "domain:port" after each domain that names no port.
// Clients on a non-default port send it in the Host header
// (shop.example.com:8443), and Envoy matches Host, port included, against
// the domains. A form another virtual host already lists is skipped, as
// Envoy rejects duplicate domains.
func withListenerPort(domains []string, port uint32, taken map[string]bool) []string {
	out := make([]string, 0, 2*len(domains))
	for _, d := range domains {
		out = append(out, d)
		if strings.HasSuffix(d, "*") || strings.LastIndex(d, ":") > strings.LastIndex(d, "]") {
			continue // "*" and prefix wildcards match any port; d names its own
		}
		withPort := d + ":" + strconv.FormatUint(uint64(port), 10)
		if !taken[strings.ToLower(withPort)] {
			out = append(out, withPort)
		}
	}
	return out
}

// backendCluster names the cluster a backend's requests go to: the
// service's own, or its mesh cluster when it is reached through its
// sidecars.
func backendCluster(b *ir.Backend) string {
	if b.MeshCluster != "" {
		return MeshClusterName(b.MeshCluster)
	}
	return SubsetClusterName(b.Service, b.Subset)
}

func route(listener, virtualHost string, r *ir.Route) (*routev3.Route, error) {
	out := &routev3.Route{Name: r.Name, Match: routeMatch(&r.Match)}
	switch {
	case r.Unavailable != "":
		// The reason is for operators (the IR, the log); clients get
		// the status alone, as for a service without instances.
		out.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 503}}
	case r.Redirect != nil:
		out.Action = &routev3.Route_Redirect{Redirect: redirectAction(r.Redirect)}
	case r.DirectResponse != nil:
		out.Action = &routev3.Route_DirectResponse{DirectResponse: directResponse(r.DirectResponse)}
		if ct := r.DirectResponse.ContentType; ct != "" {
			out.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "content-type", Value: ct},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}}
		}
	default:
		action, err := routeAction(r)
		if err != nil {
			return nil, err
		}
		out.Action = &routev3.Route_Route{Route: action}
	}
	reqAdd, reqRemove := headerChanges(r.RequestHeaders)
	respAdd, respRemove := headerChanges(r.ResponseHeaders)
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = reqAdd, reqRemove
	out.ResponseHeadersToAdd = append(out.ResponseHeadersToAdd, respAdd...)
	out.ResponseHeadersToRemove = respRemove
	// What the listener's always-present filters do for this route.
	perFilter := map[string]*anypb.Any{}
	if r.RateLimit != nil {
		a, err := anypb.New(localRateLimit(listener, virtualHost, r))
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", r.Name, err)
		}
		perFilter[localRateLimitFilterName] = a
	}
	if r.CORS != nil {
		perFilter[corsFilterName] = mustAny(corsPolicy(r.CORS))
	}
	if r.Fault != nil {
		perFilter[faultFilterName] = mustAny(httpFault(r.Fault))
	}
	if r.MaxRequestBytes > 0 {
		perFilter[bufferFilterName] = bodyLimit(r.MaxRequestBytes)
	}
	if r.IPAccess != nil {
		perFilter[httpRBACFilterName] = ipAccessRBAC(r.IPAccess)
	}
	routeAuth(r, perFilter)
	if len(perFilter) > 0 {
		out.TypedPerFilterConfig = perFilter
	}
	return out, nil
}

// routeAction forwards a route's requests to its backends.
func routeAction(r *ir.Route) (*routev3.RouteAction, error) {
	action := &routev3.RouteAction{}
	switch len(r.Backends) {
	case 0:
		return nil, fmt.Errorf("route %q: no backends", r.Name)
	case 1:
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: backendCluster(&r.Backends[0])}
	default:
		wc := &routev3.WeightedCluster{}
		for i := range r.Backends {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   backendCluster(&r.Backends[i]),
				Weight: wrapperspb.UInt32(r.Backends[i].Weight),
			})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.Timeout != nil {
		action.Timeout = durationpb.New(r.Timeout.Duration)
	}
	if r.WebSocket {
		action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{
			{UpgradeType: webSocketUpgrade, Enabled: wrapperspb.Bool(true)},
		}
	}
	if r.Retries != nil {
		action.RetryPolicy = retryPolicy(r.Retries)
	}
	if r.Hash != nil {
		action.HashPolicy = hashPolicy(r.Hash)
	}
	action.RateLimits = rateLimits(r.GlobalRateLimits)
	for _, m := range r.Mirrors {
		// Envoy sends each copy with "-shadow" after its Host's name
		// (shop.example.com-shadow:8080), so upstreams can tell copies.
		action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster: ClusterName(m.Service),
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
				Numerator: m.PerMillion, Denominator: typev3.FractionalPercent_MILLION,
			}},
		})
	}
	if rw := r.Rewrite; rw != nil {
		action.PrefixRewrite = rw.PrefixRewrite
		if rw.RegexRewrite != nil {
			action.RegexRewrite = regexRewrite(rw.RegexRewrite)
		}
		if rw.Host != "" {
			action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Host}
		}
		if rw.HostFromUpstream {
			// The endpoint's hostname: its address (lbEndpoint).
			action.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}
	}
	return action, nil
}

// redirectCodes maps a redirect's status to Envoy's enum.
var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// redirectAction answers with a redirect.
func redirectAction(rd *ir.Redirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{
		HostRedirect: rd.Host,
		PortRedirect: rd.Port,
		ResponseCode: redirectCodes[rd.Code],
		StripQuery:   rd.StripQuery,
	}
	if rd.Scheme != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	switch {
	case rd.Path != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.Path}
	case rd.PrefixRewrite != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.PrefixRewrite}
	case rd.RegexRewrite != nil:
		a.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: regexRewrite(rd.RegexRewrite)}
	}
	return a
}

// headerChanges is a header change as Envoy's headers to add and to
// remove; nil gives none.
func headerChanges(h *ir.Headers) ([]*corev3.HeaderValueOption, []string) {
	if h == nil {
		return nil, nil
	}
	var add []*corev3.HeaderValueOption
	for _, hd := range h.Set {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: hd.Name, Value: hd.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, hd := range h.Add {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: hd.Name, Value: hd.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return add, h.Remove
}

// corsPolicy is a route's CORS policy. Only routes carry one (the
// translator gives each route its host's unless it has its own), as
// Envoy merges a route's and its host's field by field.
func corsPolicy(c *ir.CORS) *corsv3.CorsPolicy {
	p := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.AllowMethods, ","),
		AllowHeaders:  strings.Join(c.AllowHeaders, ","),
		ExposeHeaders: strings.Join(c.ExposeHeaders, ","),
	}
	for _, o := range c.AllowOrigins {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o.Exact}, IgnoreCase: true}
		if o.Regex != "" {
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: o.Regex}}}
		}
		p.AllowOriginStringMatch = append(p.AllowOriginStringMatch, sm)
	}
	if c.MaxAge != nil {
		p.MaxAge = strconv.FormatInt(int64(c.MaxAge.Seconds()), 10)
	}
	if c.AllowCredentials {
		p.AllowCredentials = wrapperspb.Bool(true)
	}
	return p
}

// httpFault is a route's fault injection, which replaces the listener's
// empty fault filter config for the route.
func httpFault(f *ir.Fault) *faultv3.HTTPFault {
	perMillion := func(n uint32) *typev3.FractionalPercent {
		return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_MILLION}
	}
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.Duration.Duration)},
			Percentage:         perMillion(d.PerMillion),
		}
	}
	if a := f.Abort; a != nil {
		out.Abort = &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(a.Status)},
			Percentage: perMillion(a.PerMillion),
		}
	}
	return out
}

// directResponse answers with a fixed status and body.
func directResponse(dr *ir.DirectResponse) *routev3.DirectResponseAction {
	a := &routev3.DirectResponseAction{Status: uint32(dr.Status)}
	if dr.Body != "" {
		a.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: dr.Body}}
	}
	return a
}

func regexRewrite(rw *ir.RegexRewrite) *matcherv3.RegexMatchAndSubstitute {
	return &matcherv3.RegexMatchAndSubstitute{
		Pattern:      &matcherv3.RegexMatcher{Regex: rw.Pattern},
		Substitution: rw.Substitution,
	}
}

func routeMatch(m *ir.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch {
	case m.Path != "":
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case m.PathRegex != "":
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	default:
		prefix := m.PathPrefix
		if prefix == "" {
			prefix = "/"
		}
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
	}
	if m.CaseInsensitive {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	if len(m.Methods) > 0 {
		rm.Headers = append(rm.Headers, methodMatcher(m.Methods))
	}
	for _, h := range m.Headers {
		rm.Headers = append(rm.Headers, headerMatcher(&h))
	}
	for _, q := range m.QueryParams {
		rm.QueryParameters = append(rm.QueryParameters, queryParamMatcher(&q))
	}
	return rm
}

// methodMatcher matches any of the methods: one header matcher on :method,
// since Envoy's header matchers must all hold.
func methodMatcher(methods []string) *routev3.HeaderMatcher {
	sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: methods[0]}}
	if len(methods) > 1 {
		// Methods are capital letters only (policy.Methods): no quoting.
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(methods, "|")}}
	}
	return &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func queryParamMatcher(q *ir.QueryParamMatch) *routev3.QueryParameterMatcher {
	qm := &routev3.QueryParameterMatcher{Name: q.Name}
	switch {
	case q.Present:
		qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
	case q.Regex != "":
		qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: q.Regex}},
		}}
	default:
		qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Exact},
		}}
	}
	return qm
}

func headerMatcher(h *ir.HeaderMatch) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
	var sm *matcherv3.StringMatcher
	switch {
	case h.Present, h.Absent:
		// present_match false matches a request without the header.
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: h.Present}
		return hm
	case h.Prefix != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.Prefix}}
	case h.Suffix != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: h.Suffix}}
	case h.Contains != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: h.Contains}}
	case h.Regex != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}}}
	default:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Exact}}
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	return hm
}

// previousHosts is Envoy's retry host predicate that skips the hosts a
// request has already tried.
var previousHosts = func() *routev3.RetryPolicy_RetryHostPredicate {
	cfg, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
	if err != nil {
		panic(err) // an empty message always marshals
	}
	return &routev3.RetryPolicy_RetryHostPredicate{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: cfg},
	}
}()

// retryPolicy is a route's retries, at the edge and in the mesh.
func retryPolicy(r *ir.Retries) *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{
		RetryOn:    strings.Join(r.On, ","),
		NumRetries: wrapperspb.UInt32(r.Attempts),
		// A retry goes to another instance when there is one: retrying
		// the instance that just failed rarely helps.
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{previousHosts},
		HostSelectionRetryMaxAttempts: 3,
	}
	if r.PerTryTimeout.Duration > 0 {
		rp.PerTryTimeout = durationpb.New(r.PerTryTimeout.Duration)
	}
	if b := r.Backoff; b != nil {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(b.Base.Duration),
			MaxInterval:  durationpb.New(b.Max.Duration),
		}
	}
	rp.RetriableStatusCodes = r.StatusCodes
	for i := range r.Headers {
		rp.RetriableHeaders = append(rp.RetriableHeaders, headerMatcher(&r.Headers[i]))
	}
	return rp
}

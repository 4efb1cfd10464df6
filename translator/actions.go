package translator

import (
	"regexp"
	"strings"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// match converts a route's match.
func match(m *policy.Match) ir.Match {
	out := ir.Match{
		PathPrefix:      m.PathPrefix,
		Path:            m.Path,
		PathRegex:       m.PathRegex,
		CaseInsensitive: m.CaseInsensitive,
		Methods:         append([]string(nil), m.Methods...),
	}
	if out.PathPrefix == "" && out.Path == "" && out.PathRegex == "" {
		out.PathPrefix = "/"
	}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, ir.HeaderMatch{
			Name: h.Name, Exact: h.Exact, Prefix: h.Prefix, Suffix: h.Suffix, Contains: h.Contains,
			Regex: h.Regex, Present: h.Present, Absent: h.Absent, Invert: h.Invert,
		})
	}
	for _, q := range m.QueryParams {
		out.QueryParams = append(out.QueryParams, ir.QueryParamMatch{
			Name: q.Name, Exact: q.Exact, Regex: q.Regex, Present: q.Present,
		})
	}
	return out
}

// forwardChanges sets what a forwarding route changes or adds to the
// requests it forwards: rewrites, request headers, mirrors and faults.
func forwardChanges(r *policy.Route, out *ir.Route) {
	if r.Rewrite != nil {
		out.Rewrite = rewrite(r.Rewrite, &r.Match)
	}
	out.RequestHeaders = headers(r.RequestHeaders)
	for _, m := range r.Mirror {
		out.Mirrors = append(out.Mirrors, ir.Mirror{Service: m.Service, PerMillion: m.PerMillion})
	}
	out.Fault = fault(r.Fault)
}

// redirect is a route's redirect action.
func redirect(rd *policy.Redirect, m *policy.Match) *ir.Redirect {
	out := &ir.Redirect{
		Scheme:     rd.Scheme,
		Host:       rd.Host,
		Port:       rd.Port,
		Path:       rd.Path,
		Code:       rd.Code,
		StripQuery: rd.StripQuery,
	}
	if rd.Prefix != "" {
		out.PrefixRewrite, out.RegexRewrite = prefixRewrite(m, rd.Prefix)
	}
	return out
}

// prefixRewrite replaces the prefix a route matched with prefix, as
// Envoy's prefix rewrite does, except where that leaves two slashes:
// Envoy swaps the matched characters only, so pathPrefix /orders with
// prefix / turns /orders/x into //x. When the match does not end in a
// slash and the new prefix does, the slashes after the match are folded
// into the new prefix's by a regex rewrite instead: /orders/x becomes /x,
// and /orders becomes /.
func prefixRewrite(m *policy.Match, prefix string) (string, *ir.RegexRewrite) {
	if m.PathPrefix == "" || strings.HasSuffix(m.PathPrefix, "/") || !strings.HasSuffix(prefix, "/") {
		return prefix, nil
	}
	return "", &ir.RegexRewrite{Pattern: "^" + regexp.QuoteMeta(m.PathPrefix) + "/*", Substitution: prefix}
}

// httpsRedirectRest gives a plain-HTTP listener with httpsRedirect a
// catch-all host when it has none, so that a request for any host is
// redirected, not only those of the listener's hosts: one line in the
// file turns a port 80 listener into a redirect to HTTPS.
func httpsRedirectRest(l *policy.Listener, il *ir.Listener) {
	if !l.HTTPSRedirect || l.TLS != nil {
		return
	}
	for _, vh := range il.VirtualHosts {
		for _, d := range vh.Domains {
			if d == "*" {
				return
			}
		}
	}
	il.VirtualHosts = append(il.VirtualHosts, ir.VirtualHost{Name: "*", Domains: []string{"*"}, HTTPSRedirect: true})
}

// headers converts a header change; nil stays nil.
func headers(h *policy.Headers) *ir.Headers {
	if h == nil {
		return nil
	}
	out := &ir.Headers{Remove: append([]string(nil), h.Remove...)}
	for _, hd := range h.Set {
		out.Set = append(out.Set, ir.Header{Name: hd.Name, Value: hd.Value})
	}
	for _, hd := range h.Add {
		out.Add = append(out.Add, ir.Header{Name: hd.Name, Value: hd.Value})
	}
	return out
}

// mirrorServices lists the services a route mirrors requests to: each
// needs its cluster, as the route's own services do.
func mirrorServices(r *policy.Route) []serviceRef {
	var out []serviceRef
	for _, m := range r.Mirror {
		out = append(out, serviceRef{name: m.Service, pos: m.Pos, unregistered: "nothing is mirrored to it until it is"})
	}
	return out
}

// fault converts a route's fault injection; nil stays nil.
func fault(f *policy.Fault) *ir.Fault {
	if f == nil {
		return nil
	}
	out := &ir.Fault{}
	if d := f.Delay; d != nil {
		out.Delay = &ir.FaultDelay{Duration: ir.D(d.Duration), PerMillion: d.PerMillion}
	}
	if a := f.Abort; a != nil {
		out.Abort = &ir.FaultAbort{Status: a.Status, PerMillion: a.PerMillion}
	}
	return out
}

// routeCORS is a route's CORS policy: its own, else its host's. Each route
// carries its whole policy, rather than its host carrying one, because
// Envoy's CORS filter falls back to the host's policy field by field: a
// route allowing any origin would inherit its host's allowCredentials.
func routeCORS(vh *policy.VirtualHost, r *policy.Route) *ir.CORS {
	if r.CORS != nil {
		return cors(r.CORS)
	}
	return cors(vh.CORS)
}

// cors converts a CORS policy; nil stays nil. An origin "*" matches any
// origin, and "*." at the start of an origin's host any subdomain of the
// rest (https://*.example.com matches https://a.b.example.com, not
// https://example.com).
func cors(c *policy.CORS) *ir.CORS {
	if c == nil {
		return nil
	}
	out := &ir.CORS{
		AllowMethods:     append([]string(nil), c.AllowMethods...),
		AllowHeaders:     append([]string(nil), c.AllowHeaders...),
		ExposeHeaders:    append([]string(nil), c.ExposeHeaders...),
		AllowCredentials: c.AllowCredentials,
	}
	if c.MaxAge != nil {
		d := ir.D(*c.MaxAge)
		out.MaxAge = &d
	}
	for _, o := range c.AllowOrigins {
		scheme, host, wild := strings.Cut(o, "://*.")
		switch {
		case o == "*":
			out.AllowOrigins = append(out.AllowOrigins, ir.OriginMatch{Regex: ".*"})
		case wild:
			out.AllowOrigins = append(out.AllowOrigins, ir.OriginMatch{
				Regex: "(?i)" + regexp.QuoteMeta(scheme+"://") + `[a-z0-9-]+(\.[a-z0-9-]+)*` + regexp.QuoteMeta("."+host),
			})
		default:
			out.AllowOrigins = append(out.AllowOrigins, ir.OriginMatch{Exact: o})
		}
	}
	return out
}

// rewrite is what a forwarding route changes in a request.
func rewrite(rw *policy.Rewrite, m *policy.Match) *ir.Rewrite {
	out := &ir.Rewrite{Host: rw.Host, HostFromUpstream: rw.HostFromUpstream}
	switch {
	case rw.Prefix != "":
		out.PrefixRewrite, out.RegexRewrite = prefixRewrite(m, rw.Prefix)
	case rw.Regex != nil:
		out.RegexRewrite = &ir.RegexRewrite{Pattern: rw.Regex.Pattern, Substitution: rw.Regex.Substitution}
	}
	return out
}

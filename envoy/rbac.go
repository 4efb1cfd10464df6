package envoy

import (
	"sort"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// intentionsRBAC turns a sidecar's intentions into Envoy RBAC rules on the
// caller's SPIFFE ID (its certificate's URI SAN, already verified against
// the mesh roots by the listener's TLS).
//
// Consul evaluates intentions by precedence: the rule for the caller's own
// service name, else the "*" rule, else the default; within an L7 rule the
// first matching permission, else the default. Envoy's RBAC has no order:
// it either allows what any policy matches (and denies the rest) or denies
// what any policy matches. So, as Consul's own xDS server does, the
// precedence is folded into the rules:
//   - The RBAC action is the opposite of the default: with default deny the
//     policies list what is allowed, with default allow what is denied.
//     A rule (or permission) whose decision is the default is left out:
//     the default covers it.
//   - The "*" rule never applies to a service that has its own rule, so its
//     principal is "any service in the trust domain AND NOT each named one".
//   - Permission i applies only when no earlier permission matched, so it
//     becomes "permission i AND NOT each earlier one".
//
// Example, default deny: web: L7 [deny POST, allow /public prefix];
// "*": allow; billing: deny. Result, RBAC ALLOW with
// intentions-l7-web = web AND (/public AND NOT POST), and
// intentions-l4 = (any AND NOT web AND NOT billing).
func intentionsRBAC(s *ir.Sidecar) *rbacv3.RBAC {
	def := s.Intentions.Default
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
	if def == ir.Allow {
		out.Action = rbacv3.RBAC_DENY
	}
	var named []string
	var wildcard *ir.Intention
	rules := map[string]*ir.Intention{}
	for i := range s.Intentions.Rules {
		r := &s.Intentions.Rules[i]
		if r.Source == "*" {
			wildcard = r
			continue
		}
		named = append(named, r.Source)
		rules[r.Source] = r
	}
	sort.Strings(named)

	policies := map[string]*rbacv3.Policy{}
	var l4 []*rbacv3.Principal
	addRule := func(r *ir.Intention, who *rbacv3.Principal) {
		if len(r.Permissions) == 0 {
			if r.Action != def {
				l4 = append(l4, who)
			}
			return
		}
		var perms []*rbacv3.Permission
		var earlier []*rbacv3.Permission
		for i := range r.Permissions {
			p := &r.Permissions[i]
			match := permissionMatch(p.HTTP)
			if p.Action != def {
				parts := []*rbacv3.Permission{match}
				for _, e := range earlier {
					parts = append(parts, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: e}})
				}
				perms = append(perms, andPermissions(parts))
			}
			earlier = append(earlier, match)
		}
		if len(perms) > 0 {
			policies[IntentionsL7PolicyName(r.Source)] = &rbacv3.Policy{
				Principals:  []*rbacv3.Principal{who},
				Permissions: perms,
			}
		}
	}
	for _, src := range named {
		addRule(rules[src], sourcePrincipal(s.TrustDomain, src))
	}
	if wildcard != nil {
		who := sourcePrincipal(s.TrustDomain, "*")
		if len(named) > 0 {
			ids := []*rbacv3.Principal{who}
			for _, src := range named {
				ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: sourcePrincipal(s.TrustDomain, src)}})
			}
			who = &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
		}
		addRule(wildcard, who)
	}
	if len(l4) > 0 {
		policies[IntentionsL4PolicyName] = &rbacv3.Policy{
			Principals:  l4,
			Permissions: []*rbacv3.Permission{anyPermission()},
		}
	}
	if len(policies) > 0 {
		out.Policies = policies
	}
	return out
}

// sourcePrincipal matches callers of one source service, or of any
// service for "*", by the SPIFFE ID in their certificate.
func sourcePrincipal(trustDomain, source string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: ir.SPIFFEPattern(trustDomain, source)},
		}},
	}}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func andPermissions(parts []*rbacv3.Permission) *rbacv3.Permission {
	switch len(parts) {
	case 0:
		return anyPermission()
	case 1:
		return parts[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: parts}}}
}

// permissionMatch is what an L7 permission's HTTP part matches: every
// field set must match; nil matches every request.
func permissionMatch(h *ir.PermissionHTTP) *rbacv3.Permission {
	if h == nil {
		return anyPermission()
	}
	var parts []*rbacv3.Permission
	path := func(sm *matcherv3.StringMatcher) *rbacv3.Permission {
		// url_path is the path without the query string, after the
		// listener's path normalization.
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm},
		}}}
	}
	switch {
	case h.PathExact != "":
		parts = append(parts, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.PathExact}}))
	case h.PathPrefix != "":
		parts = append(parts, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.PathPrefix}}))
	case h.PathRegex != "":
		parts = append(parts, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: h.PathRegex},
		}}))
	}
	for i := range h.Headers {
		parts = append(parts, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: permissionHeader(&h.Headers[i])}})
	}
	if len(h.Methods) > 0 {
		var methods []*rbacv3.Permission
		for _, m := range h.Methods {
			methods = append(methods, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name: ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m},
				}},
			}}})
		}
		if len(methods) == 1 {
			parts = append(parts, methods[0])
		} else {
			parts = append(parts, &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: methods}}})
		}
	}
	return andPermissions(parts)
}

func permissionHeader(h *ir.PermissionHeader) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
	var sm *matcherv3.StringMatcher
	switch {
	case h.Present:
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm
	case h.Exact != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Exact}}
	case h.Prefix != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.Prefix}}
	case h.Suffix != "":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: h.Suffix}}
	default:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Regex}}}
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	return hm
}

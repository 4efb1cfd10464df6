package envoy

import (
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// rbacRequest is what the RBAC rules see of a request.
type rbacRequest struct {
	source, method, path string
	debug                bool // an x-debug header is present
}

// consulDecision is how Consul decides a request: the source's own rule,
// else the "*" rule, else the default; in an L7 rule the first matching
// permission, else the default.
func consulDecision(in ir.Intentions, req rbacRequest) ir.Action {
	var rule *ir.Intention
	for i := range in.Rules {
		if in.Rules[i].Source == req.source {
			rule = &in.Rules[i]
		}
	}
	if rule == nil {
		for i := range in.Rules {
			if in.Rules[i].Source == "*" {
				rule = &in.Rules[i]
			}
		}
	}
	if rule == nil {
		return in.Default
	}
	if len(rule.Permissions) == 0 {
		return rule.Action
	}
	for _, p := range rule.Permissions {
		if httpMatches(p.HTTP, req) {
			return p.Action
		}
	}
	return in.Default
}

func httpMatches(h *ir.PermissionHTTP, req rbacRequest) bool {
	if h == nil {
		return true
	}
	switch {
	case h.PathExact != "" && req.path != h.PathExact,
		h.PathPrefix != "" && !strings.HasPrefix(req.path, h.PathPrefix),
		h.PathRegex != "" && !fullMatch(h.PathRegex, req.path):
		return false
	}
	if len(h.Methods) > 0 {
		found := false
		for _, m := range h.Methods {
			found = found || m == req.method
		}
		if !found {
			return false
		}
	}
	for _, hd := range h.Headers { // the generator makes only x-debug presence
		if req.debug == hd.Invert {
			return false
		}
	}
	return true
}

// envoyDecision evaluates RBAC rules the way Envoy does, for the matchers
// intentionsRBAC uses: with action ALLOW a request is allowed when some
// policy has a matching principal and a matching permission; with DENY it
// is denied then.
func envoyDecision(t *testing.T, r *rbacv3.RBAC, td string, req rbacRequest) ir.Action {
	t.Helper()
	uri := ir.SPIFFEID(td, "dc2", req.source)
	matched := false
	for _, p := range r.Policies {
		who, what := false, false
		for _, pr := range p.Principals {
			who = who || principalMatches(t, pr, uri)
		}
		for _, pe := range p.Permissions {
			what = what || permissionMatches(t, pe, req)
		}
		matched = matched || (who && what)
	}
	if matched == (r.Action == rbacv3.RBAC_ALLOW) {
		return ir.Allow
	}
	return ir.Deny
}

func principalMatches(t *testing.T, p *rbacv3.Principal, uri string) bool {
	switch id := p.Identifier.(type) {
	case *rbacv3.Principal_Authenticated_:
		return stringMatches(t, id.Authenticated.PrincipalName, uri)
	case *rbacv3.Principal_AndIds:
		for _, x := range id.AndIds.Ids {
			if !principalMatches(t, x, uri) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_NotId:
		return !principalMatches(t, id.NotId, uri)
	}
	t.Fatalf("principal %T not modelled", p.Identifier)
	return false
}

func permissionMatches(t *testing.T, p *rbacv3.Permission, req rbacRequest) bool {
	switch r := p.Rule.(type) {
	case *rbacv3.Permission_Any:
		return true
	case *rbacv3.Permission_AndRules:
		for _, x := range r.AndRules.Rules {
			if !permissionMatches(t, x, req) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_OrRules:
		for _, x := range r.OrRules.Rules {
			if permissionMatches(t, x, req) {
				return true
			}
		}
		return false
	case *rbacv3.Permission_NotRule:
		return !permissionMatches(t, r.NotRule, req)
	case *rbacv3.Permission_UrlPath:
		return stringMatches(t, r.UrlPath.GetPath(), req.path)
	case *rbacv3.Permission_Header:
		return headerMatches(t, r.Header, req)
	}
	t.Fatalf("permission %T not modelled", p.Rule)
	return false
}

func headerMatches(t *testing.T, h *routev3.HeaderMatcher, req rbacRequest) bool {
	var m bool
	switch {
	case h.Name == ":method":
		m = stringMatches(t, h.GetStringMatch(), req.method)
	case h.Name == "x-debug" && h.GetPresentMatch():
		m = req.debug
	default:
		t.Fatalf("header matcher %v not modelled", h)
	}
	return m != h.InvertMatch
}

func stringMatches(t *testing.T, m *matcherv3.StringMatcher, s string) bool {
	switch p := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == p.Exact
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, p.Prefix)
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy's safe_regex must match the whole string.
		return fullMatch(p.SafeRegex.Regex, s)
	}
	t.Fatalf("string matcher %T not modelled", m.MatchPattern)
	return false
}

var regexCache = map[string]*regexp.Regexp{}

// fullMatch reports whether the RE2 pattern matches all of s.
func fullMatch(pattern, s string) bool {
	re, ok := regexCache[pattern]
	if !ok {
		re = regexp.MustCompile("^(?:" + pattern + ")$")
		regexCache[pattern] = re
	}
	return re.MatchString(s)
}

// The RBAC rules decide every request as Consul's ordered evaluation
// would, over random intentions: precedence of a named source over "*",
// L7 permissions in order, the default for no match, both defaults. (The
// traffic tests check a few of these decisions with real Envoy.)
func TestIntentionsRBACMatchesConsul(t *testing.T) {
	const td = "td.consul"
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(a ...ir.Action) ir.Action { return a[rng.IntN(len(a))] }
	randHTTP := func() *ir.PermissionHTTP {
		if rng.IntN(5) == 0 {
			return nil
		}
		h := &ir.PermissionHTTP{}
		switch rng.IntN(4) {
		case 0:
			h.PathExact = "/public"
		case 1:
			h.PathPrefix = "/public"
		case 2:
			h.PathRegex = "/adm.*"
		}
		for _, m := range []string{"GET", "POST", "HEAD"} {
			if rng.IntN(3) == 0 {
				h.Methods = append(h.Methods, m)
			}
		}
		if rng.IntN(3) == 0 {
			h.Headers = []ir.PermissionHeader{{Name: "x-debug", Present: true, Invert: rng.IntN(2) == 0}}
		}
		return h
	}
	var requests []rbacRequest
	for _, src := range []string{"web", "billing", "checkout", "other"} {
		for _, m := range []string{"GET", "POST", "HEAD"} {
			for _, p := range []string{"/public", "/public/x", "/private", "/admin"} {
				for _, d := range []bool{false, true} {
					requests = append(requests, rbacRequest{src, m, p, d})
				}
			}
		}
	}
	for i := 0; i < 500; i++ {
		in := ir.Intentions{Default: pick(ir.Allow, ir.Deny)}
		for _, src := range []string{"web", "billing", "checkout", "*"} {
			if rng.IntN(3) == 0 {
				continue
			}
			r := ir.Intention{Source: src}
			if rng.IntN(2) == 0 {
				r.Action = pick(ir.Allow, ir.Deny)
			} else {
				for n := 1 + rng.IntN(3); n > 0; n-- {
					r.Permissions = append(r.Permissions, ir.Permission{Action: pick(ir.Allow, ir.Deny), HTTP: randHTTP()})
				}
			}
			in.Rules = append(in.Rules, r)
		}
		rng.Shuffle(len(in.Rules), func(a, b int) { in.Rules[a], in.Rules[b] = in.Rules[b], in.Rules[a] })
		s := &ir.Sidecar{TrustDomain: td, Protocol: ir.ProtocolHTTP, Intentions: in}
		rules := intentionsRBAC(s)
		if err := rules.ValidateAll(); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		for _, req := range requests {
			want := consulDecision(in, req)
			if got := envoyDecision(t, rules, td, req); got != want {
				js, _ := json.Marshal(in)
				t.Fatalf("case %d: intentions %s\nrequest %+v: RBAC decides %s; Consul %s", i, js, req, got, want)
			}
		}
	}
	// A caller from another trust domain matches no principal, not even
	// "*": with default allow it passes RBAC (its certificate was refused
	// by the listener's TLS already), with default deny it is denied.
	s := &ir.Sidecar{TrustDomain: td, Intentions: ir.Intentions{Default: ir.Deny, Rules: []ir.Intention{{Source: "*", Action: ir.Allow}}}}
	if principalMatches(t, intentionsRBAC(s).Policies[IntentionsL4PolicyName].Principals[0], ir.SPIFFEID("other.consul", "dc1", "web")) {
		t.Error(`"*" matched a SPIFFE ID of another trust domain`)
	}
}

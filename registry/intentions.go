package registry

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
)

// Intention actions, as Consul spells them.
const (
	IntentionAllow = "allow"
	IntentionDeny  = "deny"
)

// Precedence of an intention in Consul's default namespace and partition
// (what Consul 1.14 computes and returns as Sources[].Precedence): the more
// exact the match, the higher.
const (
	PrecedenceExactToExact       = 9 // source web, destination api
	PrecedenceWildcardToExact    = 8 // source *, destination api
	PrecedenceExactToWildcard    = 6 // source web, destination *
	PrecedenceWildcardToWildcard = 5 // source *, destination *
)

// WildcardName is the source or destination name that matches every
// service.
const WildcardName = "*"

// Intentions are the service-intentions config entry of one destination
// service: who may call it.
//
// How Consul decides a call from service S to destination D (and how the
// sidecar must, to agree with it):
//
//   - Of the intentions whose source matches S (S itself, or "*") and whose
//     destination matches D (D itself, or "*": an entry named "*" applies to
//     every destination), the one with the highest Precedence decides
//     alone: an exact name beats "*", and the destination counts first
//     (web->api 9, *->api 8, web->* 6, *->* 5). At most one source per name
//     is allowed in one entry, so there is never a tie.
//   - An intention with an Action (L4) allows or denies the whole
//     connection.
//   - An intention with Permissions (L7, for HTTP destinations only) is
//     evaluated per request: its permissions in order, the first whose
//     HTTP match matches the request decides; a request none matches gets
//     the default decision below. It never falls through to a
//     lower-precedence intention.
//   - No intention matches: the default decision, allow when Consul's ACLs
//     are disabled or their default_policy is allow, deny otherwise (see
//     MeshSnapshot.IntentionDefault).
//
// MeshSnapshot.Intentions merges a destination's own entry with the "*"
// entry by these rules, so the result can be applied with only "an exact
// source beats *" left to the caller.
type Intentions struct {
	Destination string // the service called, or "*" (every service)
	// Sources are sorted by Precedence, highest first, then by name: every
	// exact source before "*". At most one per name.
	Sources []IntentionSource
	// Problems are what Switchyard could not keep of the config entry, one
	// sentence each (also logged once and reported through
	// Hooks.SidecarProblem). A source it could not represent faithfully is
	// kept as a deny, never dropped, so that no broader rule lets its
	// callers in; a source from another namespace, partition or peer is
	// dropped (its callers are not this mesh's).
	Problems []string
}

// IntentionSource is one source of an intention: exactly one of Action and
// Permissions is set.
type IntentionSource struct {
	Name        string // a service name, or "*"
	Action      string // "allow" or "deny"; "" when Permissions are set
	Permissions []IntentionPermission
	// Precedence is Consul's (see the Precedence constants); higher wins.
	Precedence int
}

// IntentionPermission is one L7 rule of an intention: a request its HTTP
// match matches (every request when HTTP is nil) gets Action.
type IntentionPermission struct {
	Action string // "allow" or "deny"
	HTTP   *IntentionHTTP
}

// IntentionHTTP matches requests: every field that is set must match. At
// most one of the path fields is set.
type IntentionHTTP struct {
	PathExact  string
	PathPrefix string
	PathRegex  string   // RE2, matched against the whole path
	Methods    []string // upper case; any of them
	Header     []IntentionHeader
}

// IntentionHeader matches one request header: exactly one of Present,
// Exact, Prefix, Suffix and Regex is set; Invert negates the match.
type IntentionHeader struct {
	Name    string
	Present bool
	Exact   string
	Prefix  string
	Suffix  string
	Regex   string
	Invert  bool
}

var (
	// intentionNameRE is a service name as the mesh IR accepts it.
	intentionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	methodNameRE    = regexp.MustCompile(`^[A-Z]+$`)
	headerNameRE    = regexp.MustCompile("^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// localScope reports whether a namespace or partition is the default one
// (all Consul CE has; "" means it).
func localScope(s string) bool { return s == "" || s == "default" }

// intentionsOf converts one config entry. ok is false when the entry is
// not for this mesh at all (another namespace or partition, no name, not
// service-intentions); problems then says why.
func intentionsOf(ce consulapi.ConfigEntry) (in *Intentions, ok bool) {
	e, isIntentions := ce.(*consulapi.ServiceIntentionsConfigEntry)
	if !isIntentions || e == nil {
		return &Intentions{Problems: []string{fmt.Sprintf("config entry of kind %q in the service-intentions list: ignored", ce.GetKind())}}, false
	}
	in = &Intentions{Destination: e.Name}
	switch {
	case e.Name == "":
		in.Problems = append(in.Problems, "service-intentions entry without a Name: ignored")
		return in, false
	case e.Name != WildcardName && !intentionNameRE.MatchString(e.Name):
		in.Problems = append(in.Problems, fmt.Sprintf("destination %q is not a service name: ignored", e.Name))
		return in, false
	case !localScope(e.Namespace) || !localScope(e.Partition):
		in.Problems = append(in.Problems, fmt.Sprintf("destination in namespace %q, partition %q: only the default ones are served; ignored", e.Namespace, e.Partition))
		return in, false
	}
	jwt := e.JWT != nil && len(e.JWT.Providers) > 0
	if jwt {
		in.Problems = append(in.Problems, "a JWT requirement is not supported: every allow of this entry is a deny")
	}
	seen := map[string]bool{}
	for i, s := range e.Sources {
		if s == nil {
			continue
		}
		what := fmt.Sprintf("source %d (%q)", i, s.Name)
		switch {
		case s.Peer != "":
			in.Problems = append(in.Problems, fmt.Sprintf("%s from peer %q: cluster peering is not supported; ignored", what, s.Peer))
			continue
		case !localScope(s.Namespace) || !localScope(s.Partition):
			in.Problems = append(in.Problems, fmt.Sprintf("%s in namespace %q, partition %q: only the default ones are served; ignored", what, s.Namespace, s.Partition))
			continue
		case s.SamenessGroup != "":
			in.Problems = append(in.Problems, fmt.Sprintf("%s for sameness group %q: not supported; ignored", what, s.SamenessGroup))
			continue
		case s.Name == "":
			in.Problems = append(in.Problems, what+" has no Name: ignored")
			continue
		case s.Name != WildcardName && !intentionNameRE.MatchString(s.Name):
			in.Problems = append(in.Problems, what+" is neither a service name nor \"*\": ignored")
			continue
		case seen[s.Name]:
			in.Problems = append(in.Problems, what+" appears twice: the first is kept")
			continue
		}
		seen[s.Name] = true
		src := IntentionSource{Name: s.Name, Precedence: precedence(e.Name, s.Name)}
		problem := ""
		switch {
		case s.Type != "" && s.Type != consulapi.IntentionSourceConsul:
			problem = fmt.Sprintf("type %q is not consul", s.Type)
		case s.Action != "" && len(s.Permissions) > 0:
			problem = "both an action and permissions"
		case len(s.Permissions) > 0:
			perms, p := permissions(s.Permissions, jwt)
			src.Permissions, problem = perms, p
		case s.Action == consulapi.IntentionActionAllow && jwt:
			src.Action = IntentionDeny
		case s.Action == consulapi.IntentionActionAllow, s.Action == consulapi.IntentionActionDeny:
			src.Action = string(s.Action)
		case s.Action == "":
			problem = "neither an action nor permissions"
		default:
			problem = fmt.Sprintf("action %q is neither allow nor deny", s.Action)
		}
		if problem != "" {
			in.Problems = append(in.Problems, fmt.Sprintf("%s: %s: denied", what, problem))
			src.Action, src.Permissions = IntentionDeny, nil
		}
		in.Sources = append(in.Sources, src)
	}
	sortSources(in.Sources)
	return in, true
}

func precedence(dest, source string) int {
	switch {
	case dest != WildcardName && source != WildcardName:
		return PrecedenceExactToExact
	case dest != WildcardName:
		return PrecedenceWildcardToExact
	case source != WildcardName:
		return PrecedenceExactToWildcard
	}
	return PrecedenceWildcardToWildcard
}

func sortSources(ss []IntentionSource) {
	slices.SortStableFunc(ss, func(a, b IntentionSource) int {
		return cmp.Or(cmp.Compare(b.Precedence, a.Precedence), cmp.Compare(a.Name, b.Name))
	})
}

// permissions converts a source's L7 permissions. problem, when not "",
// says why they cannot be kept (the source is then denied whole: dropping
// one permission would change which of the others matches first).
func permissions(ps []*consulapi.IntentionPermission, jwt bool) (out []IntentionPermission, problem string) {
	for i, p := range ps {
		if p == nil {
			continue
		}
		perm := IntentionPermission{Action: string(p.Action)}
		if perm.Action != IntentionAllow && perm.Action != IntentionDeny {
			return nil, fmt.Sprintf("permission %d: action %q is neither allow nor deny", i, p.Action)
		}
		if perm.Action == IntentionAllow && (jwt || (p.JWT != nil && len(p.JWT.Providers) > 0)) {
			perm.Action = IntentionDeny // a JWT requirement cannot be checked: fail closed
		}
		if h := p.HTTP; h != nil {
			hp, err := httpPermission(h)
			if err != "" {
				return nil, fmt.Sprintf("permission %d: %s", i, err)
			}
			perm.HTTP = hp
		}
		out = append(out, perm)
	}
	if len(out) == 0 {
		return nil, "empty permissions"
	}
	return out, ""
}

func httpPermission(h *consulapi.IntentionHTTPPermission) (*IntentionHTTP, string) {
	out := &IntentionHTTP{PathExact: h.PathExact, PathPrefix: h.PathPrefix, PathRegex: h.PathRegex, Methods: slices.Clone(h.Methods)}
	paths := 0
	for _, v := range []string{h.PathExact, h.PathPrefix, h.PathRegex} {
		if v != "" {
			paths++
		}
	}
	if paths > 1 {
		return nil, "more than one of PathExact, PathPrefix and PathRegex"
	}
	for _, v := range []string{h.PathExact, h.PathPrefix} {
		if v != "" && !strings.HasPrefix(v, "/") {
			return nil, fmt.Sprintf("path %q does not start with /", v)
		}
	}
	if h.PathRegex != "" {
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			return nil, fmt.Sprintf("PathRegex: %v", err)
		}
	}
	for _, m := range h.Methods {
		if !methodNameRE.MatchString(m) {
			return nil, fmt.Sprintf("method %q is not an upper-case HTTP method", m)
		}
	}
	for _, hd := range h.Header {
		if !headerNameRE.MatchString(hd.Name) {
			return nil, fmt.Sprintf("header %q: not a header name", hd.Name)
		}
		if hd.Contains != "" || hd.IgnoreCase {
			return nil, fmt.Sprintf("header %q: Contains and IgnoreCase are not supported", hd.Name)
		}
		set := 0
		for _, v := range []string{hd.Exact, hd.Prefix, hd.Suffix, hd.Regex} {
			if v != "" {
				set++
			}
		}
		if hd.Present {
			set++
		}
		if set != 1 {
			return nil, fmt.Sprintf("header %q: want exactly one of Present, Exact, Prefix, Suffix and Regex", hd.Name)
		}
		if hd.Regex != "" {
			if _, err := regexp.Compile(hd.Regex); err != nil {
				return nil, fmt.Sprintf("header %q: Regex: %v", hd.Name, err)
			}
		}
		out.Header = append(out.Header, IntentionHeader{
			Name: hd.Name, Present: hd.Present, Exact: hd.Exact, Prefix: hd.Prefix, Suffix: hd.Suffix, Regex: hd.Regex, Invert: hd.Invert,
		})
	}
	return out, ""
}

// mergeIntentions is what applies to destination dest given its own entry
// (own, may be nil) and the "*" entry (wild, may be nil), by Consul's
// precedence: own's sources first; then, unless own has a "*" source
// (which every caller matches before any source of the "*" entry), the
// "*" entry's sources whose names own does not have.
func mergeIntentions(dest string, own, wild *Intentions) Intentions {
	out := Intentions{Destination: dest}
	if own != nil {
		out.Sources = append(out.Sources, own.Sources...)
		out.Problems = append(out.Problems, own.Problems...)
	}
	if wild != nil && dest != WildcardName {
		shadowed := own != nil && slices.ContainsFunc(own.Sources, func(s IntentionSource) bool { return s.Name == WildcardName })
		for _, s := range wild.Sources {
			if shadowed || (own != nil && slices.ContainsFunc(own.Sources, func(o IntentionSource) bool { return o.Name == s.Name })) {
				continue
			}
			out.Sources = append(out.Sources, s)
		}
		for _, p := range wild.Problems {
			out.Problems = append(out.Problems, "from the \"*\" entry: "+p)
		}
	}
	out.Sources = slices.Clip(out.Sources)
	out.Problems = slices.Clip(out.Problems)
	sortSources(out.Sources)
	return out
}

// hasL7 reports whether any source has permissions.
func (in *Intentions) hasL7() (source string, ok bool) {
	for _, s := range in.Sources {
		if len(s.Permissions) > 0 {
			return s.Name, true
		}
	}
	return "", false
}

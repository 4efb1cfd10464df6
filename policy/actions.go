package policy

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// This file holds the route actions other than forwarding (redirects) and
// what changes a forwarded request on its way.

// DefaultRedirectCode is a redirect's status when none is given: moved
// permanently, as Envoy's default.
const DefaultRedirectCode = 301

// RedirectCodes lists the status codes a redirect may use.
func RedirectCodes() []int { return []int{301, 302, 303, 307, 308} }

// Redirect answers a route's requests with a redirect to the same URL with
// some parts changed; what is not set is kept from the request.
type Redirect struct {
	Pos    Pos
	Scheme string // "http" or "https"; "" keeps the request's
	Host   string // a host name or IP address, without port; "" keeps the request's
	Port   uint32 // 0 keeps the request's
	// Path replaces the whole path; Prefix replaces the part the route's
	// pathPrefix (or path) matched. At most one is set.
	Path, Prefix string
	Code         int // one of RedirectCodes
	// StripQuery drops the query string; otherwise it is kept.
	StripQuery bool
}

// routeActions are the fields of a route that say what is done with a
// matching request: exactly one is given.
var routeActions = []string{"service", "split", "redirect"}

// forwardingFields are route fields that only apply to a request forwarded
// to a service.
var forwardingFields = []string{"timeout", "retries", "websocket", "mesh"}

// notForwarded reports each forwarding field given on a route whose action
// (what) answers the request itself.
func (d *decoder) notForwarded(m *fields, what string) {
	for _, key := range forwardingFields {
		if m.has(key) {
			d.errorf(m.lineOf(key), "%s cannot be used with %s: the route answers requests itself and never forwards them", key, what)
		}
	}
}

// redirect decodes a route's redirect block; match is the route's match,
// for a prefix replacement.
func (d *decoder) redirect(n *yaml.Node, match Match, matchOK bool) *Redirect {
	m, ok := d.mapping(n, "redirect", "scheme", "host", "port", "path", "prefix", "code", "stripQuery")
	if !ok {
		return nil
	}
	rd := &Redirect{Pos: d.pos(m.line), Code: DefaultRedirectCode}
	if v, ok := d.str(m, "scheme"); ok {
		if v == "http" || v == "https" {
			rd.Scheme = v
		} else {
			d.errorf(m.lineOf("scheme"), "redirect scheme %s: want http or https", quoteValue(v))
		}
	}
	if v, ok := d.str(m, "host"); ok {
		if msg := hostProblem(v); msg != "" {
			d.errorf(m.lineOf("host"), "invalid redirect host %s: %s", quoteValue(v), msg)
		} else {
			rd.Host = v
		}
	}
	if p, ok := d.integer(m, "port", 1, 65535); ok {
		rd.Port = uint32(p)
	}
	d.oneOf(m, true, "path", "prefix")
	for _, key := range []string{"path", "prefix"} {
		v, ok := d.str(m, key)
		switch {
		case !ok:
		case !strings.HasPrefix(v, "/"):
			d.errorf(m.lineOf(key), "redirect %s must start with \"/\", got %s", key, quoteValue(v))
		case strings.ContainsAny(v, " #"):
			d.errorf(m.lineOf(key), "redirect %s %s must not contain a space or '#'; percent-encode them (%%20, %%23)", key, quoteValue(v))
		case key == "path":
			rd.Path = v
		case matchOK && match.PathRegex != "":
			d.errorf(m.lineOf(key), "redirect prefix replaces the path prefix the route matched, but the route matches by pathRegex; use path, or match by pathPrefix")
		default:
			rd.Prefix = v
		}
	}
	if c, ok := d.integer(m, "code", 0, 999); ok {
		if slices.Contains(RedirectCodes(), int(c)) {
			rd.Code = int(c)
		} else {
			d.errorf(m.lineOf("code"), "redirect code %d: want 301, 302, 303, 307 or 308", c)
		}
	}
	if v, ok := d.boolean(m, "stripQuery"); ok {
		rd.StripQuery = v
	}
	if !m.has("scheme") && !m.has("host") && !m.has("port") && !m.has("path") && !m.has("prefix") && !rd.StripQuery {
		d.errorf(m.line, "redirect changes nothing, so clients would be sent back to the same URL forever; give at least one of scheme, host, port, path, prefix or stripQuery: true")
	}
	return rd
}

// hostProblem says what is wrong with a host name or IP address (no port)
// that Switchyard writes into a URL or a Host header, or "".
func hostProblem(v string) string {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")); err == nil {
		switch bracketed := strings.HasPrefix(v, "["); {
		case a.Is6() && !bracketed:
			return "write an IPv6 address in brackets, such as [2001:db8::1]"
		case a.Is4() && bracketed, a.Zone() != "":
			return "want a host name such as shop.example.com or an IP address, without a port"
		}
		return ""
	}
	if !hostNameRE.MatchString(v) {
		return "want a host name such as shop.example.com or an IP address, without a port"
	}
	return ""
}

// hostNameRE is a DNS host name: labels of letters, digits and '-'.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

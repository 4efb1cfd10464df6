package policy

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file holds what a route does besides forwarding to a service:
// answering itself (redirects, direct responses), changing what it
// forwards and answers (rewrites, headers, mirrors, faults), CORS; and the
// matches by method and query parameter.

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

// Rewrite changes a forwarded request's path or Host header. At most one
// of Prefix and Regex is set.
type Rewrite struct {
	Pos Pos
	// Prefix replaces the part of the path the route's pathPrefix (or
	// path) matched.
	Prefix string
	Regex  *RegexRewrite
	// Host replaces the Host (:authority) header: a host name or IP
	// address, with an optional port.
	Host string
	// HostFromUpstream replaces the Host header with the address of the
	// instance the request goes to (its Consul address, with the port
	// unless 80). At most one of Host and HostFromUpstream is set.
	HostFromUpstream bool
}

// RegexRewrite replaces every match of Pattern (RE2) in the path with
// Substitution, in which \1 to \9 stand for the pattern's groups.
type RegexRewrite struct {
	Pattern, Substitution string
}

// MaxDirectResponseBody bounds a direct response's body: Envoy refuses a
// route configuration with a longer one (its
// max_direct_response_body_size_bytes, 4096 by default).
const MaxDirectResponseBody = 4096

// DirectResponse answers a route's requests with a fixed status and body.
type DirectResponse struct {
	Pos    Pos
	Status int    // 200 to 599, not 3xx (a redirect needs a Location)
	Body   string // "" for none
	// ContentType is the response's Content-Type when set; Envoy's
	// default is text/plain for a body.
	ContentType string
}

// routeActions are the fields of a route that say what is done with a
// matching request: exactly one is given.
var routeActions = []string{"service", "split", "redirect", "directResponse"}

// forwardingFields are route fields that only apply to a request forwarded
// to a service.
var forwardingFields = []string{"timeout", "retries", "websocket", "mesh", "rewrite", "requestHeaders", "mirror", "fault", "globalRateLimit"}

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

// rewrite decodes a route's rewrite block; match is the route's match,
// for a prefix replacement.
func (d *decoder) rewrite(n *yaml.Node, match Match, matchOK bool) *Rewrite {
	m, ok := d.mapping(n, "rewrite", "prefix", "regex", "host", "hostFromUpstream")
	if !ok {
		return nil
	}
	rw := &Rewrite{Pos: d.pos(m.line)}
	d.oneOf(m, true, "prefix", "regex")
	if v, ok := d.str(m, "prefix"); ok {
		switch {
		case !strings.HasPrefix(v, "/"):
			d.errorf(m.lineOf("prefix"), "rewrite prefix must start with \"/\", got %s", quoteValue(v))
		case matchOK && match.PathRegex != "":
			d.errorf(m.lineOf("prefix"), "rewrite prefix replaces the path prefix the route matched, but the route matches by pathRegex; use regex, or match by pathPrefix")
		default:
			rw.Prefix = v
		}
	}
	if rn := m.vals["regex"]; rn != nil {
		rw.Regex = d.regexRewrite(rn)
	}
	if v, ok := d.str(m, "host"); ok {
		if msg := hostPortProblem(v); msg != "" {
			d.errorf(m.lineOf("host"), "invalid rewrite host %s: %s", quoteValue(v), msg)
		} else {
			rw.Host = v
		}
	}
	if v, ok := d.boolean(m, "hostFromUpstream"); ok {
		switch {
		case !v:
			d.errorf(m.lineOf("hostFromUpstream"), "hostFromUpstream must be true, or be omitted to keep the client's Host")
		case m.has("host"):
			d.errorf(m.lineOf("hostFromUpstream"), "rewrite may have only one of host and hostFromUpstream")
		default:
			rw.HostFromUpstream = true
		}
	}
	if !m.has("prefix") && !m.has("regex") && !m.has("host") && !m.has("hostFromUpstream") {
		d.errorf(m.line, "rewrite needs at least one of prefix, regex, host or hostFromUpstream")
	}
	return rw
}

// groupRefRE finds \N group references in a substitution.
var groupRefRE = regexp.MustCompile(`\\[0-9]`)

// regexRewrite decodes a rewrite's regex block.
func (d *decoder) regexRewrite(n *yaml.Node) *RegexRewrite {
	m, ok := d.mapping(n, "rewrite regex", "pattern", "substitution")
	if !ok {
		return nil
	}
	rr := &RegexRewrite{}
	groups := -1
	if d.require(m, "pattern") {
		if v, ok := d.str(m, "pattern"); ok && d.regex(m.lineOf("pattern"), "pattern", v) {
			rr.Pattern = v
			groups = regexp.MustCompile(v).NumSubexp()
		}
	}
	if d.require(m, "substitution") {
		if v, ok := d.str(m, "substitution"); ok {
			rr.Substitution = v
			for _, ref := range groupRefRE.FindAllString(v, -1) {
				if n := int(ref[1] - '0'); groups >= 0 && n > groups {
					d.errorf(m.lineOf("substitution"), "substitution refers to group %s, but pattern has %d group(s)", ref, groups)
					break
				}
			}
		}
	}
	return rr
}

// hostPortProblem is hostProblem for a value that may end in a port.
func hostPortProblem(v string) string {
	if a, err := netip.ParseAddr(v); err == nil && a.Is6() {
		return hostProblem(v) // unbracketed: its last part is not a port
	}
	host := v
	if i := strings.LastIndex(v, ":"); i > strings.LastIndex(v, "]") {
		host = v[:i]
		if p, err := strconv.Atoi(v[i+1:]); err != nil || p < 1 || p > 65535 || v[i+1] == '0' {
			return "want a port from 1 to 65535 after the ':'"
		}
	}
	if msg := hostProblem(host); msg != "" {
		return strings.TrimSuffix(msg, ", without a port") + ", optionally with a port"
	}
	return ""
}

// directResponse decodes a route's directResponse block.
func (d *decoder) directResponse(n *yaml.Node) *DirectResponse {
	m, ok := d.mapping(n, "directResponse", "status", "body", "contentType")
	if !ok {
		return nil
	}
	dr := &DirectResponse{Pos: d.pos(m.line)}
	if d.require(m, "status") {
		if v, ok := d.integer(m, "status", 200, 599); ok {
			if v >= 300 && v < 400 {
				d.errorf(m.lineOf("status"), "directResponse status %d is a redirect, which needs a Location; use redirect instead", v)
			} else {
				dr.Status = int(v)
			}
		}
	}
	if v, ok := d.text(m, "body"); ok {
		if len(v) > MaxDirectResponseBody {
			d.errorf(m.lineOf("body"), "directResponse body is %d bytes, more than Envoy's limit of %d", len(v), MaxDirectResponseBody)
		} else {
			dr.Body = v
		}
	}
	if v, ok := d.str(m, "contentType"); ok {
		if contentTypeRE.MatchString(v) {
			dr.ContentType = v
		} else {
			d.errorf(m.lineOf("contentType"), "invalid contentType %s: want a media type such as text/html; charset=utf-8", quoteValue(v))
		}
	}
	return dr
}

// contentTypeRE is a media type with optional parameters (RFC 9110).
var contentTypeRE = regexp.MustCompile("^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+( *; *[A-Za-z0-9!#$&^_.+-]+=(\"[^\"]*\"|[A-Za-z0-9!#$&^_.+-]+))*$")

// text is str for free text, such as a response body, in which newlines
// and tabs are allowed; other control characters are not.
func (d *decoder) text(m *fields, key string) (string, bool) {
	n := m.vals[key]
	if n == nil {
		return "", false
	}
	if !isString(n) {
		d.errorf(n.Line, "%s must be a string, got %s", key, describe(n))
		return "", false
	}
	stripped := strings.NewReplacer("\n", "", "\r", "", "\t", "").Replace(n.Value)
	if msg := valueProblem(key, stripped); msg != "" {
		d.errorf(n.Line, "%s", strings.Replace(msg, "(such as newline, carriage return, tab or NUL)", "other than newline, carriage return and tab", 1))
		return "", false
	}
	return n.Value, true
}

// Headers changes the headers of a request or a response: Set replaces a
// header (or adds it), Add appends a value (keeping those present), Remove
// drops a header. Names are lowercase; values may hold the dynamic values
// of HeaderVariables.
type Headers struct {
	Pos    Pos
	Set    []Header // in file order
	Add    []Header // in file order
	Remove []string // in file order
}

// Header is one header name and value.
type Header struct {
	Name, Value string
}

// HeaderVariables lists the dynamic values a header value may hold, in
// Envoy's syntax: each is replaced per request. %REQ(name)% (a request
// header's value, such as %REQ(x-request-id)%) is also accepted, and %%
// is a literal percent sign.
func HeaderVariables() []string {
	return []string{
		"%DOWNSTREAM_REMOTE_ADDRESS%",              // the client's address and port
		"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", // the client's address
		"%DOWNSTREAM_LOCAL_ADDRESS%",               // the listener address the client reached
		"%REQUESTED_SERVER_NAME%",                  // the TLS SNI, if any
		"%PROTOCOL%",                               // HTTP/1.1, HTTP/2, ...
		"%START_TIME%",                             // when the request started
		"%HOSTNAME%",                               // the Envoy's host name
	}
}

// headerVarRE finds what a header value holds between percent signs.
var headerVarRE = regexp.MustCompile(`%%|%[A-Z_]+(\([^()%]*\))?%|%`)

// headerValueProblem says what is wrong with the dynamic values of a
// header value, or "".
func headerValueProblem(v string) string {
	for _, loc := range headerVarRE.FindAllStringIndex(v, -1) {
		tok := v[loc[0]:loc[1]]
		switch {
		case tok == "%%", contains(HeaderVariables(), tok):
		case strings.HasPrefix(tok, "%REQ(") && strings.HasSuffix(tok, ")%"):
			if name := tok[len("%REQ(") : len(tok)-2]; !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":") {
				return fmt.Sprintf("%s: %q is not a header name", tok, name)
			}
		case tok == "%":
			return "a lone '%': write a literal percent sign as %%"
		default:
			return fmt.Sprintf("unknown dynamic value %s; supported: %s, %%REQ(header)%%, and %%%% for a literal %%", tok, strings.Join(HeaderVariables(), ", "))
		}
	}
	return ""
}

// Bounds on header changes, below Envoy's own (1,000 headers to add per
// host or route, 16 KiB per name or value), so that Envoy never refuses
// what validates: a direct response's contentType is one more to add.
const (
	MaxHeaderChanges   = 100
	MaxHeaderValueSize = 16384
)

// headers decodes a requestHeaders or responseHeaders block.
func (d *decoder) headers(n *yaml.Node, what string) *Headers {
	m, ok := d.mapping(n, what, "set", "add", "remove")
	if !ok {
		return nil
	}
	h := &Headers{Pos: d.pos(m.line)}
	seen := map[string]string{} // lowercased name -> the field naming it
	use := func(line int, key, name string) bool {
		name = strings.ToLower(name)
		switch {
		case !headerNameRE.MatchString(name) || len(name) > MaxHeaderValueSize:
			d.errorf(line, "%s: invalid header name %s", what, quoteValue(name))
		case strings.HasPrefix(name, ":") || name == "host":
			d.errorf(line, "%s: header %s cannot be changed here; Envoy refuses pseudo-headers and host (use rewrite.host for the Host)", what, quoteValue(name))
		case seen[name] != "":
			d.errorf(line, "%s: header %q is named twice (in %s and %s); name each header once", what, name, seen[name], key)
		default:
			seen[name] = key
			if what == "responseHeaders" && name == "server" {
				d.warnf(line, "responseHeaders: Envoy sets its own server header on every response, so changing it has no effect")
			}
			return true
		}
		return false
	}
	for _, key := range []string{"set", "add"} {
		for _, kv := range d.pairs(m, key) {
			if !use(kv.line, key, kv.name) {
				continue
			}
			if msg := headerValueProblem(kv.value); msg != "" {
				d.errorf(kv.line, "%s: header %q: %s", what, kv.name, msg)
				continue
			}
			if len(kv.value) > MaxHeaderValueSize {
				d.errorf(kv.line, "%s: header %q: the value is %d bytes, more than Envoy's limit of %d", what, kv.name, len(kv.value), MaxHeaderValueSize)
				continue
			}
			hd := Header{Name: strings.ToLower(kv.name), Value: kv.value}
			if key == "set" {
				h.Set = append(h.Set, hd)
			} else {
				h.Add = append(h.Add, hd)
			}
		}
	}
	for _, it := range d.strList(m, "remove") {
		if use(it.line, "remove", it.value) {
			h.Remove = append(h.Remove, strings.ToLower(it.value))
		}
	}
	if len(m.vals) == 0 {
		d.errorf(m.line, "%s needs at least one of set, add or remove", what)
	}
	if n := len(h.Set) + len(h.Add) + len(h.Remove); n > MaxHeaderChanges {
		d.errorf(m.line, "%s changes %d headers, more than %d", what, n, MaxHeaderChanges)
	}
	return h
}

// pair is one entry of a free-form mapping of strings, with its line.
type pair struct {
	name, value string
	line        int
}

// pairs returns key's value as a mapping of strings to strings, in file
// order.
func (d *decoder) pairs(m *fields, key string) []pair {
	n := m.vals[key]
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "%s must be a mapping of header names to values, got %s", key, describe(n))
		return nil
	}
	var out []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if !isString(k) || !isString(v) {
			d.errorf(k.Line, "%s must map header names to string values", key)
			continue
		}
		if msg := valueProblem(key, k.Value); msg != "" {
			d.errorf(k.Line, "%s", msg)
			continue
		}
		if msg := valueProblem(key, v.Value); msg != "" {
			d.errorf(v.Line, "%s", msg)
			continue
		}
		out = append(out, pair{k.Value, v.Value, k.Line})
	}
	return out
}

// methods decodes a match's methods: any of them matches.
func (d *decoder) methods(m *fields) []string {
	if !m.has("methods") {
		return nil
	}
	items := d.strList(m, "methods")
	if m.emptyList("methods") {
		d.errorf(m.lineOf("methods"), "methods must list at least one method, or be omitted for any")
	}
	var out []string
	for _, it := range items {
		switch {
		case !contains(Methods(), it.value):
			d.errorf(it.line, "unknown method %s; supported: %s (in capitals)", quoteValue(it.value), strings.Join(Methods(), ", "))
		case contains(out, it.value):
			d.errorf(it.line, "method %s is listed twice", it.value)
		default:
			out = append(out, it.value)
		}
	}
	return out
}

// MaxQueryParamName is the longest query parameter name Envoy accepts.
const MaxQueryParamName = 1024

// queryParam decodes one query parameter match.
func (d *decoder) queryParam(n *yaml.Node) (QueryParamMatch, bool) {
	m, ok := d.mapping(n, "query parameter match", "name", "exact", "regex", "present")
	if !ok {
		return QueryParamMatch{}, false
	}
	q := QueryParamMatch{Pos: d.pos(m.line)}
	if d.require(m, "name") {
		if v, ok := d.str(m, "name"); ok {
			switch {
			case v == "":
				d.errorf(m.lineOf("name"), "name must not be empty")
			case len(v) > MaxQueryParamName:
				d.errorf(m.lineOf("name"), "query parameter name is %d bytes, more than Envoy's limit of %d", len(v), MaxQueryParamName)
			case strings.ContainsAny(v, "&=#? "):
				d.errorf(m.lineOf("name"), "invalid query parameter name %s: it may not hold '&', '=', '#', '?' or a space", quoteValue(v))
			default:
				q.Name = v
			}
		}
	}
	d.oneOf(m, false, "exact", "regex", "present")
	if v, ok := d.str(m, "exact"); ok {
		if v == "" {
			d.errorf(m.lineOf("exact"), "exact must not be empty; use present: true to match the parameter with any value")
		} else {
			q.Exact = v
		}
	}
	if v, ok := d.str(m, "regex"); ok && d.regex(m.lineOf("regex"), "regex", v) {
		q.Regex = v
	}
	if v, ok := d.boolean(m, "present"); ok {
		if !v {
			d.errorf(m.lineOf("present"), "present must be true (matching requests without a query parameter is not supported)")
		}
		q.Present = v
	}
	return q, true
}

// CORS lets browsers call a host or route from other origins: Envoy answers
// preflight requests itself and adds the Access-Control-* headers.
type CORS struct {
	Pos Pos
	// AllowOrigins are origins as browsers send them (https://shop.example.com),
	// "*" for any, or with "*." starting the host for its subdomains
	// (https://*.example.com).
	AllowOrigins     []string
	AllowMethods     []string // from Methods; nil: none listed (browsers allow GET, HEAD, POST)
	AllowHeaders     []string // request headers a page may send
	ExposeHeaders    []string // response headers a page may read
	MaxAge           *time.Duration
	AllowCredentials bool
}

// originRE is a browser origin: scheme, host (a "*." first label allowed)
// and an optional port, nothing else.
var originRE = regexp.MustCompile(`^https?://(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)

// cors decodes a host's or route's cors block.
func (d *decoder) cors(n *yaml.Node) *CORS {
	m, ok := d.mapping(n, "cors", "allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge", "allowCredentials")
	if !ok {
		return nil
	}
	c := &CORS{Pos: d.pos(m.line)}
	anyOrigin := false
	if d.require(m, "allowOrigins") {
		if m.emptyList("allowOrigins") {
			d.errorf(m.lineOf("allowOrigins"), "allowOrigins must list at least one origin")
		}
		for _, it := range d.strList(m, "allowOrigins") {
			switch {
			case it.value == "*":
				anyOrigin = true
			case !originRE.MatchString(it.value):
				d.errorf(it.line, "invalid origin %s: want a scheme, host and optional port, such as https://shop.example.com or https://*.example.com, or \"*\" for any", quoteValue(it.value))
				continue
			case contains(c.AllowOrigins, it.value):
				d.errorf(it.line, "origin %s is listed twice", quoteValue(it.value))
				continue
			}
			c.AllowOrigins = append(c.AllowOrigins, it.value)
		}
	}
	if m.has("allowMethods") {
		if m.emptyList("allowMethods") {
			d.errorf(m.lineOf("allowMethods"), "allowMethods must list at least one method, or be omitted")
		}
		for _, it := range d.strList(m, "allowMethods") {
			switch {
			case !contains(Methods(), it.value):
				d.errorf(it.line, "unknown method %s; supported: %s (in capitals)", quoteValue(it.value), strings.Join(Methods(), ", "))
			case contains(c.AllowMethods, it.value):
				d.errorf(it.line, "method %s is listed twice", it.value)
			default:
				c.AllowMethods = append(c.AllowMethods, it.value)
			}
		}
	}
	for _, key := range []string{"allowHeaders", "exposeHeaders"} {
		var names []string
		for _, it := range d.strList(m, key) {
			name := strings.ToLower(it.value)
			switch {
			case !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":"):
				d.errorf(it.line, "%s: invalid header name %s", key, quoteValue(it.value))
			case contains(names, name):
				d.errorf(it.line, "%s: header %q is listed twice", key, name)
			default:
				names = append(names, name)
			}
		}
		if key == "allowHeaders" {
			c.AllowHeaders = names
		} else {
			c.ExposeHeaders = names
		}
	}
	if age := d.duration(m, "maxAge"); age != nil {
		if *age%time.Second != 0 {
			d.errorf(m.lineOf("maxAge"), "maxAge must be whole seconds (browsers read it in seconds), got %s", age)
		} else {
			c.MaxAge = age
		}
	}
	if v, ok := d.boolean(m, "allowCredentials"); ok {
		c.AllowCredentials = v
		if v && anyOrigin {
			d.errorf(m.lineOf("allowCredentials"), "allowCredentials with allowOrigins \"*\" would let every site make requests with its visitors' cookies; list the origins you trust")
		}
	}
	return c
}

// Mirror sends a copy of a share of a route's requests to another
// service, whose responses are dropped.
type Mirror struct {
	Pos     Pos
	Service string
	// PerMillion is the share of requests copied, in millionths:
	// percent 12.5 is 125000.
	PerMillion uint32
}

// mirrors decodes a route's mirror list.
func (d *decoder) mirrors(m *fields, route string) []Mirror {
	items := d.list(m, "mirror")
	if m.emptyList("mirror") {
		d.errorf(m.lineOf("mirror"), "mirror must list at least one service, or be omitted")
	}
	var out []Mirror
	seen := map[string]Pos{}
	for _, n := range items {
		e, ok := d.mapping(n, "mirror entry", "service", "percent")
		if !ok {
			continue
		}
		mr := Mirror{Pos: d.pos(e.line), PerMillion: 1_000_000}
		if d.require(e, "service") {
			if v, ok := d.str(e, "service"); ok && d.service(e.lineOf("service"), v) {
				switch prev, dup := seen[v]; {
				case dup:
					d.errorf(e.lineOf("service"), "service %q appears twice in mirror (also at %s)", v, prev)
				case v == route:
					d.errorf(e.lineOf("service"), "mirror service %q is the route's own service, which would get each mirrored request twice", v)
				default:
					seen[v] = mr.Pos
					mr.Service = v
				}
			}
		}
		if pn := e.vals["percent"]; pn != nil {
			mr.PerMillion = d.percent(pn)
		}
		if mr.Service != "" {
			out = append(out, mr)
		}
	}
	return out
}

// percent reads a share from above 0 to 100 with at most four decimals,
// as parts per million.
func (d *decoder) percent(n *yaml.Node) uint32 {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		d.errorf(n.Line, "percent must be a number, got %s", describe(n))
		return 0
	}
	f, err := strconv.ParseFloat(n.Value, 64)
	ppm := math.Round(f * 10_000)
	switch {
	case err != nil || math.IsNaN(f) || f <= 0 || f > 100:
		d.errorf(n.Line, "percent must be above 0 and at most 100, got %s", n.Value)
		return 0
	case math.Abs(ppm-f*10_000) > 1e-6:
		d.errorf(n.Line, "percent %s has more than four decimals", n.Value)
		return 0
	}
	return uint32(ppm)
}

// Fault injects failures into a share of a route's requests, to test how
// clients cope: a delay before forwarding, or an answer with an error
// status instead of forwarding. At least one is set.
type Fault struct {
	Pos   Pos
	Delay *FaultDelay
	Abort *FaultAbort
}

// FaultDelay holds a share of the requests for Duration first.
type FaultDelay struct {
	Duration   time.Duration // > 0
	PerMillion uint32        // the share delayed, as Mirror's
}

// FaultAbort answers a share of the requests with Status.
type FaultAbort struct {
	Status     int // 200 to 599
	PerMillion uint32
}

// fault decodes a route's fault block.
func (d *decoder) fault(n *yaml.Node) *Fault {
	m, ok := d.mapping(n, "fault", "delay", "abort")
	if !ok {
		return nil
	}
	f := &Fault{Pos: d.pos(m.line)}
	if dn := m.vals["delay"]; dn != nil {
		if dm, ok := d.mapping(dn, "fault delay", "duration", "percent"); ok {
			fd := &FaultDelay{PerMillion: 1_000_000}
			if d.require(dm, "duration") {
				if v := d.duration(dm, "duration"); v != nil {
					if *v == 0 {
						d.errorf(dm.lineOf("duration"), "a fault delay's duration must be above 0")
					}
					fd.Duration = *v
				}
			}
			if pn := dm.vals["percent"]; pn != nil {
				fd.PerMillion = d.percent(pn)
			}
			f.Delay = fd
		}
	}
	if an := m.vals["abort"]; an != nil {
		if am, ok := d.mapping(an, "fault abort", "status", "percent"); ok {
			fa := &FaultAbort{PerMillion: 1_000_000}
			if d.require(am, "status") {
				if v, ok := d.integer(am, "status", 200, 599); ok {
					fa.Status = int(v)
				}
			}
			if pn := am.vals["percent"]; pn != nil {
				fa.PerMillion = d.percent(pn)
			}
			f.Abort = fa
		}
	}
	if !m.has("delay") && !m.has("abort") {
		d.errorf(m.line, "fault needs at least one of delay or abort")
	}
	return f
}

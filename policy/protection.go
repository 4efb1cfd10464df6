package policy

import (
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Bounds of a listener's requestLimits.
const (
	// MaxHeadersKBLimit is the largest maxHeadersKB Envoy accepts (its
	// max_request_headers_kb is at most 8192).
	MaxHeadersKBLimit = 8192
	// EnvoyDefaultHeadersKB is what Envoy allows when maxHeadersKB is not
	// set.
	EnvoyDefaultHeadersKB = 60
)

// RequestLimits bounds the size of the requests a listener accepts:
// Envoy answers 431 to a request whose headers are too large and 413 to
// one whose body is.
type RequestLimits struct {
	Pos Pos
	// MaxHeadersKB bounds the request line and headers together, in KiB
	// (1 to MaxHeadersKBLimit); 0: Envoy's default, EnvoyDefaultHeadersKB.
	MaxHeadersKB uint32
	// MaxBodyBytes bounds the request body; 0: no bound. Envoy buffers a
	// bounded body whole before forwarding it, so a listener with it does
	// not stream uploads; WebSocket routes are not bounded.
	MaxBodyBytes uint32
}

func (d *decoder) requestLimits(n *yaml.Node, l *Listener) *RequestLimits {
	m, ok := d.mapping(n, "requestLimits", "maxHeadersKB", "maxBodyBytes")
	if !ok {
		return nil
	}
	rl := &RequestLimits{Pos: d.pos(m.line)}
	if !m.has("maxHeadersKB") && !m.has("maxBodyBytes") {
		d.errorf(m.line, "requestLimits needs at least one of maxHeadersKB or maxBodyBytes")
	}
	if v, ok := d.integer(m, "maxHeadersKB", 1, MaxHeadersKBLimit); ok {
		rl.MaxHeadersKB = uint32(v)
	}
	if v, ok := d.uint32Field(m, "maxBodyBytes", 1); ok {
		rl.MaxBodyBytes = v
		if l.WebSocket {
			// Envoy would buffer each WebSocket's frames until the stream
			// ends, which it never does.
			d.errorf(m.lineOf("maxBodyBytes"), "maxBodyBytes cannot be used on a listener with websocket: true: Envoy buffers a bounded body whole, and a WebSocket's stream never ends; allow WebSockets on the routes that need them instead (they are not bounded)")
		}
	}
	return rl
}

// MaxXFFTrustedHops bounds xffTrustedHops: more proxies than this in
// front of a gateway is more likely a mistake than a topology.
const MaxXFFTrustedHops = 10

// IPAccess admits or refuses requests by the client's address: Envoy
// answers 403 to a client in Deny, or, when Allow is set, to one in none
// of Allow. The client's address is the connection's peer, or with the
// listener's XFFTrustedHops, one taken from X-Forwarded-For.
type IPAccess struct {
	Pos   Pos
	Allow []netip.Prefix // nil: every address not denied
	Deny  []netip.Prefix
}

// EffectiveIPAccess is the IP access that applies to a route: its own,
// else its host's, else its listener's; nil: none.
func EffectiveIPAccess(l *Listener, h *VirtualHost, r *Route) *IPAccess {
	switch {
	case r.IPAccess != nil:
		return r.IPAccess
	case h.IPAccess != nil:
		return h.IPAccess
	}
	return l.IPAccess
}

func (d *decoder) ipAccess(n *yaml.Node) *IPAccess {
	m, ok := d.mapping(n, "ipAccess", "allow", "deny")
	if !ok {
		return nil
	}
	a := &IPAccess{Pos: d.pos(m.line)}
	if !m.has("allow") && !m.has("deny") {
		d.errorf(m.line, "ipAccess needs at least one of allow or deny")
	}
	a.Allow = d.cidrs(m, "allow")
	a.Deny = d.cidrs(m, "deny")
	return a
}

// cidrs reads a list of CIDR ranges or single addresses (a /32 or /128).
func (d *decoder) cidrs(m *fields, key string) []netip.Prefix {
	if !m.has(key) {
		return nil
	}
	if m.emptyList(key) {
		d.errorf(m.lineOf(key), "%s must list at least one address or CIDR range, or be omitted", key)
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]item{}
	for _, it := range d.strList(m, key) {
		p, ok := d.cidr(it)
		if !ok {
			continue
		}
		if first, dup := seen[p]; dup {
			d.errorf(it.line, "%s %q is the same range as %q (line %d); list it once", key, it.value, first.value, first.line)
			continue
		}
		seen[p] = it
		out = append(out, p)
	}
	return out
}

func (d *decoder) cidr(it item) (netip.Prefix, bool) {
	if addr, err := netip.ParseAddr(it.value); err == nil && addr.Zone() == "" {
		return netip.PrefixFrom(addr, addr.BitLen()), true
	}
	p, err := netip.ParsePrefix(it.value)
	if err != nil {
		d.errorf(it.line, "invalid address or CIDR range %q: want an IP address such as 192.0.2.7 or a range such as 10.0.0.0/8 or 2001:db8::/32", it.value)
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		// Envoy would mask it silently; a typo in the address is likelier
		// than a wish to write the range that way.
		d.errorf(it.line, "CIDR range %q has address bits set beyond its /%d; write %s", it.value, p.Bits(), p.Masked())
		return netip.Prefix{}, false
	}
	return p, true
}

// What a route's rateLimit gives each its own bucket (rateLimit.by).
const (
	RateLimitByClientIP = "clientIP" // the client's address (see IPAccess)
	RateLimitByHeader   = "header"   // a request header's value, such as an API key
	RateLimitByPath     = "path"     // the request path, with its query
)

// RateLimitBys lists the rateLimit.by values accepted.
func RateLimitBys() []string {
	return []string{RateLimitByClientIP, RateLimitByHeader, RateLimitByPath}
}

// Bounds of rateLimit.clients, the buckets Envoy keeps per route.
const (
	DefaultRateLimitClients = 10000
	MaxRateLimitClients     = 1000000
)

// rateLimitClients decodes the per-client part of a rateLimit: by, header,
// clients, shadow and headers.
func (d *decoder) rateLimitClients(m *fields, rl *RateLimit) {
	if v, ok := d.str(m, "by"); ok {
		if contains(RateLimitBys(), v) {
			rl.By = v
		} else {
			d.errorf(m.lineOf("by"), "unknown rateLimit.by %q; supported: %s", v, strings.Join(RateLimitBys(), ", "))
		}
	}
	if v, ok := d.str(m, "header"); ok {
		switch name := strings.ToLower(v); {
		case m.has("by") && rl.By != RateLimitByHeader:
			d.errorf(m.lineOf("header"), "header is only used with by: header")
		case !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":"):
			d.errorf(m.lineOf("header"), "invalid header name %s", quoteValue(v))
		default:
			rl.Header = name
		}
	}
	if rl.By == RateLimitByHeader && !m.has("header") {
		d.errorf(m.lineOf("by"), "by: header needs header, the request header whose values get a bucket each (such as x-api-key)")
	}
	if m.has("clients") {
		if rl.By == "" {
			d.errorf(m.lineOf("clients"), "clients is only used with by")
		}
		if v, ok := d.integer(m, "clients", 1, MaxRateLimitClients); ok {
			rl.Clients = uint32(v)
		}
	} else if rl.By != "" {
		rl.Clients = DefaultRateLimitClients
	}
	if v, ok := d.boolean(m, "shadow"); ok {
		rl.Shadow = v
	}
	if v, ok := d.boolean(m, "headers"); ok {
		rl.Headers = v
	}
}

// RateLimitResponse is what a listener's rate-limited requests get,
// with status 429.
type RateLimitResponse struct {
	Pos         Pos
	Body        string
	ContentType string // "": text/plain
}

func (d *decoder) rateLimitResponse(n *yaml.Node) *RateLimitResponse {
	m, ok := d.mapping(n, "rateLimitResponse", "body", "contentType")
	if !ok {
		return nil
	}
	r := &RateLimitResponse{Pos: d.pos(m.line)}
	if d.require(m, "body") {
		if v, ok := d.text(m, "body"); ok {
			if len(v) > MaxDirectResponseBody {
				d.errorf(m.lineOf("body"), "rateLimitResponse body is %d bytes, more than Envoy's limit of %d", len(v), MaxDirectResponseBody)
			} else {
				r.Body = v
			}
		}
	}
	if v, ok := d.str(m, "contentType"); ok {
		if contentTypeRE.MatchString(v) {
			r.ContentType = v
		} else {
			d.errorf(m.lineOf("contentType"), "invalid contentType %s: want a media type such as text/html; charset=utf-8", quoteValue(v))
		}
	}
	return r
}

// rateLimitResponseUsed warns about a listener's rateLimitResponse when
// none of its routes has a rate limit to answer with it.
func (d *decoder) rateLimitResponseUsed(l *Listener) {
	if l.RateLimitResponse == nil {
		return
	}
	for _, h := range l.Hosts {
		if len(h.GlobalRateLimits) > 0 {
			return
		}
		for _, r := range h.Routes {
			if r.RateLimit != nil || len(r.GlobalRateLimits) > 0 {
				return
			}
		}
	}
	d.warnf(l.RateLimitResponse.Pos.Line, "rateLimitResponse has no effect: no host or route of this listener has a rateLimit or globalRateLimit")
}

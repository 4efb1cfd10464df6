package policy

import (
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A global rate limit is counted by a rate limit service
// (envoyproxy/ratelimit) that every Envoy of a group asks, so the limit
// holds across the group's Envoys, unlike a route's rateLimit, which each
// Envoy counts alone.

// Units of a globalRateLimit's per: envoyproxy/ratelimit counts in fixed
// windows of one of these.
const (
	PerSecond = "second"
	PerMinute = "minute"
	PerHour   = "hour"
	PerDay    = "day"
)

// GlobalRateLimitUnits lists the per values a globalRateLimit accepts.
func GlobalRateLimitUnits() []string { return []string{PerSecond, PerMinute, PerHour, PerDay} }

// RateLimitByService counts a global limit per Consul service the request
// is sent to (the service picked by a split, for example).
const RateLimitByService = "service"

// GlobalRateLimitBys lists what a globalRateLimit may count by.
func GlobalRateLimitBys() []string {
	return []string{RateLimitByClientIP, RateLimitByHeader, RateLimitByPath, RateLimitByService}
}

// Rate limit service defaults and bounds.
const (
	// DefaultRateLimitTimeout is how long Envoy waits for the rate limit
	// service by default (Envoy's own default): every limited request
	// waits for its answer, so it is short.
	DefaultRateLimitTimeout = 20 * time.Millisecond
	// RateLimitTimeoutWarning is the timeout above which a warning says
	// that a slow service delays every request that much.
	RateLimitTimeoutWarning = time.Second
)

// Failure modes of a rate limit service: what Envoy does with a request
// when the service cannot answer in time.
const (
	FailureModeAllow = "allow" // forward it, unlimited
	FailureModeDeny  = "deny"  // answer it 500
)

// GlobalRateLimit is a limit shared by every Envoy of a group: Requests
// per Per (a fixed window), counted by the group's rate limit service.
type GlobalRateLimit struct {
	Pos      Pos
	Requests uint32
	Per      string // one of GlobalRateLimitUnits
	// By gives each value of what it names a counter of its own, nested
	// in order (by: [clientIP, path]: each client's each path); nil: one
	// counter for the route (or the host).
	By []RateLimitKey
	// Shadow counts and reports the requests over the limit in the rate
	// limit service's stats, and forwards them all.
	Shadow bool
}

// RateLimitKey is one thing a global limit counts by.
type RateLimitKey struct {
	By     string // one of GlobalRateLimitBys
	Header string // lowercase; set when By is RateLimitByHeader
}

// RateLimitService is where a group's Envoys ask whether a request is
// within its global limits. Exactly one of Service and Address is set.
type RateLimitService struct {
	Pos Pos
	// Service is a Consul service name: Envoy speaks to its instances.
	Service string
	// Address is host:port; a DNS name is resolved by Envoy.
	Address string
	// Timeout bounds the wait for an answer; DefaultRateLimitTimeout
	// when omitted.
	Timeout time.Duration
	// FailureMode is FailureModeAllow (the default) or FailureModeDeny.
	FailureMode string
	// Headers adds x-ratelimit-limit, -remaining and -reset to the
	// responses of requests that a global limit counts.
	Headers bool
}

// usesGlobalRateLimits reports whether any host or route of the group has
// a global rate limit.
func (g *ProxyGroup) usesGlobalRateLimits() bool {
	for _, l := range g.Listeners {
		for _, h := range l.Hosts {
			if len(h.GlobalRateLimits) > 0 {
				return true
			}
			for _, r := range h.Routes {
				if len(r.GlobalRateLimits) > 0 {
					return true
				}
			}
		}
	}
	return false
}

// rateLimitService decodes a proxy group's rateLimitService block.
func (d *decoder) rateLimitService(n *yaml.Node) *RateLimitService {
	m, ok := d.mapping(n, "rateLimitService", "service", "address", "timeout", "failureMode", "headers")
	if !ok {
		return nil
	}
	s := &RateLimitService{Pos: d.pos(m.line), Timeout: DefaultRateLimitTimeout, FailureMode: FailureModeAllow}
	d.oneOf(m, false, "service", "address")
	if v, ok := d.str(m, "service"); ok && d.service(m.lineOf("service"), v) {
		s.Service = v
	}
	if v, ok := d.str(m, "address"); ok {
		if msg := addressProblem(v); msg != "" {
			d.errorf(m.lineOf("address"), "rateLimitService address %q: %s", v, msg)
		} else {
			s.Address = v
		}
	}
	if t := d.duration(m, "timeout"); t != nil {
		switch {
		case *t < time.Millisecond:
			d.errorf(m.lineOf("timeout"), "timeout must be at least 1ms, got %s", m.vals["timeout"].Value)
		case *t > RateLimitTimeoutWarning:
			d.warnf(m.lineOf("timeout"), "timeout %s is long: while the rate limit service is slow, every request with a global limit waits up to that long", t)
			s.Timeout = *t
		default:
			s.Timeout = *t
		}
	}
	if v, ok := d.str(m, "failureMode"); ok {
		if v == FailureModeAllow || v == FailureModeDeny {
			s.FailureMode = v
		} else {
			d.errorf(m.lineOf("failureMode"), "failureMode %s: want %s or %s", quoteValue(v), FailureModeAllow, FailureModeDeny)
		}
	}
	if v, ok := d.boolean(m, "headers"); ok {
		s.Headers = v
	}
	return s
}

// globalRateLimits decodes a host's or route's globalRateLimit: one limit
// (a mapping) or several (a list of them), all of which a request must
// pass.
func (d *decoder) globalRateLimits(n *yaml.Node) []GlobalRateLimit {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		if len(n.Content) == 0 {
			d.errorf(n.Line, "globalRateLimit must list at least one limit, or be omitted")
		}
		items = make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			items[i] = resolve(c)
		}
	}
	var out []GlobalRateLimit
	for _, it := range items {
		if l, ok := d.globalRateLimit(it); ok {
			out = append(out, l)
		}
	}
	return out
}

// globalRateLimit decodes one global limit.
func (d *decoder) globalRateLimit(n *yaml.Node) (GlobalRateLimit, bool) {
	m, ok := d.mapping(n, "globalRateLimit", "requests", "per", "by", "shadow")
	if !ok {
		return GlobalRateLimit{}, false
	}
	l := GlobalRateLimit{Pos: d.pos(m.line)}
	if d.require(m, "requests") {
		l.Requests, _ = d.uint32Field(m, "requests", 1)
	}
	if d.require(m, "per") {
		if v, ok := d.str(m, "per"); ok {
			if contains(GlobalRateLimitUnits(), v) {
				l.Per = v
			} else {
				d.errorf(m.lineOf("per"), "globalRateLimit per %s: want one of %s (the rate limit service counts in fixed windows of a second, a minute, an hour or a day)", quoteValue(v), strings.Join(GlobalRateLimitUnits(), ", "))
			}
		}
	}
	if bn := m.vals["by"]; bn != nil {
		l.By = d.rateLimitKeys(bn)
	}
	if v, ok := d.boolean(m, "shadow"); ok {
		l.Shadow = v
	}
	return l, true
}

// rateLimitKeys decodes a global limit's by: one key, or a list of them,
// each at most once (header keys: one header), nested in order.
func (d *decoder) rateLimitKeys(n *yaml.Node) []RateLimitKey {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		if len(n.Content) == 0 {
			d.errorf(n.Line, "by must list at least one of clientIP, path, service or {header: NAME}, or be omitted for one counter")
		}
		items = make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			items[i] = resolve(c)
		}
	}
	var out []RateLimitKey
	seen := map[string]int{}
	for _, it := range items {
		k, ok := d.rateLimitKey(it)
		if !ok {
			continue
		}
		if first, dup := seen[k.By]; dup {
			msg := "by lists %s twice (first at line %d)"
			if k.By == RateLimitByHeader {
				msg += "; a limit counts by one header"
			}
			d.errorf(it.Line, msg, k.By, first)
			continue
		}
		seen[k.By] = it.Line
		out = append(out, k)
	}
	return out
}

// rateLimitKey decodes one item of by: clientIP, path, service, or
// {header: NAME}.
func (d *decoder) rateLimitKey(n *yaml.Node) (RateLimitKey, bool) {
	if n.Kind == yaml.MappingNode {
		m, ok := d.mapping(n, "by entry", "header")
		if !ok || !d.require(m, "header") {
			return RateLimitKey{}, false
		}
		v, ok := d.str(m, "header")
		if !ok {
			return RateLimitKey{}, false
		}
		name := strings.ToLower(v)
		if !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":") {
			d.errorf(m.lineOf("header"), "invalid header name %s", quoteValue(v))
			return RateLimitKey{}, false
		}
		return RateLimitKey{By: RateLimitByHeader, Header: name}, true
	}
	if !isString(n) {
		d.errorf(n.Line, "by items must be clientIP, path, service or {header: NAME}, got %s", describe(n))
		return RateLimitKey{}, false
	}
	switch v := n.Value; {
	case v == RateLimitByHeader:
		d.errorf(n.Line, "by: header needs the header's name: write {header: x-api-key}")
	case v == RateLimitByClientIP || v == RateLimitByPath || v == RateLimitByService:
		return RateLimitKey{By: v}, true
	default:
		d.errorf(n.Line, "unknown globalRateLimit by %s; supported: %s, %s, %s, or {header: NAME}", quoteValue(v), RateLimitByClientIP, RateLimitByPath, RateLimitByService)
	}
	return RateLimitKey{}, false
}

// checkGlobalRateLimits reports each global limit of a group without a
// rate limit service to count it, and a service that no limit uses.
func (d *decoder) checkGlobalRateLimits(g *ProxyGroup) {
	if g.RateLimitService != nil {
		if !g.usesGlobalRateLimits() {
			d.warnf(g.RateLimitService.Pos.Line, "rateLimitService has no effect: no host or route of this proxy group has a globalRateLimit")
		}
		return
	}
	report := func(ls []GlobalRateLimit) {
		for _, l := range ls {
			d.errorf(l.Pos.Line, "globalRateLimit needs the proxy group's rateLimitService, which counts it: add rateLimitService with a service or an address")
		}
	}
	for _, l := range g.Listeners {
		for _, h := range l.Hosts {
			report(h.GlobalRateLimits)
			for _, r := range h.Routes {
				report(r.GlobalRateLimits)
			}
		}
	}
}

package policy

import (
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load balancing policies a Service may name: how the edge's Envoys pick
// an instance for each request.
const (
	LBRoundRobin   = "round_robin" // the default
	LBLeastRequest = "least_request"
	LBRingHash     = "ring_hash" // consistent hashing: with hashOn, sticky sessions
	LBMaglev       = "maglev"    // consistent hashing, faster to build, less even on small services
	LBRandom       = "random"
)

// LBPolicies lists the loadBalancer.policy values accepted.
func LBPolicies() []string {
	return []string{LBRoundRobin, LBLeastRequest, LBRingHash, LBMaglev, LBRandom}
}

// Bounds on upstream settings. Envoy counts its durations in milliseconds
// and refuses a zero timeout, interval or window, so shorter values are
// refused here rather than rounded to zero there.
const (
	// MinUpstreamDuration is the shortest connectTimeout, slowStart,
	// outlier interval or ejection time, health check interval or timeout.
	MinUpstreamDuration = time.Millisecond
	// DefaultHealthCheckInterval, DefaultHealthCheckTimeout and the
	// thresholds are a healthCheck's defaults.
	DefaultHealthCheckInterval  = 5 * time.Second
	DefaultHealthCheckTimeout   = 2 * time.Second
	DefaultHealthyThreshold     = 2
	DefaultUnhealthyThreshold   = 3
	maxHealthCheckThreshold     = 1000
	maxOutlierConsecutiveErrors = 1000
)

// LoadBalancer is how a service's instances share its requests.
type LoadBalancer struct {
	Pos    Pos
	Policy string // one of LBPolicies; LBRingHash when only hashOn is given, else LBRoundRobin
	// Hash, for LBRingHash and LBMaglev, is what requests are hashed on:
	// requests with the same value go to the same instance while it is
	// healthy. Nil: every request hashes differently.
	Hash *HashOn
	// SlowStart, for LBRoundRobin and LBLeastRequest, ramps a new
	// instance's share of requests up over this window; 0: off.
	SlowStart time.Duration
}

// HashOn is the value requests are hashed on. Exactly one field is set.
type HashOn struct {
	Pos      Pos
	Cookie   *HashCookie
	Header   string // a request header's value
	SourceIP bool   // the client's address (as Envoy sees it)
}

// HashCookie makes sessions sticky by cookie: a request that carries it
// hashes on its value; one that does not gets it from Envoy in the
// response (Set-Cookie), so the client's next requests stick.
type HashCookie struct {
	Name string
	TTL  time.Duration // 0: a session cookie (no Max-Age)
	Path string        // "" : no Path attribute
}

// CircuitBreakers cap what the edge's Envoys send to a service at once;
// nil fields keep Switchyard's defaults (docs/policy.md).
type CircuitBreakers struct {
	Pos                                                         Pos
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries *uint32
}

// OutlierDetection tunes how Envoy ejects failing instances; nil fields
// keep Switchyard's defaults (docs/policy.md).
type OutlierDetection struct {
	Pos                                                                      Pos
	Consecutive5xx, ConsecutiveGatewayErrors, ConsecutiveLocalOriginFailures *uint32
	Interval, BaseEjectionTime, MaxEjectionTime                              *time.Duration
	MaxEjectionPercent                                                       *uint32
}

// HealthCheck is an active HTTP health check Envoy runs against every
// instance, in addition to Consul's checks: an instance takes requests
// only while both pass.
type HealthCheck struct {
	Pos                                  Pos
	Path                                 string
	Interval, Timeout                    time.Duration
	HealthyThreshold, UnhealthyThreshold uint32
}

// Hashes reports whether the service's requests are hashed to instances
// (sticky sessions, header or source IP affinity).
func (sv *Service) Hashes() bool { return sv.LoadBalancer != nil && sv.LoadBalancer.Hash != nil }

// serviceFields are the fields of a Service document.
var serviceFields = []string{
	"apiVersion", "kind", "name", "protocol", "mesh",
	"loadBalancer", "connectTimeout", "idleTimeout", "circuitBreakers", "outlierDetection", "healthCheck",
}

// upstream decodes a Service's settings for the edge's cluster to it.
func (d *decoder) upstream(m *fields, sv *Service) {
	if n := m.vals["loadBalancer"]; n != nil {
		sv.LoadBalancer = d.loadBalancer(n)
	}
	sv.ConnectTimeout = d.minDuration(m, "connectTimeout", MinUpstreamDuration)
	sv.IdleTimeout = d.duration(m, "idleTimeout")
	if n := m.vals["circuitBreakers"]; n != nil {
		sv.CircuitBreakers = d.circuitBreakers(n)
	}
	if n := m.vals["outlierDetection"]; n != nil {
		sv.OutlierDetection = d.outlierDetection(n)
	}
	if n := m.vals["healthCheck"]; n != nil {
		sv.HealthCheck = d.healthCheck(n)
	}
}

// minDuration is duration for a field that must be at least lo.
func (d *decoder) minDuration(m *fields, key string, lo time.Duration) *time.Duration {
	v := d.duration(m, key)
	if v != nil && *v < lo {
		d.errorf(m.lineOf(key), "%s must be at least %s, got %s", key, lo, m.vals[key].Value)
		return nil
	}
	return v
}

// optUint32 is uint32Field for an optional field, nil when absent or
// invalid.
func (d *decoder) optUint32(m *fields, key string, lo, hi int64) *uint32 {
	if !m.has(key) {
		return nil
	}
	v, ok := d.integer(m, key, lo, hi)
	if !ok {
		return nil
	}
	u := uint32(v)
	return &u
}

func (d *decoder) loadBalancer(n *yaml.Node) *LoadBalancer {
	m, ok := d.mapping(n, "loadBalancer", "policy", "hashOn", "slowStart")
	if !ok {
		return nil
	}
	lb := &LoadBalancer{Pos: d.pos(m.line), Policy: LBRoundRobin}
	if hn := m.vals["hashOn"]; hn != nil {
		lb.Hash = d.hashOn(hn)
		lb.Policy = LBRingHash
	}
	if v, ok := d.str(m, "policy"); ok {
		if contains(LBPolicies(), v) {
			lb.Policy = v
		} else {
			d.errorf(m.lineOf("policy"), "unknown loadBalancer policy %s; supported: %s", quoteValue(v), strings.Join(LBPolicies(), ", "))
		}
	}
	if m.has("hashOn") && lb.Policy != LBRingHash && lb.Policy != LBMaglev {
		d.errorf(m.lineOf("hashOn"), "hashOn needs policy %s or %s (consistent hashing), not %s", LBRingHash, LBMaglev, lb.Policy)
	}
	if s := d.minDuration(m, "slowStart", MinUpstreamDuration); s != nil {
		lb.SlowStart = *s
		if lb.Policy != LBRoundRobin && lb.Policy != LBLeastRequest {
			d.errorf(m.lineOf("slowStart"), "slowStart works with policy %s or %s only, not %s", LBRoundRobin, LBLeastRequest, lb.Policy)
		}
	}
	return lb
}

// cookieNameRE is a cookie name: an RFC 6265 token.
var cookieNameRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

func (d *decoder) hashOn(n *yaml.Node) *HashOn {
	m, ok := d.mapping(n, "hashOn", "cookie", "header", "sourceIP")
	if !ok {
		return nil
	}
	h := &HashOn{Pos: d.pos(m.line)}
	d.oneOf(m, false, "cookie", "header", "sourceIP")
	if cn := m.vals["cookie"]; cn != nil {
		h.Cookie = d.hashCookie(cn)
	}
	if v, ok := d.str(m, "header"); ok {
		if headerNameRE.MatchString(v) && !strings.HasPrefix(v, ":") {
			h.Header = v
		} else {
			d.errorf(m.lineOf("header"), "invalid header name %s", quoteValue(v))
		}
	}
	if v, ok := d.boolean(m, "sourceIP"); ok {
		if !v {
			d.errorf(m.lineOf("sourceIP"), "sourceIP must be true, or be omitted")
		}
		h.SourceIP = v
	}
	return h
}

func (d *decoder) hashCookie(n *yaml.Node) *HashCookie {
	m, ok := d.mapping(n, "cookie", "name", "ttl", "path")
	if !ok {
		return nil
	}
	c := &HashCookie{}
	if d.require(m, "name") {
		if v, ok := d.str(m, "name"); ok {
			if cookieNameRE.MatchString(v) {
				c.Name = v
			} else {
				d.errorf(m.lineOf("name"), "invalid cookie name %s: use letters, digits and !#$%%&'*+.^_`|~-", quoteValue(v))
			}
		}
	}
	if t := d.duration(m, "ttl"); t != nil {
		if *t%time.Second != 0 {
			d.errorf(m.lineOf("ttl"), "ttl must be whole seconds (a cookie's Max-Age), got %s", m.vals["ttl"].Value)
		}
		c.TTL = *t
	}
	if v, ok := d.str(m, "path"); ok {
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, "; ") {
			d.errorf(m.lineOf("path"), "cookie path must start with \"/\" and hold no ';' or space, got %s", quoteValue(v))
		}
		c.Path = v
	}
	return c
}

func (d *decoder) circuitBreakers(n *yaml.Node) *CircuitBreakers {
	m, ok := d.mapping(n, "circuitBreakers", "maxConnections", "maxPendingRequests", "maxRequests", "maxRetries")
	if !ok {
		return nil
	}
	const hi = 1<<31 - 1
	cb := &CircuitBreakers{
		Pos:                d.pos(m.line),
		MaxConnections:     d.optUint32(m, "maxConnections", 1, hi),
		MaxPendingRequests: d.optUint32(m, "maxPendingRequests", 1, hi),
		MaxRequests:        d.optUint32(m, "maxRequests", 1, hi),
		MaxRetries:         d.optUint32(m, "maxRetries", 0, hi),
	}
	if len(m.vals) == 0 {
		d.warnf(m.line, "circuitBreakers sets nothing; the defaults apply")
	}
	return cb
}

func (d *decoder) outlierDetection(n *yaml.Node) *OutlierDetection {
	m, ok := d.mapping(n, "outlierDetection", "consecutive5xx", "consecutiveGatewayErrors", "consecutiveLocalOriginFailures",
		"interval", "baseEjectionTime", "maxEjectionTime", "maxEjectionPercent")
	if !ok {
		return nil
	}
	od := &OutlierDetection{
		Pos:                            d.pos(m.line),
		Consecutive5xx:                 d.optUint32(m, "consecutive5xx", 1, maxOutlierConsecutiveErrors),
		ConsecutiveGatewayErrors:       d.optUint32(m, "consecutiveGatewayErrors", 1, maxOutlierConsecutiveErrors),
		ConsecutiveLocalOriginFailures: d.optUint32(m, "consecutiveLocalOriginFailures", 1, maxOutlierConsecutiveErrors),
		Interval:                       d.minDuration(m, "interval", MinUpstreamDuration),
		BaseEjectionTime:               d.minDuration(m, "baseEjectionTime", MinUpstreamDuration),
		MaxEjectionTime:                d.minDuration(m, "maxEjectionTime", MinUpstreamDuration),
		MaxEjectionPercent:             d.optUint32(m, "maxEjectionPercent", 0, 100),
	}
	base, max := OutlierBaseEjectionTime, OutlierMaxEjectionTime
	if od.BaseEjectionTime != nil {
		base = *od.BaseEjectionTime
	}
	if od.MaxEjectionTime != nil {
		max = *od.MaxEjectionTime
	}
	if base > max {
		line := m.lineOf("maxEjectionTime")
		if !m.has("maxEjectionTime") {
			line = m.lineOf("baseEjectionTime")
		}
		d.errorf(line, "baseEjectionTime %s is longer than maxEjectionTime %s; Envoy refuses that", base, max)
	}
	if len(m.vals) == 0 {
		d.warnf(m.line, "outlierDetection sets nothing; the defaults apply")
	}
	return od
}

// Switchyard's outlier detection defaults, for the check that a base
// ejection time does not exceed the maximum (the envoy package applies
// them: see its outlierDetection).
const (
	OutlierBaseEjectionTime = 10 * time.Second
	OutlierMaxEjectionTime  = 2 * time.Minute
)

func (d *decoder) healthCheck(n *yaml.Node) *HealthCheck {
	m, ok := d.mapping(n, "healthCheck", "path", "interval", "timeout", "healthyThreshold", "unhealthyThreshold")
	if !ok {
		return nil
	}
	hc := &HealthCheck{
		Pos: d.pos(m.line), Interval: DefaultHealthCheckInterval, Timeout: DefaultHealthCheckTimeout,
		HealthyThreshold: DefaultHealthyThreshold, UnhealthyThreshold: DefaultUnhealthyThreshold,
	}
	if d.require(m, "path") {
		if v, ok := d.str(m, "path"); ok {
			if strings.HasPrefix(v, "/") && !strings.ContainsAny(v, " #") {
				hc.Path = v
			} else {
				d.errorf(m.lineOf("path"), "healthCheck path must start with \"/\" and hold no space or '#', got %s", quoteValue(v))
			}
		}
	}
	if v := d.minDuration(m, "interval", MinUpstreamDuration); v != nil {
		hc.Interval = *v
	}
	if v := d.minDuration(m, "timeout", MinUpstreamDuration); v != nil {
		hc.Timeout = *v
	}
	if v := d.optUint32(m, "healthyThreshold", 1, maxHealthCheckThreshold); v != nil {
		hc.HealthyThreshold = *v
	}
	if v := d.optUint32(m, "unhealthyThreshold", 1, maxHealthCheckThreshold); v != nil {
		hc.UnhealthyThreshold = *v
	}
	if hc.Timeout > hc.Interval {
		d.warnf(m.lineOf("timeout"), "healthCheck timeout %s is longer than its interval %s; checks will overlap", hc.Timeout, hc.Interval)
	}
	return hc
}

// checkHashedSplits refuses a split that includes a service whose requests
// are hashed to instances (sticky sessions): Envoy picks a split's service
// or subset at random for every request, so a session would not stay on
// one instance, which is what hashOn promises.
func (p *parsed) checkHashedSplits(errorf func(Pos, string, ...any)) {
	hashed := map[string]Pos{}
	for _, sv := range p.services {
		if sv.Hashes() {
			hashed[sv.Name] = sv.LoadBalancer.Hash.Pos
		}
	}
	if len(hashed) == 0 {
		return
	}
	for _, g := range p.groups {
		for _, l := range g.Listeners {
			for _, h := range l.Hosts {
				for _, r := range h.Routes {
					for _, w := range r.Split {
						if at, ok := hashed[w.Service]; ok && len(r.Split) > 1 {
							errorf(w.Pos, "service %q hashes requests to instances (hashOn at %s), but a split picks its service or subset at random for each request, so a session would not stay on one instance; route to the service alone (a header match can pick the canary), or drop hashOn", w.Service, at)
							break
						}
					}
				}
			}
		}
	}
}

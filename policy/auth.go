package policy

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file holds a listener's request authentication and authorization:
// JWT validation (jwt) and an external authorization service (extAuthz),
// and what hosts and routes say about them (requireJWT, extAuthz).

// Protocols an external authorization service may speak.
const (
	ExtAuthzGRPC = "grpc" // envoy.service.auth.v3.Authorization over HTTP/2
	ExtAuthzHTTP = "http" // a plain HTTP request per checked request
)

// Defaults of an extAuthz block.
const (
	// DefaultExtAuthzTimeout bounds each check, as Envoy's own examples
	// do: a check sits in front of every request.
	DefaultExtAuthzTimeout = 200 * time.Millisecond
	// ExtAuthzAllow and ExtAuthzDeny are the failureMode values: what
	// happens to a request when the service cannot answer in time.
	ExtAuthzAllow = "allow"
	ExtAuthzDeny  = "deny"
)

// ExtAuthz asks an authorization service about every request of a
// listener (unless its host or route turns it off). Exactly one of
// Service and Address is set.
type ExtAuthz struct {
	Pos      Pos
	Service  string // a Consul service
	Address  string // host:port, resolved by Envoy when a host name
	Protocol string // ExtAuthzGRPC or ExtAuthzHTTP
	Timeout  time.Duration
	// FailOpen lets requests through when the service fails or times
	// out (failureMode: allow); otherwise they are answered 403.
	FailOpen bool
	// PathPrefix (HTTP only) is put before the request's path in the
	// check request.
	PathPrefix string
	// Headers are the request headers sent to the service (lowercase);
	// nil: Envoy's defaults (every header for gRPC; Host, Method, Path,
	// Content-Length and Authorization for HTTP, which are always sent).
	Headers []string
	// UpstreamHeaders (HTTP only) are headers of the service's OK answer
	// added to the forwarded request; ClientHeaders (HTTP only) are
	// headers of its denial passed to the client (Envoy's defaults when
	// nil: the denial's own headers).
	UpstreamHeaders, ClientHeaders []string
}

// Defaults of a remoteJWKS block.
const (
	DefaultJWKSCacheDuration = 5 * time.Minute // Envoy's default
	DefaultJWKSTimeout       = 2 * time.Second
)

// JWT validates JSON Web Tokens on a listener's routes that require it.
type JWT struct {
	Pos       Pos
	Providers []JWTProvider
	// Require is what every route of the listener requires unless its
	// host or route says otherwise: a valid token of any of these
	// providers; nil: nothing.
	Require    []string
	RequirePos Pos
}

// JWTProvider is who issues tokens and where their signing keys are.
// Exactly one of JWKS (given inline or read from JWKSFile) and RemoteJWKS
// is set.
type JWTProvider struct {
	Pos    Pos
	Name   string
	Issuer string // the tokens' iss
	// Audiences: the token's aud must hold one of them; nil: any.
	Audiences []string
	JWKS      string // a JSON Web Key Set of public keys
	JWKSFile  string // where JWKS was read from; "" when inline
	// RemoteJWKS fetches the key set from a Consul service.
	RemoteJWKS *RemoteJWKS
	// Forward keeps the token in the forwarded request; by default Envoy
	// removes it once verified.
	Forward bool
	// PayloadHeader, when set, carries the verified token's payload
	// (base64url JSON) to the upstream.
	PayloadHeader string
	// ClaimHeaders copy claims of the verified token into request headers.
	ClaimHeaders []ClaimHeader
}

// RemoteJWKS is a key set served over HTTP by a Consul service at Path.
type RemoteJWKS struct {
	Pos           Pos
	Service       string
	Path          string
	CacheDuration time.Duration
	Timeout       time.Duration
}

// ClaimHeader copies a token's claim (a top-level one, or nested with
// dots: "user.id") into a request header.
type ClaimHeader struct {
	Claim, Header string
}

// Auth is what a host or route says about its listener's extAuthz and
// jwt; the zero value inherits everything.
type Auth struct {
	// ExtAuthz turns the listener's external authorization off (false) or
	// back on (true, on a route of a host that turned it off); nil:
	// inherit.
	ExtAuthz *bool
	// RequireJWT replaces what is inherited: a valid token of any of these
	// providers; NoJWT (requireJWT: false) requires none.
	RequireJWT []string
	NoJWT      bool
	// ExtAuthzPos and RequireJWTPos are where the fields were given.
	ExtAuthzPos, RequireJWTPos Pos
}

// EffectiveExtAuthz reports whether the listener's external authorization
// checks a route's requests: the route's own setting, else its host's,
// else on whenever the listener has one.
func EffectiveExtAuthz(l *Listener, h *VirtualHost, r *Route) bool {
	if l.ExtAuthz == nil {
		return false
	}
	switch {
	case r.Auth.ExtAuthz != nil:
		return *r.Auth.ExtAuthz
	case h.Auth.ExtAuthz != nil:
		return *h.Auth.ExtAuthz
	}
	return true
}

// EffectiveJWT lists the providers one of whose tokens a route's requests
// need: the route's own requirement, else its host's, else its
// listener's; nil: none.
func EffectiveJWT(l *Listener, h *VirtualHost, r *Route) []string {
	if l.JWT == nil {
		return nil
	}
	for _, a := range []*Auth{&r.Auth, &h.Auth} {
		switch {
		case a.NoJWT:
			return nil
		case a.RequireJWT != nil:
			return a.RequireJWT
		}
	}
	return l.JWT.Require
}

// listenerAuth decodes a listener's extAuthz and jwt; out collects the
// JWKS files read.
func (d *decoder) listenerAuth(m *fields, l *Listener, out *parsed) {
	if n := m.vals["extAuthz"]; n != nil {
		l.ExtAuthz = d.extAuthz(n)
	}
	if n := m.vals["jwt"]; n != nil {
		l.JWT = d.jwt(n, out)
	}
}

func (d *decoder) extAuthz(n *yaml.Node) *ExtAuthz {
	m, ok := d.mapping(n, "extAuthz", "service", "address", "protocol", "timeout", "failureMode", "pathPrefix", "headers", "upstreamHeaders", "clientHeaders")
	if !ok {
		return nil
	}
	a := &ExtAuthz{Pos: d.pos(m.line), Timeout: DefaultExtAuthzTimeout}
	d.oneOf(m, false, "service", "address")
	if v, ok := d.str(m, "service"); ok && d.service(m.lineOf("service"), v) {
		a.Service = v
	}
	if v, ok := d.str(m, "address"); ok {
		if msg := addressProblem(v); msg != "" {
			d.errorf(m.lineOf("address"), "extAuthz address %s: %s", quoteValue(v), msg)
		} else {
			a.Address = v
		}
	}
	if d.require(m, "protocol") {
		if v, ok := d.str(m, "protocol"); ok {
			if v == ExtAuthzGRPC || v == ExtAuthzHTTP {
				a.Protocol = v
			} else {
				d.errorf(m.lineOf("protocol"), "extAuthz protocol %s: want %s or %s", quoteValue(v), ExtAuthzGRPC, ExtAuthzHTTP)
			}
		}
	}
	if t := d.duration(m, "timeout"); t != nil {
		if *t == 0 {
			d.errorf(m.lineOf("timeout"), "extAuthz timeout must be above 0: every request waits for the check")
		} else {
			a.Timeout = *t
		}
	}
	if v, ok := d.str(m, "failureMode"); ok {
		switch v {
		case ExtAuthzAllow:
			a.FailOpen = true
		case ExtAuthzDeny:
		default:
			d.errorf(m.lineOf("failureMode"), "extAuthz failureMode %s: want %s (let requests through when the service fails) or %s (answer them 403)", quoteValue(v), ExtAuthzAllow, ExtAuthzDeny)
		}
	}
	httpOnly := func(key string) bool {
		if m.has(key) && a.Protocol == ExtAuthzGRPC {
			d.errorf(m.lineOf(key), "%s is for protocol: http; a gRPC authorization service says what to add in its answer", key)
			return false
		}
		return m.has(key)
	}
	if httpOnly("pathPrefix") {
		if v, ok := d.str(m, "pathPrefix"); ok {
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " ?#") {
				d.errorf(m.lineOf("pathPrefix"), "extAuthz pathPrefix must start with \"/\" and hold no space, '?' or '#', got %s", quoteValue(v))
			} else {
				a.PathPrefix = v
			}
		}
	}
	a.Headers = d.headerNames(m, "headers")
	if httpOnly("upstreamHeaders") {
		a.UpstreamHeaders = d.headerNames(m, "upstreamHeaders")
	}
	if httpOnly("clientHeaders") {
		a.ClientHeaders = d.headerNames(m, "clientHeaders")
	}
	return a
}

// addressProblem says what is wrong with a host:port address of a
// service outside Consul, or "".
func addressProblem(v string) string {
	host, port, err := net.SplitHostPort(v)
	p, perr := strconv.Atoi(port)
	switch {
	case err != nil || host == "" || perr != nil || p < 1 || p > 65535:
		return "want host:port, such as authz.internal:9001 or 10.0.0.9:9001"
	case net.ParseIP(host) == nil && !validDNSName(host):
		return fmt.Sprintf("%q is neither an IP address nor a DNS name", host)
	}
	return ""
}

// headerNames reads a non-empty list of distinct header names, lowercased.
func (d *decoder) headerNames(m *fields, key string) []string {
	if !m.has(key) {
		return nil
	}
	if m.emptyList(key) {
		d.errorf(m.lineOf(key), "%s must list at least one header, or be omitted", key)
	}
	var out []string
	for _, it := range d.strList(m, key) {
		name := strings.ToLower(it.value)
		switch {
		case !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":"):
			d.errorf(it.line, "%s: invalid header name %s", key, quoteValue(it.value))
		case slices.Contains(out, name):
			d.errorf(it.line, "%s: header %q is listed twice", key, name)
		default:
			out = append(out, name)
		}
	}
	return out
}

// headerName reads one header name that Envoy is to set, lowercased.
func (d *decoder) headerName(m *fields, key string) string {
	v, ok := d.str(m, key)
	if !ok {
		return ""
	}
	name := strings.ToLower(v)
	if !headerNameRE.MatchString(name) || strings.HasPrefix(name, ":") || name == "host" {
		d.errorf(m.lineOf(key), "%s: invalid header name %s (pseudo-headers and host cannot be set)", key, quoteValue(v))
		return ""
	}
	return name
}

func (d *decoder) jwt(n *yaml.Node, out *parsed) *JWT {
	m, ok := d.mapping(n, "jwt", "providers", "require")
	if !ok {
		return nil
	}
	j := &JWT{Pos: d.pos(m.line)}
	if d.require(m, "providers") && m.emptyList("providers") {
		d.errorf(m.lineOf("providers"), "providers must list at least one JWT provider")
	}
	names := map[string]int{}
	for _, pn := range d.list(m, "providers") {
		p, ok := d.jwtProvider(pn, out)
		if !ok || p.Name == "" {
			continue
		}
		if first, dup := names[p.Name]; dup {
			d.errorf(p.Pos.Line, "duplicate JWT provider %q (also at line %d)", p.Name, first)
			continue
		}
		names[p.Name] = p.Pos.Line
		j.Providers = append(j.Providers, p)
	}
	if m.has("require") {
		j.Require, j.RequirePos = d.providerList(m, "require"), d.pos(m.lineOf("require"))
	}
	return j
}

func (d *decoder) jwtProvider(n *yaml.Node, out *parsed) (JWTProvider, bool) {
	m, ok := d.mapping(n, "JWT provider", "name", "issuer", "audiences", "jwks", "jwksFile", "remoteJWKS", "forward", "payloadHeader", "claimHeaders")
	if !ok {
		return JWTProvider{}, false
	}
	p := JWTProvider{Pos: d.pos(m.line), Name: d.name(m, "name", true)}
	if d.require(m, "issuer") {
		if v, ok := d.str(m, "issuer"); ok {
			if v == "" {
				d.errorf(m.lineOf("issuer"), "issuer must not be empty")
			}
			p.Issuer = v
		}
	}
	if m.has("audiences") {
		if m.emptyList("audiences") {
			d.errorf(m.lineOf("audiences"), "audiences must list at least one audience, or be omitted to accept any")
		}
		for _, it := range d.strList(m, "audiences") {
			switch {
			case it.value == "":
				d.errorf(it.line, "audiences: an audience must not be empty")
			case slices.Contains(p.Audiences, it.value):
				d.errorf(it.line, "audiences: %q is listed twice", it.value)
			default:
				p.Audiences = append(p.Audiences, it.value)
			}
		}
	}
	d.oneOf(m, false, "jwks", "jwksFile", "remoteJWKS")
	if v, ok := d.text(m, "jwks"); ok {
		if msg := jwksProblem([]byte(v)); msg != "" {
			d.errorf(m.lineOf("jwks"), "jwks %s", msg)
		} else {
			p.JWKS = v
		}
	}
	if m.has("jwksFile") {
		if path, b, ok := d.readFile(m, "jwksFile", out); ok {
			if msg := jwksProblem(b); msg != "" {
				d.errorf(m.lineOf("jwksFile"), "jwksFile %s %s", path, msg)
			} else {
				p.JWKS, p.JWKSFile = string(b), path
			}
		}
	}
	if rn := m.vals["remoteJWKS"]; rn != nil {
		p.RemoteJWKS = d.remoteJWKS(rn)
	}
	if v, ok := d.boolean(m, "forward"); ok {
		p.Forward = v
	}
	p.PayloadHeader = d.headerName(m, "payloadHeader")
	for _, cn := range d.list(m, "claimHeaders") {
		cm, ok := d.mapping(cn, "claimHeaders entry", "claim", "header")
		if !ok {
			continue
		}
		var c ClaimHeader
		if d.require(cm, "claim") {
			if v, ok := d.str(cm, "claim"); ok {
				if v == "" || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..") {
					d.errorf(cm.lineOf("claim"), "invalid claim %s: want a claim name, nested ones joined by dots (such as sub or user.id)", quoteValue(v))
				}
				c.Claim = v
			}
		}
		if d.require(cm, "header") {
			c.Header = d.headerName(cm, "header")
		}
		p.ClaimHeaders = append(p.ClaimHeaders, c)
	}
	return p, true
}

func (d *decoder) remoteJWKS(n *yaml.Node) *RemoteJWKS {
	m, ok := d.mapping(n, "remoteJWKS", "service", "path", "cacheDuration", "timeout")
	if !ok {
		return nil
	}
	r := &RemoteJWKS{Pos: d.pos(m.line), CacheDuration: DefaultJWKSCacheDuration, Timeout: DefaultJWKSTimeout}
	if d.require(m, "service") {
		if v, ok := d.str(m, "service"); ok && d.service(m.lineOf("service"), v) {
			r.Service = v
		}
	}
	if d.require(m, "path") {
		if v, ok := d.str(m, "path"); ok {
			if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " #") {
				d.errorf(m.lineOf("path"), "remoteJWKS path must start with \"/\" and hold no space or '#', got %s", quoteValue(v))
			} else {
				r.Path = v
			}
		}
	}
	for _, key := range []string{"cacheDuration", "timeout"} {
		if t := d.duration(m, key); t != nil {
			if *t == 0 {
				d.errorf(m.lineOf(key), "remoteJWKS %s must be above 0", key)
			} else if key == "timeout" {
				r.Timeout = *t
			} else {
				r.CacheDuration = *t
			}
		}
	}
	return r
}

// jwksKeyTypes are the JWK key types Envoy verifies tokens with.
var jwksKeyTypes = []string{"RSA", "EC", "OKP", "oct"}

// jwkPrivateMembers are the JWK members that hold private or secret key
// material (RFC 7518 section 6): "d", the private part of RSA, EC and OKP
// keys; the RSA private key's factors and CRT values ("p", "q", "dp",
// "dq", "qi", "oth"), any of which gives the key away; and "k", a
// symmetric key. A key with any of them is refused, even without "d".
var jwkPrivateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// jwksProblem says what is wrong with a JSON Web Key Set, or "". Envoy
// would take a broken set and reject every token; and a set is sent to
// every Envoy of the group and shown by translate, so it must hold public
// keys only. No message shows a key.
func jwksProblem(b []byte) string {
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return "is not a JSON Web Key Set: invalid JSON (the content is not shown)"
	}
	if len(set.Keys) == 0 {
		return `holds no keys: want a JSON Web Key Set, {"keys": [...]}`
	}
	for i, k := range set.Keys {
		kty, _ := k["kty"].(string)
		if !slices.Contains(jwksKeyTypes, kty) {
			return fmt.Sprintf("key %d: kty must be one of %s", i+1, strings.Join(jwksKeyTypes, ", "))
		}
		if kty == "oct" || slices.ContainsFunc(jwkPrivateMembers, func(m string) bool { _, ok := k[m]; return ok }) {
			return fmt.Sprintf("key %d is a private or symmetric key (it is not shown); give public keys only: the key set is sent to every Envoy of the group and shown by translate", i+1)
		}
	}
	return ""
}

// providerList reads a non-empty list of distinct JWT provider names.
func (d *decoder) providerList(m *fields, key string) []string {
	if m.emptyList(key) {
		d.errorf(m.lineOf(key), "%s must list at least one JWT provider", key)
	}
	var names []string
	for _, it := range d.strList(m, key) {
		switch {
		case !d.checkName(it.line, "JWT provider name", it.value):
		case slices.Contains(names, it.value):
			d.errorf(it.line, "%s: JWT provider %q is listed twice", key, it.value)
		default:
			names = append(names, it.value)
		}
	}
	return names
}

// auth decodes the extAuthz and requireJWT fields of a host or route.
func (d *decoder) auth(m *fields) Auth {
	var a Auth
	if v, ok := d.boolean(m, "extAuthz"); ok {
		a.ExtAuthz, a.ExtAuthzPos = &v, d.pos(m.lineOf("extAuthz"))
	}
	n := m.vals["requireJWT"]
	if n == nil {
		return a
	}
	a.RequireJWTPos = d.pos(n.Line)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		if n.Value != "false" {
			d.errorf(n.Line, "requireJWT lists the JWT providers whose tokens are accepted, or is false to require none; true names none")
		}
		a.NoJWT = true
		return a
	}
	a.RequireJWT = d.providerList(m, "requireJWT")
	if a.RequireJWT == nil {
		a.RequireJWT = []string{} // given, though wrong: not inherited
	}
	return a
}

// inheritAuth gives each listener without its own extAuthz or jwt its
// group's (in group), then checks what each listener's hosts and routes
// say about them.
func (d *decoder) inheritAuth(group *Listener, listeners []Listener) {
	groupUsed := map[string]bool{}
	var extUsed, jwtUsed bool
	for i := range listeners {
		l := &listeners[i]
		if l.ExtAuthz == nil && group.ExtAuthz != nil {
			l.ExtAuthz, extUsed = group.ExtAuthz, true
		}
		inherited := l.JWT == nil && group.JWT != nil
		if inherited {
			l.JWT, jwtUsed = group.JWT, true
		}
		used := d.checkAuth(l)
		if l.JWT == nil {
			continue
		}
		if !inherited {
			d.warnUnused(l.JWT, used, fmt.Sprintf("listener %q, nor by its hosts or routes", l.Name))
			continue
		}
		for name := range used {
			groupUsed[name] = true
		}
	}
	if group.ExtAuthz != nil && !extUsed {
		d.warnf(group.ExtAuthz.Pos.Line, "the proxy group's extAuthz has no effect: every listener has its own")
	}
	switch {
	case group.JWT != nil && !jwtUsed:
		d.warnf(group.JWT.Pos.Line, "the proxy group's jwt has no effect: every listener has its own")
	case group.JWT != nil:
		d.warnUnused(group.JWT, groupUsed, "any listener using the proxy group's jwt, nor by their hosts or routes")
	}
}

// checkAuth checks what a listener's hosts and routes say about its
// extAuthz and jwt against what it has, and returns the JWT providers
// named.
func (d *decoder) checkAuth(l *Listener) map[string]bool {
	providers := map[string]bool{}
	used := map[string]bool{}
	if l.JWT != nil {
		for _, p := range l.JWT.Providers {
			providers[p.Name] = true
		}
	}
	known := func(names []string, pos Pos) {
		for _, name := range names {
			used[name] = true
			switch {
			case l.JWT == nil:
				d.errorf(pos.Line, "requireJWT names JWT provider %q, but listener %q has no jwt providers", name, l.Name)
			case !providers[name] && len(l.JWT.Providers) > 0:
				d.errorf(pos.Line, "unknown JWT provider %q; listener %q has %s", name, l.Name, strings.Join(providerNames(l.JWT), ", "))
			}
		}
	}
	check := func(a *Auth) {
		if a.ExtAuthz != nil && l.ExtAuthz == nil {
			d.warnf(a.ExtAuthzPos.Line, "extAuthz has no effect: listener %q has no extAuthz", l.Name)
		}
		if a.NoJWT && l.JWT == nil {
			d.warnf(a.RequireJWTPos.Line, "requireJWT: false has no effect: listener %q has no jwt", l.Name)
		}
		known(a.RequireJWT, a.RequireJWTPos)
	}
	if l.JWT != nil {
		known(l.JWT.Require, l.JWT.RequirePos)
	}
	for i := range l.Hosts {
		h := &l.Hosts[i]
		check(&h.Auth)
		for j := range h.Routes {
			check(&h.Routes[j].Auth)
		}
	}
	return used
}

// warnUnused warns about each provider of j that nothing requires; where
// says where it was looked for.
func (d *decoder) warnUnused(j *JWT, used map[string]bool, where string) {
	for _, p := range j.Providers {
		if !used[p.Name] {
			d.warnf(p.Pos.Line, "JWT provider %q is not required by %s (jwt.require, requireJWT); it checks nothing", p.Name, where)
		}
	}
}

func providerNames(j *JWT) []string {
	out := make([]string, len(j.Providers))
	for i, p := range j.Providers {
		out[i] = p.Name
	}
	return out
}

package policy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-io/switchyard/internal/safefile"
)

// parsed collects what the documents of every file declare, for the checks
// that span documents (duplicate names, certificate references).
type parsed struct {
	groups   []ProxyGroup
	certs    []Certificate
	services []Service
	meshes   []Mesh    // more than one is an error
	refs     []certRef // certificates named by listeners
	files    []string  // certificate, key and CA files read
}

type certRef struct {
	name string
	pos  Pos
}

// document decodes one YAML document.
func (d *decoder) document(doc *yaml.Node, out *parsed) {
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return
		}
		doc = doc.Content[0]
	}
	n := resolve(doc)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // an empty document, e.g. a trailing "---"
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "a policy document must be a mapping, got %s", describe(n))
		return
	}
	// The fields a document allows depend on its kind, so apiVersion and
	// kind are read before the strict walk.
	kinds := []string{KindCertificate, KindMesh, KindProxyGroup, KindService}
	api, kind := lookup(n, "apiVersion"), lookup(n, "kind")
	ok := true
	switch {
	case api == nil:
		d.errorf(n.Line, "missing apiVersion; want apiVersion: %s", APIVersion)
		ok = false
	case !isString(api):
		d.errorf(api.Line, "apiVersion must be a string, got %s", describe(api))
		ok = false
	case api.Value != APIVersion:
		d.errorf(api.Line, "unsupported apiVersion %q; supported: %s", api.Value, APIVersion)
		ok = false
	}
	switch {
	case kind == nil:
		d.errorf(n.Line, "missing kind; supported kinds: %s", strings.Join(kinds, ", "))
		ok = false
	case !isString(kind):
		d.errorf(kind.Line, "kind must be a string, got %s", describe(kind))
		ok = false
	case !contains(kinds, kind.Value):
		d.errorf(kind.Line, "unknown kind %q; supported kinds: %s", kind.Value, strings.Join(kinds, ", "))
		ok = false
	}
	if !ok {
		return
	}
	switch kind.Value {
	case KindProxyGroup:
		m, _ := d.mapping(n, KindProxyGroup, "apiVersion", "kind", "name", "mesh", "accessLog", "tracing", "extAuthz", "jwt", "rateLimitService", "listeners")
		d.proxyGroup(m, out)
	case KindCertificate:
		m, _ := d.mapping(n, KindCertificate, "apiVersion", "kind", "name", "certFile", "keyFile", "caFile")
		d.certificate(m, out)
	case KindService:
		m, _ := d.mapping(n, KindService, serviceFields...)
		d.serviceDoc(m, out)
	case KindMesh:
		m, _ := d.mapping(n, KindMesh, meshFields...)
		d.meshDoc(m, out)
	}
}

// lookup returns the non-null value of key in mapping n, or nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolve(n.Content[i]); k.Kind == yaml.ScalarNode && k.Value == key {
			v := resolve(n.Content[i+1])
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				return nil
			}
			return v
		}
	}
	return nil
}

// serviceDoc decodes a Service document: settings for traffic to one
// Consul service.
func (d *decoder) serviceDoc(m *fields, out *parsed) {
	sv := Service{Pos: d.pos(m.lineOf("name"))}
	if d.require(m, "name") {
		if v, ok := d.str(m, "name"); ok && d.service(m.lineOf("name"), v) {
			sv.Name = v
		}
	}
	if v, ok := d.str(m, "protocol"); ok {
		if contains(Protocols(), v) {
			sv.Protocol = v
		} else {
			d.errorf(m.lineOf("protocol"), "unknown protocol %s; supported: %s", quoteValue(v), strings.Join(Protocols(), ", "))
		}
	}
	if mn := m.vals["mesh"]; mn != nil {
		sv.Mesh = d.meshPolicy(mn)
	}
	d.upstream(m, &sv)
	if sv.Name != "" {
		out.services = append(out.services, sv)
	}
}

// meshPolicy decodes a Service's mesh block.
func (d *decoder) meshPolicy(n *yaml.Node) *MeshPolicy {
	m, ok := d.mapping(n, "mesh", "timeout", "retries", "split")
	if !ok {
		return nil
	}
	mp := &MeshPolicy{Pos: d.pos(m.line), Timeout: d.duration(m, "timeout")}
	if rn := m.vals["retries"]; rn != nil {
		mp.Retries = d.retries(rn, mp.Timeout)
	}
	if m.has("split") {
		mp.Split = d.split(m, false)
	}
	return mp
}

func (d *decoder) proxyGroup(m *fields, out *parsed) {
	g := ProxyGroup{Pos: d.pos(m.lineOf("name")), Name: d.name(m, "name", true)}
	if mn := m.vals["mesh"]; mn != nil {
		g.Mesh = d.groupMesh(mn, m.keyLine("mesh"))
	}
	if an := m.vals["accessLog"]; an != nil {
		g.AccessLog = d.accessLog(an)
	}
	if tn := m.vals["tracing"]; tn != nil {
		g.Tracing = d.tracing(tn, g.Name)
	}
	if rn := m.vals["rateLimitService"]; rn != nil {
		g.RateLimitService = d.rateLimitService(rn)
	}
	var auth Listener // the extAuthz and jwt of listeners without their own
	d.listenerAuth(m, &auth, out)
	items := d.list(m, "listeners")
	for _, n := range items {
		if l, ok := d.listener(n, out); ok {
			g.Listeners = append(g.Listeners, l)
		}
	}
	d.inheritAuth(&auth, g.Listeners)
	if !m.has("listeners") || m.emptyList("listeners") {
		d.warnf(g.Pos.Line, "proxy group has no listeners")
	}
	d.checkGlobalRateLimits(&g)
	if g.Mesh != nil && !g.UsesMesh() {
		d.warnf(g.Mesh.Pos.Line, "proxy group has a mesh identity but no route uses the mesh (mesh: true); it has no effect")
	}

	names := make(map[string]Pos)
	addrs := make(map[netip.AddrPort]Pos)
	for _, l := range g.Listeners {
		if l.Name != "" {
			if prev, dup := names[l.Name]; dup {
				d.errorf(l.Pos.Line, "duplicate listener name %q (also defined at %s)", l.Name, prev)
			} else {
				names[l.Name] = l.Pos
			}
		}
		if l.Address != "" && l.Port != 0 {
			ap := netip.AddrPortFrom(netip.MustParseAddr(l.Address), uint16(l.Port))
			if prev, dup := addrs[ap]; dup {
				d.errorf(l.Pos.Line, "address %s is already used by the listener at %s", ap, prev)
			} else {
				addrs[ap] = l.Pos
			}
		}
	}
	if g.Name != "" {
		out.groups = append(out.groups, g)
	}
}

// groupMesh decodes a proxy group's mesh block, given at line (its
// `mesh:` key): its identity in the Connect mesh. It needs the mesh
// (serve --mesh), which provides the identity's certificate.
func (d *decoder) groupMesh(n *yaml.Node, line int) *GroupMesh {
	m, ok := d.mapping(n, "proxy group mesh", "service")
	if !ok {
		return nil
	}
	gm := &GroupMesh{Pos: d.pos(line)}
	if v, ok := d.str(m, "service"); ok && d.service(m.lineOf("service"), v) {
		gm.Service = v
	}
	d.needMesh(line, "a proxy group's mesh identity")
	return gm
}

// tracing decodes a proxy group's tracing block.
func (d *decoder) tracing(n *yaml.Node, group string) *Tracing {
	m, ok := d.mapping(n, "tracing", "address", "sampling", "serviceName")
	if !ok {
		return nil
	}
	tr := &Tracing{Pos: d.pos(m.line), Sampling: 100, ServiceName: group}
	if !m.has("address") {
		d.errorf(m.line, "missing required field \"address\" in tracing")
	} else if v, ok := d.str(m, "address"); ok {
		host, port, err := net.SplitHostPort(v)
		p, perr := strconv.Atoi(port)
		switch {
		case err != nil || host == "" || perr != nil || p < 1 || p > 65535:
			d.errorf(m.lineOf("address"), "tracing address %q: want host:port, such as otel-collector.service.consul:4317 or 10.0.0.9:4317", v)
		case net.ParseIP(host) == nil && !validDNSName(host):
			d.errorf(m.lineOf("address"), "tracing address %q: %q is neither an IP address nor a DNS name", v, host)
		default:
			tr.Address = v
		}
	}
	if v, ok := d.integer(m, "sampling", 0, 100); ok {
		tr.Sampling = int(v)
	}
	if v, ok := d.str(m, "serviceName"); ok {
		if v == "" {
			d.errorf(m.lineOf("serviceName"), "tracing serviceName must not be empty")
		} else {
			tr.ServiceName = v
		}
	}
	return tr
}

// validDNSName reports whether s is a DNS name: dot-separated labels of
// letters, digits and '-', not starting or ending with '-'.
func validDNSName(s string) bool {
	if len(s) > 253 || s == "" {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// accessLog decodes a proxy group's accessLog block.
func (d *decoder) accessLog(n *yaml.Node) *AccessLog {
	m, ok := d.mapping(n, "accessLog", "enabled", "path", "format")
	if !ok {
		return nil
	}
	a := &AccessLog{Pos: d.pos(m.line)}
	if v, ok := d.boolean(m, "enabled"); ok && !v {
		a.Off = true
		if m.has("path") || m.has("format") {
			d.warnf(m.line, "accessLog is disabled (enabled: false); its path and format have no effect")
		}
	}
	if v, ok := d.str(m, "path"); ok {
		switch {
		case v == AccessLogStdout || v == AccessLogStderr:
			a.Path = v
		case !filepath.IsAbs(v) || filepath.Clean(v) != v:
			d.errorf(m.lineOf("path"), "accessLog path %q: want %s, %s or an absolute, clean file path (such as /var/log/envoy/access.log)", v, AccessLogStdout, AccessLogStderr)
		default:
			a.Path = v
		}
	}
	if v, ok := d.str(m, "format"); ok {
		if v != AccessLogJSON && v != AccessLogText {
			d.errorf(m.lineOf("format"), "accessLog format %q: want %s or %s", v, AccessLogJSON, AccessLogText)
		} else {
			a.Format = v
		}
	}
	return a
}

// needMesh reports an error when the mesh is off: what needs the mesh
// must fail validate as it would fail serve.
func (d *decoder) needMesh(line int, what string) {
	if d.meshOff {
		d.errorf(line, "%s needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it", what)
	}
}

func (d *decoder) listener(n *yaml.Node, out *parsed) (Listener, bool) {
	m, ok := d.mapping(n, "listener", "name", "address", "port", "tls", "websocket", "httpsRedirect", "requestLimits", "ipAccess", "xffTrustedHops", "rateLimitResponse", "extAuthz", "jwt", "hosts")
	if !ok {
		return Listener{}, false
	}
	l := Listener{Pos: d.pos(m.line), Name: d.name(m, "name", true), Address: DefaultAddress}
	if v, ok := d.str(m, "address"); ok {
		// Stored in canonical form so "::0" and "::" are one address.
		addr, err := netip.ParseAddr(v)
		if err != nil || addr.Zone() != "" {
			d.errorf(m.lineOf("address"), "invalid address %q: want an IP address such as 0.0.0.0 or ::", v)
			l.Address = ""
		} else {
			l.Address = addr.String()
		}
	}
	if d.require(m, "port") {
		if p, ok := d.integer(m, "port", 1, 65535); ok {
			l.Port = uint32(p)
		}
	}
	if tn := m.vals["tls"]; tn != nil {
		l.TLS = d.listenerTLS(tn, out)
	}
	if v, ok := d.boolean(m, "websocket"); ok {
		l.WebSocket = v
	}
	if v, ok := d.boolean(m, "httpsRedirect"); ok {
		l.HTTPSRedirect = v
		if v && l.TLS != nil {
			d.warnf(m.lineOf("httpsRedirect"), "httpsRedirect has no effect on a listener that terminates TLS: its requests already use HTTPS")
		}
	}
	if rn := m.vals["requestLimits"]; rn != nil {
		l.RequestLimits = d.requestLimits(rn, &l)
	}
	if an := m.vals["ipAccess"]; an != nil {
		l.IPAccess = d.ipAccess(an)
	}
	if v, ok := d.integer(m, "xffTrustedHops", 0, MaxXFFTrustedHops); ok {
		l.XFFTrustedHops = uint32(v)
	}
	if rn := m.vals["rateLimitResponse"]; rn != nil {
		l.RateLimitResponse = d.rateLimitResponse(rn)
	}
	d.listenerAuth(m, &l, out)

	items := d.list(m, "hosts")
	domains := make(map[string]Pos) // lowercased: Envoy compares domains case-insensitively
	for _, n := range items {
		h, hostDomains, ok := d.host(n, &l)
		if !ok {
			continue
		}
		for _, dom := range hostDomains {
			key := strings.ToLower(dom.value)
			if prev, dup := domains[key]; dup {
				d.errorf(dom.line, "duplicate domain %q in this listener (also at %s); Envoy requires domains to be unique per listener", dom.value, prev)
			} else {
				domains[key] = d.pos(dom.line)
			}
		}
		l.Hosts = append(l.Hosts, h)
	}
	if (!m.has("hosts") || m.emptyList("hosts")) && !l.HTTPSRedirect {
		d.warnf(m.line, "listener has no hosts; Envoy will answer every request with 404")
	}
	d.rateLimitResponseUsed(&l)
	return l, true
}

func (d *decoder) listenerTLS(n *yaml.Node, out *parsed) *ListenerTLS {
	m, ok := d.mapping(n, "listener tls", "certificates")
	if !ok {
		return nil
	}
	t := &ListenerTLS{Pos: d.pos(m.line)}
	if !d.require(m, "certificates") {
		return t
	}
	items := d.strList(m, "certificates")
	if m.emptyList("certificates") {
		d.errorf(m.lineOf("certificates"), "certificates must list at least one certificate")
	}
	seen := make(map[string]int)
	for _, it := range items {
		if !d.checkName(it.line, "certificate name", it.value) {
			continue
		}
		if first, dup := seen[it.value]; dup {
			d.errorf(it.line, "certificate %q is listed twice (first at line %d)", it.value, first)
			continue
		}
		seen[it.value] = it.line
		t.Certificates = append(t.Certificates, it.value)
		out.refs = append(out.refs, certRef{it.value, d.pos(it.line)})
	}
	return t
}

// host returns the virtual host and its domains with their lines; l is
// its listener, decoded up to its hosts.
func (d *decoder) host(n *yaml.Node, l *Listener) (VirtualHost, []item, bool) {
	m, ok := d.mapping(n, "host", "domains", "httpsRedirect", "requestHeaders", "responseHeaders", "cors", "ipAccess", "extAuthz", "requireJWT", "globalRateLimit", "routes")
	if !ok {
		return VirtualHost{}, nil, false
	}
	h := VirtualHost{Pos: d.pos(m.line)}
	var domains []item
	if d.require(m, "domains") {
		items := d.strList(m, "domains")
		if m.emptyList("domains") {
			d.errorf(m.lineOf("domains"), "domains must list at least one domain; use \"*\" for any")
		}
		for _, it := range items {
			if msg := domainProblem(it.value); msg != "" {
				d.errorf(it.line, "invalid domain %q: %s", it.value, msg)
				continue
			}
			h.Domains = append(h.Domains, it.value)
			domains = append(domains, it)
		}
	}

	if v, ok := d.boolean(m, "httpsRedirect"); ok {
		h.HTTPSRedirect = v
		if v && l.TLS != nil {
			d.warnf(m.lineOf("httpsRedirect"), "httpsRedirect has no effect on a listener that terminates TLS: its requests already use HTTPS")
		}
	}
	if hn := m.vals["requestHeaders"]; hn != nil {
		h.RequestHeaders = d.headers(hn, "requestHeaders")
	}
	if hn := m.vals["responseHeaders"]; hn != nil {
		h.ResponseHeaders = d.headers(hn, "responseHeaders")
	}
	if cn := m.vals["cors"]; cn != nil {
		h.CORS = d.cors(cn)
	}
	if an := m.vals["ipAccess"]; an != nil {
		h.IPAccess = d.ipAccess(an)
	}
	if gn := m.vals["globalRateLimit"]; gn != nil {
		h.GlobalRateLimits = d.globalRateLimits(gn)
	}
	h.Auth = d.auth(m)
	redirected := (h.HTTPSRedirect || l.HTTPSRedirect) && l.TLS == nil
	if redirected && m.has("routes") && !m.emptyList("routes") {
		d.warnf(m.lineOf("routes"), "host redirects every request to HTTPS (httpsRedirect on the host or its listener), and its listener does not terminate TLS, so its routes are never used")
	}

	items := d.list(m, "routes")
	var matchOK []bool
	for i, n := range items {
		if r, mok, ok := d.route(n, i); ok {
			h.Routes = append(h.Routes, r)
			matchOK = append(matchOK, mok)
		}
	}
	if (!m.has("routes") || m.emptyList("routes")) && !redirected {
		d.warnf(m.line, "host has no routes; Envoy will answer its requests with 404")
	}

	names := make(map[string]Pos)
	var earlier shadowIndex
	for i, r := range h.Routes {
		if prev, dup := names[r.Name]; dup && r.Name != "" {
			d.errorf(r.Pos.Line, "duplicate route name %q (also defined at %s)", r.Name, prev)
		} else {
			names[r.Name] = r.Pos
		}
		if !matchOK[i] {
			continue
		}
		if j, ok := earlier.first(r.Match); ok {
			d.warnf(r.Pos.Line, "route is unreachable: the route at %s matches all its requests first", h.Routes[j].Pos)
		}
		earlier.add(i, r.Match)
	}
	return h, domains, true
}

// shadowIndex finds the first earlier route that shadows a route (see
// shadows) without comparing every pair: a host of 80,000 routes took 23 s
// that way. Only routes without header or regex matches can shadow, and
// they do so by exact path or by prefix, so those are kept in maps, with
// the lengths of the prefixes, and a route looks up its own path's
// prefixes of those lengths.
type shadowIndex struct {
	exact   map[string]int // exact path -> the first route matching it
	prefix  map[string]int // path prefix -> the first route matching it
	lengths []int          // of the keys of prefix, sorted
}

// add records route i, which comes after every route added before.
func (x *shadowIndex) add(i int, m Match) {
	if m.narrowed() || m.PathRegex != "" || m.CaseInsensitive {
		return
	}
	if x.exact == nil {
		x.exact, x.prefix = make(map[string]int), make(map[string]int)
	}
	switch {
	case m.PathPrefix != "":
		if _, ok := x.prefix[m.PathPrefix]; !ok {
			x.prefix[m.PathPrefix] = i
			if at, found := slices.BinarySearch(x.lengths, len(m.PathPrefix)); !found {
				x.lengths = slices.Insert(x.lengths, at, len(m.PathPrefix))
			}
		}
	case m.Path != "":
		if _, ok := x.exact[m.Path]; !ok {
			x.exact[m.Path] = i
		}
	}
}

// first returns the first added route that shadows a route with match m.
func (x *shadowIndex) first(m Match) (int, bool) {
	if m.CaseInsensitive {
		return -1, false // its other spellings may reach it
	}
	best := -1
	consider := func(table map[string]int, key string) {
		if j, ok := table[key]; ok && (best < 0 || j < best) {
			best = j
		}
	}
	consider(x.prefix, "/") // every path starts with "/"
	path := m.PathPrefix
	if path == "" && m.Path != "" {
		path = m.Path
		consider(x.exact, path)
	}
	for _, n := range x.lengths {
		if n > len(path) {
			break
		}
		consider(x.prefix, path[:n])
	}
	return best, best >= 0
}

// domainProblem says what is wrong with a virtual host domain, or "".
// Envoy allows "*" alone, or one "*" as the first or last character.
func domainProblem(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case strings.ContainsAny(s, " \t/"):
		return "must be a host name, optionally with a port"
	case s == "*":
		return ""
	case strings.Count(s, "*") > 1 || (strings.Contains(s, "*") && !strings.HasPrefix(s, "*") && !strings.HasSuffix(s, "*")):
		return `a wildcard "*" may only be the first or the last character`
	}
	return ""
}

// shadows reports whether every request matching b also matches a, so a
// route with match b placed after a is never used. It only recognises the
// plain cases: a matches by path alone and its path covers b's, and
// neither ignores case.
func shadows(a, b Match) bool {
	if a.narrowed() || a.PathRegex != "" || a.CaseInsensitive || b.CaseInsensitive {
		return false
	}
	if a.PathPrefix != "" {
		if a.PathPrefix == "/" {
			return true // every path starts with "/"
		}
		return (b.PathPrefix != "" && strings.HasPrefix(b.PathPrefix, a.PathPrefix)) ||
			(b.Path != "" && strings.HasPrefix(b.Path, a.PathPrefix))
	}
	return a.Path != "" && a.Path == b.Path
}

// route decodes one route; matchOK is false when its match has errors, so
// that the unreachable-route warning does not build on a wrong match.
func (d *decoder) route(n *yaml.Node, index int) (r Route, matchOK, ok bool) {
	m, ok := d.mapping(n, "route", "name", "match", "service", "tags", "meta", "split", "redirect", "directResponse", "rewrite", "requestHeaders", "responseHeaders", "cors", "mirror", "fault", "timeout", "retries", "rateLimit", "globalRateLimit", "ipAccess", "extAuthz", "requireJWT", "websocket", "mesh")
	if !ok {
		return Route{}, false, false
	}
	r = Route{Pos: d.pos(m.line), Name: strconv.Itoa(index)}
	if m.has("name") {
		r.Name = d.name(m, "name", false)
	}
	r.Match, matchOK = Match{PathPrefix: DefaultPathPrefix}, true
	if mn := m.vals["match"]; mn != nil {
		r.Match, matchOK = d.match(mn)
	}
	// Every action is checked even when several are given, so that every
	// mistake is reported at once.
	d.oneOf(m, false, routeActions...)
	if v, ok := d.str(m, "service"); ok && d.service(m.lineOf("service"), v) {
		r.Service = v
	}
	r.Subset = d.subset(m)
	d.subsetNeedsService(m, &r.Subset)
	if m.has("split") {
		r.Split = d.split(m, true)
	}
	if rn := m.vals["redirect"]; rn != nil {
		r.Redirect = d.redirect(rn, r.Match, matchOK)
		d.notForwarded(m, "redirect")
	}
	if rn := m.vals["directResponse"]; rn != nil {
		r.DirectResponse = d.directResponse(rn)
		d.notForwarded(m, "directResponse")
	}
	if rn := m.vals["rewrite"]; rn != nil && !m.has("redirect") && !m.has("directResponse") {
		r.Rewrite = d.rewrite(rn, r.Match, matchOK)
	}
	if hn := m.vals["requestHeaders"]; hn != nil && !m.has("redirect") && !m.has("directResponse") {
		r.RequestHeaders = d.headers(hn, "requestHeaders")
	}
	if hn := m.vals["responseHeaders"]; hn != nil {
		r.ResponseHeaders = d.headers(hn, "responseHeaders")
	}
	if cn := m.vals["cors"]; cn != nil {
		r.CORS = d.cors(cn)
	}
	if fn := m.vals["fault"]; fn != nil && !m.has("redirect") && !m.has("directResponse") {
		r.Fault = d.fault(fn)
	}
	if m.has("mirror") && !m.has("redirect") && !m.has("directResponse") {
		r.Mirror = d.mirrors(m, r.Service)
		if m.has("mesh") {
			d.errorf(m.lineOf("mirror"), "mirror cannot be used with mesh yet: mirrored requests would not go through the mesh")
		}
	}
	r.Timeout = d.duration(m, "timeout")
	if rn := m.vals["retries"]; rn != nil {
		r.Retries = d.retries(rn, r.Timeout)
	}
	if rn := m.vals["rateLimit"]; rn != nil {
		r.RateLimit = d.rateLimit(rn)
	}
	if gn := m.vals["globalRateLimit"]; gn != nil && !m.has("redirect") && !m.has("directResponse") {
		r.GlobalRateLimits = d.globalRateLimits(gn)
	}
	if an := m.vals["ipAccess"]; an != nil {
		r.IPAccess = d.ipAccess(an)
	}
	r.Auth = d.auth(m)
	if v, ok := d.boolean(m, "websocket"); ok {
		r.WebSocket = v
	}
	if v, ok := d.boolean(m, "mesh"); ok && v {
		r.Mesh = true
		d.needMesh(m.lineOf("mesh"), "a route through the mesh (mesh: true)")
		if r.HasSubsets() {
			d.errorf(m.lineOf("mesh"), "a route through the mesh reaches its services' sidecars, which cannot be chosen by tags or meta; drop mesh: true or the subsets")
		}
		if r.Rewrite != nil && r.Rewrite.HostFromUpstream {
			d.errorf(m.lineOf("mesh"), "a route through the mesh reaches its services' sidecars, whose addresses are no Host for the service; drop mesh: true or rewrite.hostFromUpstream")
		}
	}
	return r, matchOK, true
}

func (d *decoder) match(n *yaml.Node) (Match, bool) {
	mt := Match{PathPrefix: DefaultPathPrefix}
	m, ok := d.mapping(n, "route match", "pathPrefix", "path", "pathRegex", "caseInsensitive", "methods", "headers", "queryParams")
	if !ok {
		return mt, false
	}
	before := len(*d.diags)
	if d.oneOf(m, true, "pathPrefix", "path", "pathRegex") != "" {
		mt.PathPrefix = ""
	}
	for _, key := range []string{"pathPrefix", "path"} {
		v, ok := d.str(m, key)
		switch {
		case !ok:
		case !strings.HasPrefix(v, "/"):
			d.errorf(m.lineOf(key), "%s must start with \"/\", got %q", key, v)
		case unnormalized(v, key == "path") != "":
			d.errorf(m.lineOf(key), "%s %s can never match: Envoy normalizes request paths before routing (see Path normalization in docs/policy.md), so no request path %s; write the path as it is after normalization",
				key, quoteValue(v), unnormalized(v, key == "path"))
		case key == "path":
			mt.Path = v
		default:
			mt.PathPrefix = v
		}
	}
	if v, ok := d.str(m, "pathRegex"); ok && d.regex(m.lineOf("pathRegex"), "pathRegex", v) {
		mt.PathRegex = v
	}
	if v, ok := d.boolean(m, "caseInsensitive"); ok && v {
		if m.has("pathRegex") {
			d.errorf(m.lineOf("caseInsensitive"), "caseInsensitive applies to pathPrefix and path; for pathRegex, start the regex with (?i)")
		} else {
			mt.CaseInsensitive = true
		}
	}
	mt.Methods = d.methods(m)
	for _, hn := range d.list(m, "headers") {
		if h, ok := d.header(hn); ok {
			mt.Headers = append(mt.Headers, h)
		}
	}
	for _, qn := range d.list(m, "queryParams") {
		if q, ok := d.queryParam(qn); ok {
			mt.QueryParams = append(mt.QueryParams, q)
		}
	}
	return mt, len(*d.diags) == before
}

// unnormalized says why a path match can never match a normalized request
// path, or "". Envoy merges slashes, resolves dot segments, decodes
// %-escaped unreserved characters and redirects escaped slashes before
// routing (envoy/listener.go), so a route written with any of them would
// silently never be taken, nor its rate limit applied. exact: a whole path,
// whose last segment may not be "." or ".." either (a prefix may end in
// "/." to match "/.well-known").
func unnormalized(v string, exact bool) string {
	switch {
	case strings.Contains(v, "//"):
		return `holds "//"`
	case strings.Contains(v, "/./") || strings.Contains(v, "/../"):
		return "holds a . or .. segment"
	case exact && (strings.HasSuffix(v, "/.") || strings.HasSuffix(v, "/..")):
		return "ends in a . or .. segment"
	}
	for i := 0; i+2 < len(v); i++ {
		if v[i] != '%' || !isHex(v[i+1]) || !isHex(v[i+2]) {
			continue
		}
		c := unhex(v[i+1])<<4 | unhex(v[i+2])
		if c == '/' || c == '\\' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			return "holds " + v[i:i+3] + ", which is decoded (or, for a slash, redirected)"
		}
	}
	return ""
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func (d *decoder) header(n *yaml.Node) (HeaderMatch, bool) {
	m, ok := d.mapping(n, "header match", "name", "exact", "prefix", "suffix", "contains", "regex", "present", "absent", "invert")
	if !ok {
		return HeaderMatch{}, false
	}
	h := HeaderMatch{Pos: d.pos(m.line)}
	if d.require(m, "name") {
		if v, ok := d.str(m, "name"); ok {
			if headerNameRE.MatchString(v) {
				h.Name = v
			} else {
				d.errorf(m.lineOf("name"), "invalid header name %q", v)
			}
		}
	}
	d.oneOf(m, false, "exact", "prefix", "suffix", "contains", "regex", "present", "absent")
	for _, key := range []string{"exact", "prefix", "suffix", "contains", "regex"} {
		v, ok := d.str(m, key)
		switch {
		case !ok:
		case v == "":
			d.errorf(m.lineOf(key), "%s must not be empty", key)
		case key == "exact":
			h.Exact = v
		case key == "prefix":
			h.Prefix = v
		case key == "suffix":
			h.Suffix = v
		case key == "contains":
			h.Contains = v
		case d.regex(m.lineOf(key), key, v):
			h.Regex = v
		}
	}
	if v, ok := d.boolean(m, "present"); ok {
		if !v {
			d.errorf(m.lineOf("present"), "present must be true; use absent: true to match requests without the header")
		}
		h.Present = v
	}
	if v, ok := d.boolean(m, "absent"); ok {
		if !v {
			d.errorf(m.lineOf("absent"), "absent must be true; use present: true to match requests with the header")
		}
		h.Absent = v
	}
	if v, ok := d.boolean(m, "invert"); ok && v {
		if m.has("present") || m.has("absent") {
			d.errorf(m.lineOf("invert"), "invert cannot be used with present or absent; use the other one")
		}
		h.Invert = true
	}
	return h, true
}

// split decodes a split; withSubsets allows tags and meta on its entries.
func (d *decoder) split(m *fields, withSubsets bool) []WeightedService {
	items := d.list(m, "split")
	if m.emptyList("split") {
		d.errorf(m.lineOf("split"), "split must list at least one service")
		return nil
	}
	var (
		out       []WeightedService
		sum       uint64
		weightsOK = true
		services  = make(map[string]Pos)
	)
	for _, n := range items {
		allowed := []string{"service", "weight"}
		if withSubsets {
			allowed = append(allowed, "tags", "meta")
		}
		e, ok := d.mapping(n, "split entry", allowed...)
		if !ok {
			weightsOK = false
			continue
		}
		ws := WeightedService{Pos: d.pos(e.line)}
		ws.Subset = d.subset(e)
		if d.require(e, "service") {
			if v, ok := d.str(e, "service"); ok && d.service(e.lineOf("service"), v) {
				key := v + " " + ws.Subset.String()
				switch prev, dup := services[key]; {
				case dup && ws.Subset.IsZero():
					d.errorf(e.lineOf("service"), "service %q appears twice in split (also at %s)", v, prev)
				case dup:
					d.errorf(e.lineOf("service"), "service %q with the same tags and meta appears twice in split (also at %s)", v, prev)
				default:
					services[key] = ws.Pos
				}
				ws.Service = v
			}
		}
		if d.require(e, "weight") {
			w, ok := d.uint32Field(e, "weight", 0)
			weightsOK = weightsOK && ok
			ws.Weight = w
			sum += uint64(w)
		} else {
			weightsOK = false
		}
		out = append(out, ws)
	}
	switch {
	case !weightsOK:
	case sum == 0:
		d.errorf(m.lineOf("split"), "split weights sum to zero; give at least one service a positive weight")
	case sum > math.MaxUint32:
		d.errorf(m.lineOf("split"), "split weights sum to %d, more than the maximum %d", sum, uint64(math.MaxUint32))
	}
	splitRest(out)
	return out
}

func (d *decoder) retries(n *yaml.Node, routeTimeout *time.Duration) *Retries {
	m, ok := d.mapping(n, "retries", "attempts", "on", "perTryTimeout", "backoff", "statusCodes", "headers")
	if !ok {
		return nil
	}
	r := &Retries{}
	off := false // attempts: 0
	if d.require(m, "attempts") {
		if v, ok := d.integer(m, "attempts", 0, MaxRetryAttempts); ok {
			r.Attempts = uint32(v)
			off = v == 0
		}
	}
	if m.has("on") {
		items := d.strList(m, "on")
		if m.emptyList("on") {
			d.errorf(m.lineOf("on"), "on must list at least one retry condition, or be omitted for the default %s", strings.Join(DefaultRetryOn(), ", "))
		}
		r.On = []string{}
		for _, it := range items {
			switch {
			case !contains(RetryOn(), it.value):
				d.errorf(it.line, "unknown retry condition %q; supported: %s", it.value, strings.Join(RetryOn(), ", "))
			case contains(r.On, it.value):
				d.errorf(it.line, "retry condition %q is listed twice", it.value)
			default:
				r.On = append(r.On, it.value)
			}
		}
	} else {
		r.On = DefaultRetryOn()
	}
	d.retryLists(m, r)
	if p := d.duration(m, "perTryTimeout"); p != nil {
		r.PerTryTimeout = *p
		timeout, what := EnvoyDefaultRouteTimeout, "Envoy's default route timeout"
		if routeTimeout != nil {
			timeout, what = *routeTimeout, "the route timeout"
		}
		if *p > 0 && timeout > 0 && *p >= timeout {
			d.warnf(m.lineOf("perTryTimeout"), "perTryTimeout %s is not shorter than %s %s, so no retry can start before the route times out", p, what, timeout)
		}
	}
	if off && (m.has("on") || m.has("perTryTimeout")) {
		d.warnf(m.lineOf("attempts"), "attempts 0 turns retries off; on and perTryTimeout have no effect")
	}
	return r
}

func (d *decoder) rateLimit(n *yaml.Node) *RateLimit {
	m, ok := d.mapping(n, "rateLimit", "requests", "per", "burst", "by", "header", "clients", "shadow", "headers")
	if !ok {
		return nil
	}
	rl := &RateLimit{}
	requestsOK := false
	if d.require(m, "requests") {
		rl.Requests, requestsOK = d.uint32Field(m, "requests", 1)
	}
	if d.require(m, "per") {
		if p := d.duration(m, "per"); p != nil {
			if *p < MinRateLimitInterval {
				d.errorf(m.lineOf("per"), "per must be at least %s, got %s", MinRateLimitInterval, m.vals["per"].Value)
			}
			rl.Per = *p
		}
	}
	if m.has("burst") {
		burst, ok := d.uint32Field(m, "burst", 1)
		rl.Burst = burst
		if ok && requestsOK && burst < rl.Requests {
			d.warnf(m.lineOf("burst"), "burst %d is less than requests %d; the bucket holds at most %d tokens, so at most %d requests pass per %s", burst, rl.Requests, burst, burst, rl.Per)
		}
	} else {
		rl.Burst = rl.Requests
	}
	d.rateLimitClients(m, rl)
	return rl
}

func (d *decoder) certificate(m *fields, out *parsed) {
	c := Certificate{Pos: d.pos(m.lineOf("name")), Name: d.name(m, "name", true)}
	var certOK, keyOK bool
	if d.require(m, "certFile") {
		var b []byte
		if c.CertFile, b, certOK = d.readFile(m, "certFile", out); certOK {
			c.CertPEM, certOK = d.certificates(m.lineOf("certFile"), "certFile", c.CertFile, b)
		}
	}
	if d.require(m, "keyFile") {
		var b []byte
		if c.KeyFile, b, keyOK = d.readFile(m, "keyFile", out); keyOK {
			var key []byte
			key, keyOK = d.privateKey(m.lineOf("keyFile"), c.KeyFile, b)
			c.KeyPEM = Secret(key)
		}
	}
	if certOK && keyOK {
		// X509KeyPair's errors describe the problem, never the key bytes.
		pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
		if err != nil {
			d.errorf(c.Pos.Line, "certificate %q: certFile and keyFile are not a valid pair: %v", c.Name, err)
		} else if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err != nil {
			d.errorf(m.lineOf("certFile"), "certificate %q: certFile: %v", c.Name, err)
		} else {
			c.DNSNames, c.NotAfter = leaf.DNSNames, leaf.NotAfter
		}
	}
	if m.has("caFile") {
		var (
			b  []byte
			ok bool
		)
		if c.CAFile, b, ok = d.readFile(m, "caFile", out); ok {
			if c.CAPEM, ok = d.certificates(m.lineOf("caFile"), "caFile", c.CAFile, b); ok {
				if msg := caProblem(c.CAPEM); msg != "" {
					d.errorf(m.lineOf("caFile"), "caFile %s %s", c.CAFile, msg)
				}
			}
		}
	}
	if c.Name != "" {
		out.certs = append(out.certs, c)
	}
}

// certificates returns the CERTIFICATE blocks of a certFile or caFile,
// re-encoded without PEM headers. Every other block is dropped with a
// warning: tools often write a certificate and its key (or a CA and the
// CA's key) to one file, and what certFile and caFile hold is sent to
// every Envoy of a group and shown by translate and /debug/config, where a
// private key must never be. The warning names the block type, never its
// contents.
func (d *decoder) certificates(line int, key, path string, b []byte) ([]byte, bool) {
	certs, dropped := splitPEM(b, func(t string) bool { return t == "CERTIFICATE" })
	if len(certs) == 0 {
		msg := fmt.Sprintf("%s %s holds no PEM certificate", key, path)
		if len(dropped) > 0 {
			msg += fmt.Sprintf(" (it holds %s)", blockList(dropped))
			if key == "certFile" && slices.ContainsFunc(dropped, isPrivateKey) {
				msg += "; are certFile and keyFile swapped?"
			}
		}
		d.errorf(line, "%s", msg)
		return nil, false
	}
	if len(dropped) > 0 {
		d.warnf(line, "%s %s also holds %s, which %s ignored: only its CERTIFICATE blocks are used, so that no key is ever sent to Envoy or shown",
			key, path, blockList(dropped), isOrAre(len(dropped)))
	}
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: c.Type, Bytes: c.Bytes})...)
	}
	return out, true
}

// privateKey returns the first private key block of a keyFile, as written.
// A keyFile may also hold the certificate (a combined file); only the key
// is kept, since it is the only part that keyFile contributes.
func (d *decoder) privateKey(line int, path string, b []byte) ([]byte, bool) {
	keys, dropped := splitPEM(b, isPrivateKey)
	switch {
	case len(keys) == 0:
		msg := fmt.Sprintf("keyFile %s holds no PEM private key", path)
		if len(dropped) > 0 {
			msg += fmt.Sprintf(" (it holds %s)", blockList(dropped))
			if slices.Contains(dropped, "CERTIFICATE") {
				msg += "; are certFile and keyFile swapped?"
			}
		}
		d.errorf(line, "%s", msg)
		return nil, false
	case len(keys) > 1:
		d.warnf(line, "keyFile %s holds %d private keys; only the first is used", path, len(keys))
	}
	return pem.EncodeToMemory(keys[0]), true
}

// isPrivateKey reports whether a PEM block type is a private key, as
// crypto/tls recognises them ("PRIVATE KEY", "EC PRIVATE KEY", ...).
func isPrivateKey(blockType string) bool {
	return blockType == "PRIVATE KEY" || strings.HasSuffix(blockType, " PRIVATE KEY")
}

// splitPEM returns the PEM blocks of b whose type keep accepts, and the
// types of the others in file order. Text outside blocks is ignored, as
// crypto/tls and Envoy ignore it.
func splitPEM(b []byte, keep func(blockType string) bool) (kept []*pem.Block, dropped []string) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return kept, dropped
		}
		if keep(block.Type) {
			kept = append(kept, block)
		} else {
			dropped = append(dropped, block.Type)
		}
	}
}

// blockList describes PEM block types for a message: `a "PRIVATE KEY"
// block`, `2 "PRIVATE KEY" blocks and a "X509 CRL" block`.
func blockList(types []string) string {
	var (
		order []string
		count = make(map[string]int)
	)
	for _, t := range types {
		if count[t] == 0 {
			order = append(order, t)
		}
		count[t]++
	}
	parts := make([]string, len(order))
	for i, t := range order {
		// A private key is described in words, not by its PEM type: no
		// output, warnings included, carries a "PRIVATE KEY" marker for
		// scanners and greps to trip on.
		if isPrivateKey(t) {
			what := "a private key"
			if count[t] > 1 {
				what = fmt.Sprintf("%d private keys", count[t])
			}
			if kind := strings.TrimSpace(strings.TrimSuffix(t, "PRIVATE KEY")); kind != "" {
				what += " (" + quoteValue(kind) + ")"
			}
			parts[i] = what
			continue
		}
		if count[t] == 1 {
			parts[i] = fmt.Sprintf("a %s block", quoteValue(t))
		} else {
			parts[i] = fmt.Sprintf("%d %s blocks", count[t], quoteValue(t))
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

func isOrAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// readFile reads a file named by key, relative to the policy file's
// directory unless absolute.
func (d *decoder) readFile(m *fields, key string, out *parsed) (path string, b []byte, ok bool) {
	v, ok := d.str(m, key)
	if !ok {
		return "", nil, false
	}
	if v == "" {
		d.errorf(m.lineOf(key), "%s must not be empty", key)
		return "", nil, false
	}
	path = v
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	path = filepath.Clean(path)
	out.files = append(out.files, path)
	b, err := safefile.Read(path, safefile.FileLimit)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.errorf(m.lineOf(key), "%s %s does not exist", key, path)
		return path, nil, false
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		d.errorf(m.lineOf(key), "cannot read %s %s: %v", key, path, err)
		return path, nil, false
	}
	return path, b, true
}

// caProblem says what is wrong with a CA bundle, or "".
func caProblem(b []byte) string {
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Sprintf("holds an invalid certificate: %v", err)
		}
		n++
	}
	if n == 0 {
		return "holds no PEM certificate"
	}
	return ""
}

// checkMeshRouteServices warns at each route through the mesh whose
// service has a Service policy with settings that do not apply there: the
// edge speaks what the service's sidecars serve (not the policy's
// protocol), and the Service's mesh block is for sidecars' calls (the
// route's own timeout, retries and split apply at the edge). Without the
// warning an operator could expect, say, a mesh split to shift the edge's
// traffic too.
func (p *parsed) checkMeshRouteServices(diags *Diagnostics) {
	byName := make(map[string]*Service, len(p.services))
	for i := range p.services {
		if _, dup := byName[p.services[i].Name]; !dup {
			byName[p.services[i].Name] = &p.services[i]
		}
	}
	for _, g := range p.groups {
		for _, l := range g.Listeners {
			for _, h := range l.Hosts {
				for _, r := range h.Routes {
					if !r.Mesh {
						continue
					}
					names := []string{r.Service}
					for _, w := range r.Split {
						names = append(names, w.Service)
					}
					for _, name := range names {
						if sv := byName[name]; sv != nil {
							if ignored := edgeIgnored(sv); len(ignored) > 0 {
								*diags = append(*diags, Diagnostic{Pos: r.Pos, Severity: SeverityWarning, Message: fmt.Sprintf(
									"route reaches service %q through the mesh, where the settings %s of its Service policy (%s) have no effect: what its sidecars serve decides the protocol, and the route's own timeout, retries and split apply",
									name, strings.Join(ignored, ", "), sv.Pos)})
							}
						}
					}
				}
			}
		}
	}
}

// edgeIgnored lists the settings of a Service policy that a route through
// the mesh does not apply.
func edgeIgnored(sv *Service) []string {
	var out []string
	if sv.Protocol != "" {
		out = append(out, "protocol")
	}
	if m := sv.Mesh; m != nil {
		if m.Timeout != nil {
			out = append(out, "mesh timeout")
		}
		if m.Retries != nil {
			out = append(out, "mesh retries")
		}
		if m.Split != nil {
			out = append(out, "mesh split")
		}
	}
	return out
}

// check runs the checks that span documents and files.
func (p *parsed) check(diags *Diagnostics) {
	errorf := func(pos Pos, format string, args ...any) {
		*diags = append(*diags, Diagnostic{Pos: pos, Severity: SeverityError, Message: fmt.Sprintf(format, args...)})
	}
	groups := make(map[string]Pos)
	for _, g := range p.groups {
		if prev, dup := groups[g.Name]; dup {
			errorf(g.Pos, "duplicate proxy group %q (also defined at %s)", g.Name, prev)
			continue
		}
		groups[g.Name] = g.Pos
	}
	services := make(map[string]Pos)
	for _, sv := range p.services {
		if prev, dup := services[sv.Name]; dup {
			errorf(sv.Pos, "duplicate Service %q (also defined at %s)", sv.Name, prev)
			continue
		}
		services[sv.Name] = sv.Pos
	}
	certs := make(map[string]Pos)
	for _, c := range p.certs {
		if prev, dup := certs[c.Name]; dup {
			errorf(c.Pos, "duplicate certificate %q (also defined at %s)", c.Name, prev)
			continue
		}
		certs[c.Name] = c.Pos
	}
	used := make(map[string]bool)
	for _, r := range p.refs {
		used[r.name] = true
		if _, ok := certs[r.name]; !ok {
			errorf(r.pos, "unknown certificate %q", r.name)
		}
	}
	p.checkMeshes(errorf)
	p.checkClientCAs(errorf)
	p.checkHashedSplits(errorf)
	routed := map[string]bool{}
	for _, g := range p.groups {
		if s := g.RateLimitService; s != nil && s.Service != "" {
			routed[s.Service] = true // its Service policy shapes the rate limit cluster
		}
		for _, l := range g.Listeners {
			for _, h := range l.Hosts {
				for _, r := range h.Routes {
					routed[r.Service] = true
					for _, w := range r.Split {
						routed[w.Service] = true
					}
					for _, mr := range r.Mirror {
						routed[mr.Service] = true
					}
				}
			}
		}
	}
	p.checkMeshRouteServices(diags)
	for _, sv := range p.services {
		if !routed[sv.Name] && sv.Mesh == nil && services[sv.Name] == sv.Pos {
			*diags = append(*diags, Diagnostic{Pos: sv.Pos, Severity: SeverityWarning, Message: fmt.Sprintf("Service %q is not routed to by any proxy group; its settings have no effect", sv.Name)})
		}
	}
	for _, c := range p.certs {
		if !used[c.Name] && certs[c.Name] == c.Pos {
			*diags = append(*diags, Diagnostic{Pos: c.Pos, Severity: SeverityWarning, Message: fmt.Sprintf("certificate %q is not used by any listener", c.Name)})
		}
	}
}

// checkClientCAs requires the certificates of one listener to agree on
// caFile: a listener verifies client certificates for every name it serves
// or for none, so a caFile on one certificate but not another (or two
// different CAs) would silently apply one certificate's choice to all.
func (p *parsed) checkClientCAs(errorf func(Pos, string, ...any)) {
	byName := make(map[string]*Certificate, len(p.certs))
	for i := range p.certs {
		byName[p.certs[i].Name] = &p.certs[i]
	}
	for _, g := range p.groups {
		for _, l := range g.Listeners {
			if l.TLS == nil {
				continue
			}
			var first *Certificate
			for _, name := range l.TLS.Certificates {
				c, ok := byName[name]
				if !ok {
					continue // reported as an unknown certificate
				}
				if first == nil {
					first = c
					continue
				}
				if string(c.CAPEM) != string(first.CAPEM) {
					errorf(l.TLS.Pos, "listener %q: certificates %q and %q have different caFile settings; all certificates of a listener must name the same caFile, or none, because the listener verifies client certificates for every name or for none",
						l.Name, first.Name, c.Name)
					break
				}
			}
		}
	}
}

// set builds the Set; it is only called when there are no errors.
func (p *parsed) set(policyFiles []string) *Set {
	s := &Set{Groups: p.groups, Certificates: p.certs, Services: p.services}
	if len(p.meshes) == 1 {
		s.Mesh = &p.meshes[0]
	}
	slices.SortStableFunc(s.Groups, func(a, b ProxyGroup) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(s.Services, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(s.Certificates, func(a, b Certificate) int { return strings.Compare(a.Name, b.Name) })
	s.files = slices.Concat(policyFiles, p.files)
	slices.Sort(s.files)
	s.files = slices.Compact(s.files)
	return s
}

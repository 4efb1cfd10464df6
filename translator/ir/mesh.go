package ir

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// The sidecar mesh, in the IR: what one Consul Connect sidecar Envoy is
// served (Sidecar) and what every sidecar shares (Mesh). The translator
// fills both from Consul's connect-proxy registrations, intentions and
// Connect CA; the envoy package turns a Sidecar into that proxy's own
// resources and a Mesh into resources built once for all of them.
//
// A sidecar's resources name the shared ones by name only: its upstream
// listeners name a MeshCluster, and its TLS contexts name "the proxy's own
// leaf" and "the mesh roots" under fixed secret names. So one destination's
// cluster, endpoints and routes are the same values in every caller's
// snapshot.

// Protocol is what a sidecar's application, or a destination, speaks.
type Protocol string

// Mesh protocols, as Consul's service-defaults and Proxy.Config "protocol"
// spell them.
const (
	ProtocolTCP   Protocol = "tcp"
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
)

// IsHTTP reports whether the protocol is served through an HTTP connection
// manager (routes, L7 intentions) rather than a TCP proxy.
func (p Protocol) IsHTTP() bool {
	return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// IsHTTP2 reports whether the application side speaks HTTP/2 (h2c).
func (p Protocol) IsHTTP2() bool { return p == ProtocolHTTP2 || p == ProtocolGRPC }

func (p Protocol) validate() error {
	switch p {
	case ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
		return nil
	}
	return fmt.Errorf("protocol %q: want tcp, http, http2 or grpc", p)
}

// Action is an intention's decision.
type Action string

// Intention actions.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
)

func (a Action) validate() error {
	if a != Allow && a != Deny {
		return fmt.Errorf("action %q: want allow or deny", a)
	}
	return nil
}

// Sidecar is one Consul Connect sidecar proxy (a connect-proxy
// registration) and everything its Envoy is served that is its own.
type Sidecar struct {
	// ProxyID is the proxy's service ID (web-1-sidecar-proxy): its Envoy's
	// node.id.
	ProxyID string `json:"proxyID"`
	// Service is the name of the service the sidecar fronts
	// (Proxy.DestinationServiceName): its identity in the mesh.
	Service string `json:"service"`
	// TrustDomain is the Connect CA's trust domain (<cluster id>.consul):
	// callers' SPIFFE IDs must be in it.
	TrustDomain string `json:"trustDomain"`
	// PublicAddress and PublicPort are where other sidecars reach it, over
	// mutual TLS (the registration's Address and Port).
	PublicAddress string `json:"publicAddress"`
	PublicPort    uint32 `json:"publicPort"`
	// LocalAddress and LocalPort are the application's
	// (Proxy.LocalServiceAddress, Proxy.LocalServicePort).
	LocalAddress string `json:"localAddress"`
	LocalPort    uint32 `json:"localPort"`
	// Protocol is what the local application speaks.
	Protocol Protocol `json:"protocol"`
	// Intentions decide which callers may reach the application.
	Intentions Intentions `json:"intentions"`
	// Upstreams are the services the application calls through the
	// sidecar, each on its own local port. Sorted by bind address and port.
	Upstreams []Upstream `json:"upstreams,omitempty"`
	// Leaf is the service's certificate, presented to callers and to
	// upstreams.
	Leaf MeshLeaf `json:"leaf"`
	// AccessLog logs each request (HTTP) or connection (tcp) of its
	// public and upstream listeners; nil: none.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// Tracing sends spans of the HTTP requests through its listeners to
	// the collector behind TracingCluster (named Tracing.Cluster); both
	// nil: no tracing.
	Tracing        *Tracing `json:"tracing,omitempty"`
	TracingCluster *Cluster `json:"tracingCluster,omitempty"`
}

// Intentions are the service-intentions that apply to one destination
// service, as the sidecar enforces them.
type Intentions struct {
	// Default is the decision for a caller no rule matches (Consul's
	// intention default: deny when the ACL default policy is deny).
	Default Action `json:"default"`
	// Rules have at most one per source. A rule for a named source takes
	// precedence over the "*" rule, whatever their order here.
	Rules []Intention `json:"rules,omitempty"`
}

// Intention is one source's rule. Exactly one of Action (L4: the whole
// connection) and Permissions (L7: per request, HTTP sidecars only) is
// set.
type Intention struct {
	// Source is a service name, or "*" for every service.
	Source      string       `json:"source"`
	Action      Action       `json:"action,omitempty"`
	Permissions []Permission `json:"permissions,omitempty"`
}

// Permission is one L7 rule of an intention. The first permission whose
// HTTP match matches a request decides it; a request no permission matches
// gets the intentions' Default, as in Consul.
type Permission struct {
	Action Action `json:"action"`
	// HTTP selects requests; nil matches every request.
	HTTP *PermissionHTTP `json:"http,omitempty"`
}

// PermissionHTTP matches requests: every field that is set must match. At
// most one path field is set.
type PermissionHTTP struct {
	PathExact  string `json:"pathExact,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// PathRegex is RE2 syntax, matched against the whole path.
	PathRegex string `json:"pathRegex,omitempty"`
	// Methods, when set, are the request methods that match (GET, POST).
	Methods []string           `json:"methods,omitempty"`
	Headers []PermissionHeader `json:"headers,omitempty"`
}

// PermissionHeader matches one request header. Exactly one of Exact,
// Prefix, Suffix, Regex and Present is set; Invert negates the match.
type PermissionHeader struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Suffix  string `json:"suffix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
	Invert  bool   `json:"invert,omitempty"`
}

// Upstream is one destination the application calls on a local port
// (Proxy.Upstreams[i]).
type Upstream struct {
	// Destination is the service called (DestinationName).
	Destination string `json:"destination"`
	// BindAddress and BindPort are the local listener the application
	// connects to (LocalBindAddress, default 127.0.0.1; LocalBindPort).
	BindAddress string `json:"bindAddress"`
	BindPort    uint32 `json:"bindPort"`
	// Protocol is the destination's; it equals the cluster's.
	Protocol Protocol `json:"protocol"`
	// Cluster names the destination's MeshCluster by its SNI.
	Cluster string `json:"cluster"`
	// Also are the other MeshClusters the destination's routes send to
	// (its split), which the sidecar needs too.
	Also []string `json:"also,omitempty"`
}

// MeshLeaf is a service's Connect CA leaf certificate and its key.
type MeshLeaf struct {
	Service string     `json:"service"`
	CertPEM string     `json:"certPEM"`
	KeyPEM  PrivateKey `json:"keyPEM"`
}

// Mesh is what every sidecar shares: the CA roots and one cluster per
// destination service.
type Mesh struct {
	Roots MeshRoots `json:"roots"`
	// Clusters are sorted by SNI, one per destination.
	Clusters []MeshCluster `json:"clusters,omitempty"`
}

// MeshRoots are the Connect CA's active roots. During a root rotation both
// the old and the new root are here, so certificates of either verify.
type MeshRoots struct {
	TrustDomain string `json:"trustDomain"`
	// RootsPEM is every trusted root certificate, concatenated.
	RootsPEM string `json:"rootsPEM"`
}

// MeshCluster is one destination service as its callers reach it: its
// sidecars, over mutual TLS.
type MeshCluster struct {
	Service    string `json:"service"`
	Datacenter string `json:"datacenter"`
	// SNI is what callers send, and what names the cluster
	// (MeshSNI: api.default.dc1.internal.<trust domain>).
	SNI string `json:"sni"`
	// SPIFFEID is the destination's identity, verified in its certificate
	// (SPIFFEID: spiffe://<trust domain>/ns/default/dc/dc1/svc/api).
	SPIFFEID string `json:"spiffeID"`
	// Protocol is what the destination's sidecar serves.
	Protocol Protocol `json:"protocol"`
	// Endpoints are the destination's sidecars: their public address and
	// port, healthy only while both the sidecar and its service pass.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Timeout and Retries apply to every HTTP call to the destination
	// (from a Service policy's mesh block); nil: not set.
	Timeout *Duration `json:"timeout,omitempty"`
	Retries *Retries  `json:"retries,omitempty"`
	// Split, when set, sends the destination's HTTP calls to these mesh
	// clusters by weight instead of to this one alone (a canary service,
	// say); each names a MeshCluster by SNI, this one included if it takes
	// a share.
	Split []MeshBackend `json:"split,omitempty"`
	// Source is the policy file and line of the first route to the
	// destination, for an edge group's mesh cluster ("" for sidecars',
	// which come from Consul).
	Source string `json:"source,omitempty"`
}

// MeshBackend is one share of a split.
type MeshBackend struct {
	Service string `json:"service"`
	Cluster string `json:"cluster"` // its MeshCluster's SNI
	Weight  uint32 `json:"weight"`
}

// MeshSNI is the server name Consul's sidecars send to reach a service, and
// accept: <service>.default.<dc>.internal.<trust domain>.
func MeshSNI(service, datacenter, trustDomain string) string {
	return service + ".default." + datacenter + ".internal." + trustDomain
}

// SPIFFEID is a Consul Connect service's identity in its leaf certificate's
// URI SAN.
func SPIFFEID(trustDomain, datacenter, service string) string {
	return "spiffe://" + trustDomain + "/ns/default/dc/" + datacenter + "/svc/" + service
}

// SPIFFEPattern is an RE2 pattern matching the SPIFFE IDs of a source
// service in any datacenter of the trust domain, or of every service for
// "*". The datacenter is not part of an intention, as in Consul.
func SPIFFEPattern(trustDomain, source string) string {
	svc := `[^/]+`
	if source != "*" {
		svc = regexp.QuoteMeta(source)
	}
	return "^spiffe://" + regexp.QuoteMeta(trustDomain) + `/ns/default/dc/[^/]+/svc/` + svc + "$"
}

// ValidMeshName reports whether v can name a mesh service or datacenter:
// a Consul service name or datacenter, `^[A-Za-z0-9][A-Za-z0-9_.-]*$`.
// They end up in SNIs, SPIFFE IDs and Envoy resource names.
//
// This and the other name checks below are loops over bytes rather than
// regular expressions: they run for every sidecar a change touches.
func ValidMeshName(v string) bool {
	if v == "" || !isAlnum(v[0]) {
		return false
	}
	for i := 1; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// validTrustDomain reports whether v is a DNS name (Consul's trust domain
// is <uuid>.consul): `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`.
func validTrustDomain(v string) bool {
	if v == "" || !isLowerAlnum(v[0]) || !isLowerAlnum(v[len(v)-1]) {
		return false
	}
	for i := 1; i < len(v)-1; i++ {
		if c := v[i]; !isLowerAlnum(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// validMethod reports whether v is an upper-case HTTP method: `^[A-Z]+$`.
func validMethod(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 'A' || v[i] > 'Z' {
			return false
		}
	}
	return v != ""
}

// validHeaderName reports whether v is an HTTP header name (an RFC 9110
// token), or an HTTP/2 pseudo-header: "^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$".
func validHeaderName(v string) bool {
	v = strings.TrimPrefix(v, ":")
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && !strings.ContainsRune("!#$%&'*+.^_`|~-", rune(c)) {
			return false
		}
	}
	return v != ""
}

func isAlnum(c byte) bool      { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }
func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Validate checks what the envoy builders rely on for one sidecar. The
// happy path builds no strings: a translation validates every sidecar a
// change touches, so messages are made only for what fails.
func (s *Sidecar) Validate() error {
	what := func() string { return fmt.Sprintf("sidecar %q", s.ProxyID) }
	var errs []error
	if s.ProxyID == "" {
		errs = append(errs, errors.New("sidecar: empty proxy id"))
	}
	if !ValidMeshName(s.Service) {
		errs = append(errs, fmt.Errorf("%s: service %q is not a service name", what(), s.Service))
	}
	if !validTrustDomain(s.TrustDomain) {
		errs = append(errs, fmt.Errorf("%s: trust domain %q is not a DNS name", what(), s.TrustDomain))
	}
	errs = append(errs, addrPort(what, "public", s.PublicAddress, s.PublicPort), addrPort(what, "local app", s.LocalAddress, s.LocalPort))
	if err := s.Protocol.validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", what(), err))
	}
	if err := s.Intentions.validate(s.Protocol); err != nil {
		errs = append(errs, prefixErrors(what(), err))
	}
	if s.Leaf.Service != s.Service {
		errs = append(errs, fmt.Errorf("%s: leaf certificate of service %q; want %q", what(), s.Leaf.Service, s.Service))
	}
	if s.Leaf.CertPEM == "" || s.Leaf.KeyPEM == "" {
		errs = append(errs, fmt.Errorf("%s: leaf certificate or key missing", what()))
	}
	if len(s.Upstreams) > 0 {
		errs = append(errs, s.validateUpstreams(what))
	}
	errs = append(errs, s.validateTracing(what))
	return errors.Join(errs...)
}

// validateTracing checks that tracing and its collector's cluster come
// together, under one name.
func (s *Sidecar) validateTracing(what func() string) error {
	switch {
	case s.Tracing == nil && s.TracingCluster == nil:
		return nil
	case s.Tracing == nil || s.TracingCluster == nil:
		return fmt.Errorf("%s: tracing and its collector's cluster must be set together", what())
	case s.Tracing.Cluster != s.TracingCluster.Service:
		return fmt.Errorf("%s: tracing to cluster %q; its collector's cluster is %q", what(), s.Tracing.Cluster, s.TracingCluster.Service)
	case s.TracingCluster.Subset != "" || len(s.TracingCluster.Endpoints) == 0:
		return fmt.Errorf("%s: tracing collector cluster %q: want endpoints and no subset", what(), s.TracingCluster.Service)
	}
	return s.TracingCluster.Validate()
}

// validateUpstreams checks each upstream, and that no two listeners share
// an address and port: Envoy would refuse the second.
func (s *Sidecar) validateUpstreams(what func() string) error {
	type addr struct {
		ip   string
		port uint32
	}
	bound := make(map[addr]string, len(s.Upstreams)+1)
	bound[addr{s.PublicAddress, s.PublicPort}] = "the public listener"
	var errs []error
	for _, u := range s.Upstreams {
		uw := func() string { return fmt.Sprintf("%s: upstream %q", what(), u.Destination) }
		if !ValidMeshName(u.Destination) {
			errs = append(errs, fmt.Errorf("%s: not a service name", uw()))
		}
		if u.Cluster == "" {
			errs = append(errs, fmt.Errorf("%s: no cluster", uw()))
		}
		errs = append(errs, addrPort(uw, "bind", u.BindAddress, u.BindPort))
		if err := u.Protocol.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", uw(), err))
		}
		key := addr{u.BindAddress, u.BindPort}
		if other, dup := bound[key]; dup {
			errs = append(errs, fmt.Errorf("%s: bind address %s is taken by %s", uw(), net.JoinHostPort(u.BindAddress, strconv.FormatUint(uint64(u.BindPort), 10)), other))
		}
		bound[key] = "upstream " + strconv.Quote(u.Destination)
	}
	return errors.Join(errs...)
}

// addrPort checks a listener's IP address and port; kind says which
// listener ("public", "local app", "bind").
func addrPort(what func() string, kind, addr string, port uint32) error {
	var errs []error
	if net.ParseIP(addr) == nil {
		errs = append(errs, fmt.Errorf("%s: %s address %q is not an IP", what(), kind, addr))
	}
	if port == 0 || port > 65535 {
		errs = append(errs, fmt.Errorf("%s: %s port %d out of range", what(), kind, port))
	}
	return errors.Join(errs...)
}

// prefixErrors puts prefix before each of err's joined errors.
func prefixErrors(prefix string, err error) error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = fmt.Errorf("%s: %w", prefix, e)
	}
	return errors.Join(out...)
}

func (in *Intentions) validate(p Protocol) error {
	var errs []error
	if err := in.Default.validate(); err != nil {
		errs = append(errs, fmt.Errorf("intentions default: %w", err))
	}
	seen := make(map[string]bool, len(in.Rules))
	for _, r := range in.Rules {
		rw := func() string { return fmt.Sprintf("intention from %q", r.Source) }
		if r.Source != "*" && !ValidMeshName(r.Source) {
			errs = append(errs, fmt.Errorf("%s: source is neither a service name nor \"*\"", rw()))
		}
		if seen[r.Source] {
			errs = append(errs, fmt.Errorf("%s: more than one rule for the source", rw()))
		}
		seen[r.Source] = true
		switch {
		case r.Action != "" && len(r.Permissions) > 0:
			errs = append(errs, fmt.Errorf("%s: both an action and permissions", rw()))
		case r.Action != "":
			if err := r.Action.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", rw(), err))
			}
		case len(r.Permissions) == 0:
			errs = append(errs, fmt.Errorf("%s: neither an action nor permissions", rw()))
		case !p.IsHTTP():
			// Consul refuses L7 intentions for a tcp service, and treats
			// any that remain after a protocol change as deny: the
			// translator writes that deny here, so the IR says it.
			errs = append(errs, fmt.Errorf("%s: L7 permissions on a %s sidecar", rw(), p))
		}
		for i := range r.Permissions {
			if err := r.Permissions[i].validate(); err != nil {
				errs = append(errs, prefixErrors(fmt.Sprintf("%s: permission %d", rw(), i), err))
			}
		}
	}
	return errors.Join(errs...)
}

func (p *Permission) validate() error {
	var errs []error
	if err := p.Action.validate(); err != nil {
		errs = append(errs, err)
	}
	h := p.HTTP
	if h == nil {
		return errors.Join(errs...)
	}
	paths := 0
	for _, v := range []string{h.PathExact, h.PathPrefix, h.PathRegex} {
		if v != "" {
			paths++
		}
	}
	if paths > 1 {
		errs = append(errs, errors.New("more than one of pathExact, pathPrefix and pathRegex"))
	}
	for _, v := range []string{h.PathExact, h.PathPrefix} {
		if v != "" && !strings.HasPrefix(v, "/") {
			errs = append(errs, fmt.Errorf("path %q does not start with /", v))
		}
	}
	if h.PathRegex != "" {
		if _, err := regexp.Compile(h.PathRegex); err != nil {
			errs = append(errs, fmt.Errorf("pathRegex: %w", err))
		}
	}
	for _, m := range h.Methods {
		if !validMethod(m) {
			errs = append(errs, fmt.Errorf("method %q is not an upper-case HTTP method", m))
		}
	}
	for _, hd := range h.Headers {
		hw := func() string { return fmt.Sprintf("header %q", hd.Name) }
		if !validHeaderName(hd.Name) {
			errs = append(errs, fmt.Errorf("%s: not a header name", hw()))
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
			errs = append(errs, fmt.Errorf("%s: want exactly one of exact, prefix, suffix, regex and present", hw()))
		}
		if hd.Regex != "" {
			if _, err := regexp.Compile(hd.Regex); err != nil {
				errs = append(errs, fmt.Errorf("%s: regex: %w", hw(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Validate checks what the envoy builders rely on for the shared mesh.
func (m *Mesh) Validate() error {
	var errs []error
	errs = append(errs, m.Roots.Validate())
	seen := make(map[string]bool, len(m.Clusters))
	for i := range m.Clusters {
		c := &m.Clusters[i]
		errs = append(errs, c.Validate(m.Roots.TrustDomain))
		if seen[c.SNI] {
			errs = append(errs, fmt.Errorf("mesh cluster %q: defined twice", c.SNI))
		}
		seen[c.SNI] = true
	}
	for _, c := range m.Clusters {
		for _, b := range c.Split {
			if !seen[b.Cluster] {
				errs = append(errs, fmt.Errorf("mesh cluster %q: split to %q, which is not a mesh cluster", c.SNI, b.Cluster))
			}
		}
	}
	return errors.Join(errs...)
}

// Validate checks the roots: a trust domain that is a DNS name, and
// certificates.
func (r *MeshRoots) Validate() error {
	var errs []error
	if !validTrustDomain(r.TrustDomain) {
		errs = append(errs, fmt.Errorf("mesh: trust domain %q is not a DNS name", r.TrustDomain))
	}
	if r.RootsPEM == "" {
		errs = append(errs, errors.New("mesh: no CA roots"))
	}
	return errors.Join(errs...)
}

// Validate checks one destination's cluster on its own, in the trust
// domain: everything but whether its split's targets exist, which needs
// the mesh around it (Mesh.Validate, Mesh.ValidateSidecar).
func (c *MeshCluster) Validate(trustDomain string) error {
	what := func() string { return fmt.Sprintf("mesh cluster %q", c.SNI) }
	var errs []error
	if !ValidMeshName(c.Service) {
		errs = append(errs, fmt.Errorf("%s: service %q is not a service name", what(), c.Service))
	}
	if !ValidMeshName(c.Datacenter) {
		errs = append(errs, fmt.Errorf("%s: datacenter %q is not a datacenter name", what(), c.Datacenter))
	}
	if !isMeshSNI(c.SNI, c.Service, c.Datacenter, trustDomain) {
		errs = append(errs, fmt.Errorf("%s: sni; want %q", what(), MeshSNI(c.Service, c.Datacenter, trustDomain)))
	}
	if want := SPIFFEID(trustDomain, c.Datacenter, c.Service); c.SPIFFEID != want {
		errs = append(errs, fmt.Errorf("%s: spiffe id %q; want %q", what(), c.SPIFFEID, want))
	}
	if err := c.Protocol.validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", what(), err))
	}
	var sum uint64
	for _, b := range c.Split {
		sum += uint64(b.Weight)
	}
	if len(c.Split) > 0 && (sum == 0 || !c.Protocol.IsHTTP()) {
		errs = append(errs, fmt.Errorf("%s: a split needs an HTTP destination and a positive total weight", what()))
	}
	// The endpoints follow the rules of an edge cluster's IP endpoints.
	cl := Cluster{Service: c.SNI, Endpoints: c.Endpoints}
	errs = append(errs, cl.Validate())
	return errors.Join(errs...)
}

// isMeshSNI reports whether sni is MeshSNI(service, dc, td), without
// building it.
func isMeshSNI(sni, service, dc, td string) bool {
	rest, ok := strings.CutPrefix(sni, service)
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, ".default.")
	if !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, dc)
	return ok && rest == ".internal."+td
}

// ValidateSidecar checks a sidecar against the mesh it is served with:
// every upstream's cluster exists and speaks the upstream's protocol, and
// the trust domains agree.
func (m *Mesh) ValidateSidecar(s *Sidecar) error {
	clusters := make(map[string]*MeshCluster, len(m.Clusters))
	for i := range m.Clusters {
		clusters[m.Clusters[i].SNI] = &m.Clusters[i]
	}
	return ValidateSidecarIn(s, m.Roots.TrustDomain, func(sni string) *MeshCluster { return clusters[sni] })
}

// ValidateSidecarIn is ValidateSidecar for a mesh of trust domain td whose
// clusters are looked up by SNI (nil: no such cluster).
func ValidateSidecarIn(s *Sidecar, td string, cluster func(sni string) *MeshCluster) error {
	var errs []error
	if s.TrustDomain != td {
		errs = append(errs, fmt.Errorf("sidecar %q: trust domain %q; the mesh's is %q", s.ProxyID, s.TrustDomain, td))
	}
	for _, u := range s.Upstreams {
		for _, also := range u.Also {
			if cluster(also) == nil {
				errs = append(errs, fmt.Errorf("sidecar %q: upstream %q: no mesh cluster %q (in its split)", s.ProxyID, u.Destination, also))
			}
		}
		c := cluster(u.Cluster)
		switch {
		case c == nil:
			errs = append(errs, fmt.Errorf("sidecar %q: upstream %q: no mesh cluster %q", s.ProxyID, u.Destination, u.Cluster))
		case c.Service != u.Destination:
			errs = append(errs, fmt.Errorf("sidecar %q: upstream %q: cluster %q is service %q", s.ProxyID, u.Destination, u.Cluster, c.Service))
		case c.Protocol != u.Protocol:
			errs = append(errs, fmt.Errorf("sidecar %q: upstream %q: protocol %s; the destination speaks %s", s.ProxyID, u.Destination, u.Protocol, c.Protocol))
		}
	}
	return errors.Join(errs...)
}

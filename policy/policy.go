// Package policy reads and validates Switchyard's operator-facing policy files.
package policy

import (
	"slices"
	"strings"
	"time"
)

// APIVersion is the only apiVersion this package reads.
const APIVersion = "switchyard.io/v1"

// Kinds of policy documents.
const (
	KindProxyGroup  = "ProxyGroup"
	KindCertificate = "Certificate"
	KindService     = "Service"
)

// Upstream protocols a Service may name: how Envoy talks to the service's
// instances.
const (
	ProtocolHTTP  = "http"  // HTTP/1.1 (the default)
	ProtocolHTTP2 = "http2" // HTTP/2 without TLS (prior knowledge)
	ProtocolGRPC  = "grpc"  // gRPC: HTTP/2
)

// Protocols lists the protocol values a Service accepts.
func Protocols() []string { return []string{ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC} }

// Defaults applied while parsing, so that consumers see the effective value.
const (
	// DefaultAddress is the listener address when none is given.
	DefaultAddress = "0.0.0.0"
	// DefaultPathPrefix is the route match when no path match is given.
	DefaultPathPrefix = "/"
	// MaxRetryAttempts bounds retries.attempts: retries multiply load on a
	// struggling service, and more than a few rarely help.
	MaxRetryAttempts = 10
	// MinRateLimitInterval is the smallest rateLimit.per Envoy accepts for a
	// token bucket's fill interval ("fill timer must be >= 50ms").
	MinRateLimitInterval = 50 * time.Millisecond
	// MaxRegexProgramSize bounds a regex's RE2 program size, the measure
	// Envoy checks against its runtime limit re2.max_program_size.error_level
	// (100 by default; the bootstrap from `switchyard bootstrap` sets 10,000,
	// envoy.RE2MaxProgramSize). Validation counts an upper bound on RE2's
	// size (see re2ProgramSize), so a regex it accepts is never refused by an
	// Envoy so bootstrapped.
	MaxRegexProgramSize = 10000
	// MaxFilePathLength bounds certFile, keyFile and caFile. Real paths
	// are far shorter; a longer value is more likely a key pasted in place
	// of its path, so it is refused without being shown.
	MaxFilePathLength = 256
	// EnvoyDefaultRouteTimeout is what Envoy applies to a route with no
	// explicit timeout. It is used here only for warnings.
	EnvoyDefaultRouteTimeout = 15 * time.Second
)

// ImplicitRetryAttempts is how many times a route without retries retries
// the failures of ImplicitRetryOn; retries.attempts 0 turns it off.
const ImplicitRetryAttempts = 2

// ImplicitRetryOn returns what a route without retries retries: failures
// where the request never reached an application (the connection could not
// be opened, or the stream was refused), so retrying on another instance is
// always safe. A crashed instance costs no client an error while Consul's
// health check and Envoy's outlier detection catch up.
func ImplicitRetryOn() []string {
	return []string{"connect-failure", "refused-stream"}
}

// DefaultRetryOn returns the retry conditions used when retries.on is
// omitted: the failures most likely to be transient. connect-failure and
// refused-stream never reached the application; gateway-error (502, 503,
// 504) usually did not, which docs/policy.md points out.
func DefaultRetryOn() []string {
	return []string{"connect-failure", "refused-stream", "gateway-error"}
}

// RetryOn lists the retries.on values accepted, which are Envoy's
// x-envoy-retry-on conditions.
func RetryOn() []string {
	return []string{
		"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
		"refused-stream", "retriable-status-codes", "retriable-headers",
		"envoy-ratelimited", "http3-post-connect-failure", "reset-before-request",
	}
}

// Set is an immutable, validated collection of policies. Its slices are
// sorted by Name; callers must not modify them.
type Set struct {
	Groups       []ProxyGroup
	Certificates []Certificate
	Services     []Service
	// Mesh is the settings of every sidecar (kind: Mesh); nil when no
	// document sets them.
	Mesh *Mesh

	files []string // sorted, deduplicated
}

// Group returns the proxy group with the given name.
func (s *Set) Group(name string) (ProxyGroup, bool) {
	i, ok := slices.BinarySearchFunc(s.Groups, name, func(g ProxyGroup, n string) int { return strings.Compare(g.Name, n) })
	if !ok {
		return ProxyGroup{}, false
	}
	return s.Groups[i], true
}

// Certificate returns the certificate with the given name.
func (s *Set) Certificate(name string) (Certificate, bool) {
	i, ok := slices.BinarySearchFunc(s.Certificates, name, func(c Certificate, n string) int { return strings.Compare(c.Name, n) })
	if !ok {
		return Certificate{}, false
	}
	return s.Certificates[i], true
}

// Keep returns a set with s's groups and certificates plus those groups of
// from that s lacks, named in keep, with the certificates they use (from
// from, where s lacks them). The control plane uses it to keep serving a
// group removed from the policy while Envoys still use it.
func (s *Set) Keep(from *Set, keep []string) *Set {
	out := &Set{
		Groups:       slices.Clone(s.Groups),
		Certificates: slices.Clone(s.Certificates),
		Services:     slices.Clone(s.Services),
		files:        slices.Clone(s.files),
	}
	for _, name := range keep {
		g, ok := from.Group(name)
		if !ok {
			continue
		}
		if _, dup := out.Group(name); dup {
			continue
		}
		out.Groups = append(out.Groups, g)
		// The Service documents of what the kept group routes to, so its
		// clusters keep their protocol.
		for _, l := range g.Listeners {
			for _, h := range l.Hosts {
				for _, r := range h.Routes {
					names := []string{r.Service}
					for _, w := range r.Split {
						names = append(names, w.Service)
					}
					for _, mr := range r.Mirror {
						names = append(names, mr.Service)
					}
					for _, name := range names {
						if _, have := out.Service(name); have {
							continue
						}
						if sv, ok := from.Service(name); ok {
							out.Services = append(out.Services, sv)
							slices.SortFunc(out.Services, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
						}
					}
				}
			}
		}
		for _, l := range g.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, c := range l.TLS.Certificates {
				if _, have := out.Certificate(c); have {
					continue
				}
				if cert, ok := from.Certificate(c); ok {
					out.Certificates = append(out.Certificates, cert)
					slices.SortFunc(out.Certificates, func(a, b Certificate) int { return strings.Compare(a.Name, b.Name) })
				}
			}
		}
		slices.SortFunc(out.Groups, func(a, b ProxyGroup) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}

// Without returns a copy of the set without the groups drop picks, and the
// names of those groups, sorted. It shares everything else with s.
func (s *Set) Without(drop func(*ProxyGroup) bool) (*Set, []string) {
	out := &Set{Certificates: s.Certificates, Services: s.Services, files: s.files}
	var dropped []string
	for i := range s.Groups {
		if drop(&s.Groups[i]) {
			dropped = append(dropped, s.Groups[i].Name)
			continue
		}
		out.Groups = append(out.Groups, s.Groups[i])
	}
	return out, dropped
}

// Service returns the Service document for a Consul service, if any.
func (s *Set) Service(name string) (Service, bool) {
	i, ok := slices.BinarySearchFunc(s.Services, name, func(v Service, n string) int { return strings.Compare(v.Name, n) })
	if !ok {
		return Service{}, false
	}
	return s.Services[i], true
}

// Files returns every file the set was built from, including certificate,
// key and CA files, sorted. Paths are as given to Load or Parse, joined with
// the directory they were found in; the control plane watches them.
func (s *Set) Files() []string { return slices.Clone(s.files) }

// ProxyGroup is the configuration served to every Envoy whose node.cluster
// is Name.
type ProxyGroup struct {
	Pos Pos // the line of its name

	Name      string
	Listeners []Listener // in file order
	// Mesh is the group's identity in the Connect mesh, for routes that
	// reach their services through the services' sidecars (Route.Mesh);
	// nil when not set: the group's name is its identity.
	Mesh *GroupMesh
	// AccessLog is where and how the group's Envoys log each request; nil
	// when not set: JSON lines on Envoy's standard output.
	AccessLog *AccessLog
	// Tracing sends spans of the group's requests to an OpenTelemetry
	// collector; nil: no tracing.
	Tracing *Tracing
	// RateLimitService counts the group's global rate limits; nil: none
	// (and no host or route may have one).
	RateLimitService *RateLimitService
}

// Tracing is a proxy group's OpenTelemetry tracing: spans over OTLP/gRPC
// to a collector.
type Tracing struct {
	Pos Pos
	// Address is the collector's OTLP/gRPC address, host:port; a DNS name
	// is resolved by Envoy (a Consul DNS name such as
	// otel-collector.service.consul finds it in Consul).
	Address string
	// Sampling is the percentage of requests traced (0 to 100; default
	// 100). A request that arrives with a sampled trace is traced anyway.
	Sampling int
	// ServiceName is the spans' service.name (default: the group's name).
	ServiceName string
}

// Access log destinations and formats.
const (
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
	AccessLogJSON   = "json"
	AccessLogText   = "text"
)

// AccessLog is a proxy group's request log: one line per request (HTTP)
// or connection (TCP) on every listener.
type AccessLog struct {
	Pos Pos
	// Off: the group logs no requests (enabled: false).
	Off bool
	// Path is AccessLogStdout, AccessLogStderr or an absolute file path
	// (Envoy opens it, and reopens it on SIGUSR1 for log rotation).
	Path string
	// Format is AccessLogJSON (one JSON object per line, the fields in
	// docs/policy.md) or AccessLogText (Envoy's default format).
	Format string
}

// EffectiveAccessLog is the group's access log with the defaults filled
// in, or nil when it is off.
func (g *ProxyGroup) EffectiveAccessLog() *AccessLog { return effectiveAccessLog(g.AccessLog) }

// effectiveAccessLog is an access log block (nil: none given) with the
// defaults filled in, or nil when it is off: the one rule for proxy groups
// and sidecars.
func effectiveAccessLog(a *AccessLog) *AccessLog {
	out := AccessLog{Path: AccessLogStdout, Format: AccessLogJSON}
	if a != nil {
		if a.Off {
			return nil
		}
		out.Pos = a.Pos
		if a.Path != "" {
			out.Path = a.Path
		}
		if a.Format != "" {
			out.Format = a.Format
		}
	}
	return &out
}

// GroupMesh is a proxy group's identity in the Connect mesh.
type GroupMesh struct {
	Pos Pos
	// Service is the Consul service name whose Connect leaf certificate
	// the group's Envoys present to sidecars, and the source that
	// intentions name.
	Service string
}

// MeshService is the Consul service name the group presents in the mesh:
// its mesh block's service, else the group's name (a group name is a
// valid Consul service name).
func (g *ProxyGroup) MeshService() string {
	if g.Mesh != nil && g.Mesh.Service != "" {
		return g.Mesh.Service
	}
	return g.Name
}

// UsesMesh reports whether any route of the group reaches its services
// through the mesh.
func (g *ProxyGroup) UsesMesh() bool {
	for _, l := range g.Listeners {
		for _, h := range l.Hosts {
			for _, r := range h.Routes {
				if r.Mesh {
					return true
				}
			}
		}
	}
	return false
}

// Listener is one HTTP listener of a proxy group.
type Listener struct {
	Pos     Pos
	Name    string
	Address string // an IP address; DefaultAddress when omitted
	Port    uint32
	TLS     *ListenerTLS // nil: plain HTTP
	// WebSocket allows WebSocket upgrades on every route of the listener
	// (Envoy answers an upgrade 403 otherwise).
	WebSocket bool
	// HTTPSRedirect redirects every plain-HTTP request to the same URL
	// with https, whatever its host (no effect with TLS).
	HTTPSRedirect bool
	// RequestLimits bounds the size of requests; nil: Envoy's defaults
	// (60 KiB of headers, any body).
	RequestLimits *RequestLimits
	// IPAccess admits requests by client address on every route of the
	// listener whose host and route have none; nil: any address.
	IPAccess *IPAccess
	// XFFTrustedHops is how many proxies in front of the listener append
	// to X-Forwarded-For; the client's address (for IPAccess, the access
	// log) is the one they saw. 0: the connection's peer, X-Forwarded-For
	// ignored.
	XFFTrustedHops uint32
	// RateLimitResponse is the body of the listener's 429 answers to
	// rate-limited requests; nil: Envoy's ("local_rate_limited").
	RateLimitResponse *RateLimitResponse
	// ExtAuthz asks an authorization service about each request; JWT
	// validates tokens on the routes that require them (auth.go). Nil:
	// none.
	ExtAuthz *ExtAuthz
	JWT      *JWT
	Hosts    []VirtualHost
}

// Service holds settings for traffic to one Consul service, from every
// proxy that routes to it.
type Service struct {
	Pos  Pos
	Name string // the Consul service name
	// Protocol is how Envoy talks to the service's instances (Protocols);
	// "" when not set: the instances' Consul meta "protocol", else HTTP/1.1.
	Protocol string
	// Mesh is policy for traffic to the service from Connect sidecars
	// (an HTTP service's callers); nil when not set.
	Mesh *MeshPolicy

	// The edge's cluster to the service (and to each subset of it): nil
	// fields keep Switchyard's defaults, described in docs/policy.md.
	LoadBalancer     *LoadBalancer
	ConnectTimeout   *time.Duration // > 0
	IdleTimeout      *time.Duration // 0: connections never idle out
	CircuitBreakers  *CircuitBreakers
	OutlierDetection *OutlierDetection
	HealthCheck      *HealthCheck // nil: no active health check
}

// MeshPolicy is what every sidecar that calls a service applies to its
// requests: the same fields as a route's.
type MeshPolicy struct {
	Pos     Pos
	Timeout *time.Duration // nil: Envoy's default (15s); 0: none
	Retries *Retries       // nil: none
	// Split sends the service's mesh calls to these services by weight
	// (the service itself may be one); nil: all to the service.
	Split []WeightedService
}

// ListenerTLS terminates TLS on a listener. Envoy picks among the
// certificates by the SNI the client sends.
type ListenerTLS struct {
	Pos          Pos
	Certificates []string // names of Certificate documents, in file order
}

// VirtualHost is a set of routes served for some Host/:authority values.
type VirtualHost struct {
	Pos     Pos
	Domains []string
	// HTTPSRedirect redirects the host's plain-HTTP requests to the same
	// URL with https (no effect with TLS).
	HTTPSRedirect bool
	// RequestHeaders and ResponseHeaders apply to every route of the
	// host; a route's own changes win where both name a header.
	RequestHeaders, ResponseHeaders *Headers
	// CORS applies to every route of the host that has none of its own.
	CORS *CORS
	// IPAccess replaces the listener's for every route of the host that
	// has none of its own.
	IPAccess *IPAccess
	// GlobalRateLimits apply to every forwarded request of the host, in
	// addition to its route's own.
	GlobalRateLimits []GlobalRateLimit
	// Auth turns the listener's extAuthz off or on, and says which JWT
	// providers' tokens the host's routes require.
	Auth   Auth
	Routes []Route // in file order: the first match wins
}

// Route sends matching requests to one service or splits them among
// several, or answers them itself. Exactly one of Service, Split, Redirect
// and DirectResponse is set.
type Route struct {
	Pos   Pos
	Name  string // the index within the host ("0", "1", ...) when omitted
	Match Match

	Service string            // set when the action is a single service
	Subset  Subset            // of Service: some of its instances; zero: all
	Split   []WeightedService // set when the action is a split
	// Redirect, when set, answers every request with a redirect.
	Redirect *Redirect
	// DirectResponse, when set, answers every request with a fixed
	// status and body.
	DirectResponse *DirectResponse
	// Rewrite changes a forwarded request's path or host; nil: none.
	Rewrite *Rewrite
	// RequestHeaders changes what is forwarded, ResponseHeaders what the
	// client gets, after the host's own changes; nil: none.
	RequestHeaders, ResponseHeaders *Headers
	// CORS, when set, replaces the host's CORS policy for this route.
	CORS *CORS
	// Mirror copies a share of the requests to other services; nil: none.
	Mirror []Mirror
	// Fault injects delays or errors into a share of the requests; nil:
	// none.
	Fault *Fault

	Timeout   *time.Duration // nil: not set; 0: no timeout
	Retries   *Retries
	RateLimit *RateLimit
	// GlobalRateLimits are limits shared by every Envoy of the group,
	// counted by its rate limit service; nil: none.
	GlobalRateLimits []GlobalRateLimit
	// IPAccess, when set, replaces its host's and listener's.
	IPAccess *IPAccess
	// Auth, where set, replaces its host's (see EffectiveExtAuthz and
	// EffectiveJWT).
	Auth Auth
	// WebSocket allows WebSocket upgrades on this route.
	WebSocket bool
	// Mesh sends the route's requests (to its service, or to each service
	// of its split) through the services' Connect sidecars, over mutual
	// TLS with the group's mesh identity (ProxyGroup.MeshService).
	Mesh bool
}

// Match selects requests by path, method, headers and query parameters.
// Exactly one of PathPrefix, Path and PathRegex is set (PathPrefix is
// DefaultPathPrefix when the file gives none). PathRegex is RE2 syntax and
// must match the whole path.
type Match struct {
	PathPrefix, Path, PathRegex string
	// CaseInsensitive matches PathPrefix or Path whatever the case.
	CaseInsensitive bool
	Methods         []string          // any of them; nil: any method
	Headers         []HeaderMatch     // all must match
	QueryParams     []QueryParamMatch // all must match
}

// narrowed reports whether the match looks at more than the path, so that
// it does not take every request on its path.
func (m *Match) narrowed() bool {
	return len(m.Headers) > 0 || len(m.QueryParams) > 0 || len(m.Methods) > 0
}

// HeaderMatch matches one request header. Exactly one of Exact, Prefix,
// Suffix, Contains, Regex (RE2, whole value), Present and Absent is set.
type HeaderMatch struct {
	Pos                                          Pos
	Name, Exact, Prefix, Suffix, Contains, Regex string
	Present, Absent                              bool
	// Invert matches requests whose header is present and does not match
	// (not with Present or Absent).
	Invert bool
}

// QueryParamMatch matches one query parameter. Exactly one of Exact, Regex
// (RE2, whole value) and Present is set.
type QueryParamMatch struct {
	Pos                Pos
	Name, Exact, Regex string
	Present            bool
}

// Methods lists the request methods a match may name.
func Methods() []string {
	return []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
}

// WeightedService is one destination of a split.
type WeightedService struct {
	Pos     Pos
	Service string
	// Subset is the instances of Service that get this share; zero: all
	// (or the rest, see Subset.Except).
	Subset Subset
	Weight uint32
}

// HasSubsets reports whether the route selects instances by tags or meta.
func (r *Route) HasSubsets() bool {
	if !r.Subset.IsZero() {
		return true
	}
	for _, w := range r.Split {
		if !w.Subset.IsZero() {
			return true
		}
	}
	return false
}

// Retries is a route's retry policy.
type Retries struct {
	Attempts      uint32        // 0..MaxRetryAttempts; 0: no retries at all
	On            []string      // values from RetryOn; DefaultRetryOn when omitted
	PerTryTimeout time.Duration // 0: each try may use the whole route timeout
	// Backoff spaces retries out; nil: Envoy's default (25 ms base).
	Backoff *RetryBackoff
	// StatusCodes are the response codes that condition
	// retriable-status-codes retries (which On then holds).
	StatusCodes []uint32
	// Headers match the responses that condition retriable-headers
	// retries (which On then holds).
	Headers []HeaderMatch
}

// RetryBackoff is the wait before each retry: Envoy picks it at random
// below Base * 2^(retry-1), capped at Max.
type RetryBackoff struct {
	Base time.Duration // >= MinUpstreamDuration
	Max  time.Duration // >= Base; 10 * Base when omitted, as in Envoy
}

// RateLimit is a local token bucket: Burst tokens at most, refilled with
// Requests tokens every Per. With By, each client (each value of what By
// names) has its own bucket.
type RateLimit struct {
	Requests uint32
	Per      time.Duration // >= MinRateLimitInterval
	Burst    uint32        // Requests when omitted
	// By is what gives a request its bucket (RateLimitBys); "": one bucket
	// for the route. Requests without the header share one bucket.
	By     string
	Header string // lowercase; set when By is RateLimitByHeader
	// Clients bounds the buckets Envoy keeps (the least recently used
	// goes); DefaultRateLimitClients when By is set, else 0.
	Clients uint32
	// Shadow counts the requests that would be limited, in Envoy's stats,
	// and forwards them all.
	Shadow bool
	// Headers adds x-ratelimit-limit, -remaining and -reset to responses.
	Headers bool
}

// Certificate is a TLS certificate and private key read from files.
type Certificate struct {
	Pos  Pos // the line of its name
	Name string

	CertFile, KeyFile, CAFile string // resolved paths; CAFile is "" if not set

	CertPEM []byte
	KeyPEM  Secret // never printed
	CAPEM   []byte // nil if no caFile

	// DNSNames and NotAfter come from the leaf certificate, for SNI and
	// expiry reporting.
	DNSNames []string
	NotAfter time.Time
}

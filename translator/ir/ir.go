// Package ir is Switchyard's intermediate representation: what one proxy
// group's Envoys should be configured with, in plain Go values that know
// neither Consul nor Envoy's protos.
//
// The translator builds it from a registry snapshot and a policy set; the
// envoy package turns it into xDS resources. It is flat and has yaml tags so
// a golden test's input is a file a person can read. A Config is immutable
// once built.
package ir

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Config is everything one proxy group (Envoy's node.cluster) is served.
// Slices are sorted by name so output is deterministic.
type Config struct {
	Group     string     `json:"group"`
	Listeners []Listener `json:"listeners,omitempty"`
	// Clusters and their endpoints come from this one list: every cluster a
	// route names is here exactly once, with its endpoints.
	Clusters []Cluster `json:"clusters,omitempty"`
	Secrets  []Secret  `json:"secrets,omitempty"`
	// Mesh, when set, is what the group's routes through the Connect mesh
	// need: the group's leaf certificate, the CA roots, and one cluster per
	// service reached through its sidecars. Nil when no route can use it.
	Mesh *EdgeMesh `json:"mesh,omitempty"`
}

// EdgeMesh is a proxy group's part in the Connect mesh: it calls services
// through their sidecars as a sidecar's upstream does, presenting its own
// leaf certificate (so intentions name Leaf.Service as the source).
type EdgeMesh struct {
	Leaf  MeshLeaf  `json:"leaf"`
	Roots MeshRoots `json:"roots"`
	// Clusters are sorted by SNI, one per service; their Timeout, Retries
	// and Split are never set (the route's own apply).
	Clusters []MeshCluster `json:"clusters,omitempty"`
}

// validate checks the group's mesh part.
func (m *EdgeMesh) validate() error {
	var errs []error
	if !ValidMeshName(m.Leaf.Service) {
		errs = append(errs, fmt.Errorf("mesh: leaf of service %q, not a service name", m.Leaf.Service))
	}
	if m.Leaf.CertPEM == "" || m.Leaf.KeyPEM == "" {
		errs = append(errs, errors.New("mesh: leaf certificate or key missing"))
	}
	shared := Mesh{Roots: m.Roots, Clusters: m.Clusters}
	errs = append(errs, shared.Validate())
	for _, c := range m.Clusters {
		if c.Timeout != nil || c.Retries != nil || len(c.Split) > 0 {
			errs = append(errs, fmt.Errorf("mesh cluster %q: the edge applies its routes' timeout, retries and split, not the cluster's", c.SNI))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the invariants the envoy builders rely on.
func (c *Config) Validate() error {
	var errs []error
	if c.Group == "" {
		errs = append(errs, errors.New("config: empty group"))
	}
	meshClusters := map[string]bool{}
	if c.Mesh != nil {
		errs = append(errs, c.Mesh.validate())
		for _, mc := range c.Mesh.Clusters {
			meshClusters[mc.SNI] = true
		}
	}
	clusters := map[string]bool{}
	for _, cl := range c.Clusters {
		key := clusterKey(cl.Service, cl.Subset)
		if clusters[key] {
			errs = append(errs, fmt.Errorf("cluster %q subset %q: defined twice", cl.Service, cl.Subset))
		}
		// Envoy names both kinds by these keys: one would replace the other.
		if meshClusters[cl.Service] {
			errs = append(errs, fmt.Errorf("cluster %q (%s): also the name of a mesh cluster", cl.Service, cl.Source))
		}
		clusters[key] = true
		errs = append(errs, cl.Validate())
	}
	secrets := map[string]bool{}
	cas := map[string]bool{}
	for _, s := range c.Secrets {
		secrets[s.Name] = true
		cas[s.Name] = s.CAPEM != ""
	}
	limitIDs := map[string]bool{}
	for _, l := range c.Listeners {
		errs = append(errs, l.Validate(clusters, meshClusters, secrets))
		errs = append(errs, l.validateGlobalRateLimits(clusters, limitIDs))
		if l.TLS != nil && l.TLS.ClientCA != "" && !cas[l.TLS.ClientCA] {
			errs = append(errs, fmt.Errorf("listener %q: client CA %q: no secret with a CA", l.Name, l.TLS.ClientCA))
		}
	}
	return errors.Join(errs...)
}

// Listener is one address and port an Envoy listens on.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// Source is the policy file and line the listener came from, for
	// operators (a NACK of it names this line).
	Source string `json:"source,omitempty"`
	// TLS, when set, terminates TLS with these secrets; Envoy picks among
	// them by SNI.
	TLS *TLS `json:"tls,omitempty"`
	// WebSocket allows WebSocket upgrades on every route; otherwise only
	// routes that set WebSocket allow them.
	WebSocket bool `json:"websocket,omitempty"`
	// MaxRequestHeadersKB bounds a request's headers (Envoy answers 431
	// beyond it); 0: Envoy's default.
	MaxRequestHeadersKB uint32 `json:"maxRequestHeadersKB,omitempty"`
	// XFFTrustedHops is how many proxies in front append to
	// X-Forwarded-For, so that Envoy takes the client's address from it;
	// 0: the connection's peer.
	XFFTrustedHops uint32 `json:"xffTrustedHops,omitempty"`
	// RateLimitResponse is the body of 429 answers to rate-limited
	// requests; nil: Envoy's.
	RateLimitResponse *RateLimitResponse `json:"rateLimitResponse,omitempty"`
	// ExtAuthz and JWT check the listener's requests (auth.go); nil:
	// none.
	ExtAuthz     *ExtAuthz     `json:"extAuthz,omitempty"`
	JWT          *JWT          `json:"jwt,omitempty"`
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
	// AccessLog is the listener's request log; nil: none.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// Tracing sends spans of the listener's requests to a collector; nil:
	// none.
	Tracing *Tracing `json:"tracing,omitempty"`
	// RateLimitService counts the global limits of the listener's hosts
	// and routes; nil: the group has none.
	RateLimitService *RateLimitService `json:"rateLimitService,omitempty"`
}

// TracingCluster names the cluster of a group's tracing collector. A
// Consul service name (letters, digits, '_', '.', '-') never has a ':', so
// it cannot clash with a service's cluster.
const TracingCluster = "switchyard:tracing"

// Tracing is OpenTelemetry tracing over OTLP/gRPC to the collector behind
// Cluster.
type Tracing struct {
	Cluster     string `json:"cluster"`
	Sampling    uint32 `json:"sampling"` // percent of requests
	ServiceName string `json:"serviceName"`
}

// AccessLog is where and how Envoy logs each request.
type AccessLog struct {
	// Path is "stdout", "stderr" or an absolute file path.
	Path string `json:"path"`
	// Format is "json" (Switchyard's fields) or "text" (Envoy's default).
	Format string `json:"format"`
}

// clusterKey identifies a cluster in Validate's maps: its service and
// subset (a space cannot occur in a service name).
func clusterKey(service, subset string) string { return service + " " + subset }

// Validate checks the listener's references: to clusters by service and
// subset (clusterKey), mesh clusters by SNI, and secrets by name.
func (l *Listener) Validate(clusters, meshClusters, secrets map[string]bool) error {
	var errs []error
	if l.Port == 0 || l.Port > 65535 {
		errs = append(errs, fmt.Errorf("listener %q: port %d out of range", l.Name, l.Port))
	}
	if l.Tracing != nil && !clusters[clusterKey(l.Tracing.Cluster, "")] {
		errs = append(errs, fmt.Errorf("listener %q: tracing to unknown cluster %q", l.Name, l.Tracing.Cluster))
	}
	if l.TLS != nil {
		if len(l.TLS.Secrets) == 0 {
			errs = append(errs, fmt.Errorf("listener %q: tls without secrets", l.Name))
		}
		for _, s := range l.TLS.Secrets {
			if !secrets[s] {
				errs = append(errs, fmt.Errorf("listener %q: unknown secret %q", l.Name, s))
			}
		}
	}
	if l.MaxRequestHeadersKB > MaxRequestHeadersKB {
		errs = append(errs, fmt.Errorf("listener %q: maxRequestHeadersKB %d above %d", l.Name, l.MaxRequestHeadersKB, MaxRequestHeadersKB))
	}
	errs = append(errs, l.validateAuth(clusters))
	for _, vh := range l.VirtualHosts {
		for _, r := range vh.Routes {
			if r.MaxRequestBytes > 0 && (r.WebSocket || l.WebSocket) {
				errs = append(errs, fmt.Errorf("listener %q route %q: a body limit on a WebSocket route", l.Name, r.Name))
			}
			if r.RateLimit != nil {
				if err := r.RateLimit.validate(); err != nil {
					errs = append(errs, fmt.Errorf("listener %q route %q: %w", l.Name, r.Name, err))
				}
			}
			if r.IPAccess != nil {
				if err := r.IPAccess.validate(); err != nil {
					errs = append(errs, fmt.Errorf("listener %q route %q: %w", l.Name, r.Name, err))
				}
			}
			if err := r.validateAction(); err != nil {
				errs = append(errs, fmt.Errorf("listener %q %w", l.Name, err))
			}
			for _, m := range r.Mirrors {
				if !clusters[clusterKey(m.Service, "")] || m.PerMillion == 0 || m.PerMillion > 1_000_000 {
					errs = append(errs, fmt.Errorf("listener %q route %q: mirror to %q at %d per million: no such cluster, or out of range", l.Name, r.Name, m.Service, m.PerMillion))
				}
			}
			if r.Hash != nil {
				if err := r.Hash.validate(); err != nil {
					errs = append(errs, fmt.Errorf("listener %q route %q: %w", l.Name, r.Name, err))
				}
				if len(r.Backends) > 1 {
					errs = append(errs, fmt.Errorf("listener %q route %q: a hash policy on a split", l.Name, r.Name))
				}
			}
			for _, b := range r.Backends {
				switch {
				case b.MeshCluster != "" && !meshClusters[b.MeshCluster]:
					errs = append(errs, fmt.Errorf("listener %q route %q: no mesh cluster %q for service %q", l.Name, r.Name, b.MeshCluster, b.Service))
				case b.MeshCluster != "" && b.Subset != "":
					errs = append(errs, fmt.Errorf("listener %q route %q: service %q through the mesh with subset %q", l.Name, r.Name, b.Service, b.Subset))
				case b.MeshCluster == "" && !clusters[clusterKey(b.Service, b.Subset)]:
					errs = append(errs, fmt.Errorf("listener %q route %q: no cluster for service %q subset %q", l.Name, r.Name, b.Service, b.Subset))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// TLS is downstream TLS termination.
type TLS struct {
	Secrets []string `json:"secrets"`
	// ClientCA, when set, names the secret whose CA verifies client
	// certificates; clients must then present one (mutual TLS).
	ClientCA string `json:"clientCA,omitempty"`
}

// VirtualHost groups routes by the request's Host header.
type VirtualHost struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	// HTTPSRedirect answers every request that did not come over TLS with
	// a 301 redirect to the same URL with https.
	HTTPSRedirect bool `json:"httpsRedirect,omitempty"`
	// RequestHeaders and ResponseHeaders apply to every route of the host.
	RequestHeaders  *Headers `json:"requestHeaders,omitempty"`
	ResponseHeaders *Headers `json:"responseHeaders,omitempty"`
	// GlobalRateLimits apply to every forwarded request of the host, in
	// addition to its route's own.
	GlobalRateLimits []GlobalRateLimit `json:"globalRateLimits,omitempty"`
	Routes           []Route           `json:"routes,omitempty"`
}

// Route matches requests and sends them to one or more backends, or
// answers them itself. Routes are ordered: the first match wins.
type Route struct {
	Name  string `json:"name"`
	Match Match  `json:"match"`
	// Backends receive the traffic, by weight when there are several.
	Backends []Backend `json:"backends,omitempty"`
	// Unavailable, when set, says why the route has no backends: it
	// answers 503 without forwarding (a route through the mesh before
	// Consul has issued the group's certificate). Operators read it in the
	// IR; Envoy gets the status only.
	Unavailable string `json:"unavailable,omitempty"`
	// Redirect, when set, answers every request with a redirect.
	Redirect *Redirect `json:"redirect,omitempty"`
	// DirectResponse, when set, answers every request with a fixed status
	// and body.
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`
	// Rewrite changes the path or host of what is forwarded; nil: none.
	Rewrite *Rewrite `json:"rewrite,omitempty"`
	// RequestHeaders changes what is forwarded, ResponseHeaders what the
	// client gets; a route's changes win over its host's.
	RequestHeaders  *Headers `json:"requestHeaders,omitempty"`
	ResponseHeaders *Headers `json:"responseHeaders,omitempty"`
	// CORS is the route's CORS policy (its own, else its host's); nil:
	// none.
	CORS *CORS `json:"cors,omitempty"`
	// Mirrors copy a share of the requests to other services' clusters.
	Mirrors []Mirror `json:"mirrors,omitempty"`
	// Fault injects delays or errors; nil: none.
	Fault *Fault `json:"fault,omitempty"`
	// Timeout is the whole request's timeout; nil leaves Envoy's default and
	// zero disables it.
	Timeout   *Duration  `json:"timeout,omitempty"`
	Retries   *Retries   `json:"retries,omitempty"`
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// GlobalRateLimits are counted by the group's rate limit service.
	GlobalRateLimits []GlobalRateLimit `json:"globalRateLimits,omitempty"`
	// Hash is what the route hashes requests on, for its one backend's
	// consistent-hash load balancing (sticky sessions); nil: nothing.
	Hash *HashPolicy `json:"hash,omitempty"`
	// WebSocket allows WebSocket upgrades on this route.
	WebSocket bool `json:"websocket,omitempty"`
	// MaxRequestBytes bounds the request body, which Envoy then buffers
	// whole (413 beyond it); 0: no bound. Never on a WebSocket route.
	MaxRequestBytes uint32 `json:"maxRequestBytes,omitempty"`
	// IPAccess admits requests by client address; nil: any.
	IPAccess *IPAccess `json:"ipAccess,omitempty"`
	// ExtAuthzOff skips the listener's external authorization.
	ExtAuthzOff bool `json:"extAuthzOff,omitempty"`
	// JWTRequire lists the JWT providers (of the listener) one of whose
	// valid tokens the route's requests need; nil: none.
	JWTRequire []string `json:"jwtRequire,omitempty"`
	// Source is the policy file and line the route came from, for operators.
	Source string `json:"source,omitempty"`
}

// Match selects requests. Exactly one path field is set.
type Match struct {
	PathPrefix string `json:"pathPrefix,omitempty"`
	Path       string `json:"path,omitempty"`
	PathRegex  string `json:"pathRegex,omitempty"`
	// CaseInsensitive matches PathPrefix or Path whatever the case.
	CaseInsensitive bool `json:"caseInsensitive,omitempty"`
	// Methods matches any of them; nil: any method.
	Methods     []string          `json:"methods,omitempty"`
	Headers     []HeaderMatch     `json:"headers,omitempty"`
	QueryParams []QueryParamMatch `json:"queryParams,omitempty"`
}

// HeaderMatch matches one request header. Exactly one of Exact, Prefix,
// Suffix, Contains, Regex, Present and Absent is set.
type HeaderMatch struct {
	Name     string `json:"name"`
	Exact    string `json:"exact,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	Suffix   string `json:"suffix,omitempty"`
	Contains string `json:"contains,omitempty"`
	Regex    string `json:"regex,omitempty"`
	Present  bool   `json:"present,omitempty"`
	Absent   bool   `json:"absent,omitempty"`
	// Invert matches a present header whose value does not match.
	Invert bool `json:"invert,omitempty"`
}

// QueryParamMatch matches one query parameter. Exactly one of Exact,
// Regex and Present is set.
type QueryParamMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
}

// Backend is a weighted reference to a cluster, by its service, or to a
// mesh cluster when the service is reached through its sidecars.
type Backend struct {
	Service string `json:"service"`
	// Subset, when set, is the label of the Cluster.Subset the backend's
	// share goes to; "": the service's whole cluster.
	Subset string `json:"subset,omitempty"`
	Weight uint32 `json:"weight"`
	// MeshCluster, when set, names the Config.Mesh cluster (by SNI) that
	// reaches the service through its sidecars, instead of its cluster.
	MeshCluster string `json:"meshCluster,omitempty"`
}

// Retries is a route's retry policy.
type Retries struct {
	Attempts      uint32   `json:"attempts"`
	On            []string `json:"on"`
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	// Backoff spaces retries out; nil: Envoy's default.
	Backoff *RetryBackoff `json:"backoff,omitempty"`
	// StatusCodes and Headers (response header matches) are what the
	// retriable-status-codes and retriable-headers conditions retry.
	StatusCodes []uint32      `json:"statusCodes,omitempty"`
	Headers     []HeaderMatch `json:"headers,omitempty"`
}

// RetryBackoff is the wait before each retry: random below Base *
// 2^(retry-1), at most Max.
type RetryBackoff struct {
	Base Duration `json:"base"`
	Max  Duration `json:"max"`
}

// RateLimit is a local token bucket: Requests tokens every Per, holding at
// most Burst. Requests beyond it are answered 429. With By, each client
// has its own bucket.
type RateLimit struct {
	Requests uint32   `json:"requests"`
	Per      Duration `json:"per"`
	Burst    uint32   `json:"burst"`
	// By is what gives a request its bucket: RateLimitByClientIP,
	// RateLimitByHeader (Header's value) or RateLimitByPath; "": one.
	By     string `json:"by,omitempty"`
	Header string `json:"header,omitempty"`
	// Clients bounds the buckets kept with By.
	Clients uint32 `json:"clients,omitempty"`
	// Shadow counts limited requests without refusing them.
	Shadow bool `json:"shadow,omitempty"`
	// Headers adds x-ratelimit-* headers to responses.
	Headers bool `json:"headers,omitempty"`
}

// Cluster is an upstream Consul service and its endpoints. The envoy
// package names the cluster after the service.
type Cluster struct {
	Service string `json:"service"`
	// Subset, when set, labels the instances of the service this cluster
	// holds, chosen by their Consul tags and meta ("tag=v2",
	// "not(tag=v2)"); "": all of them. A service has one cluster per
	// subset its routes name.
	Subset string `json:"subset,omitempty"`
	// Source is the policy file and line of the first route to the service.
	Source string `json:"source,omitempty"`
	// DNS is set when some instance's address is a host name, not an IP:
	// Envoy resolves the names itself (a STRICT_DNS cluster with the
	// endpoints inline) and the cluster has no ClusterLoadAssignment.
	DNS bool `json:"dns,omitempty"`
	// HTTP2 makes Envoy speak HTTP/2 (prior knowledge) to the instances,
	// as gRPC servers need; otherwise HTTP/1.1.
	HTTP2 bool `json:"http2,omitempty"`
	// LB is the load balancing policy (LBRoundRobin, ...); "": round robin.
	LB string `json:"lb,omitempty"`
	// SlowStart ramps a new endpoint's share up over this window (round
	// robin and least request only); nil: off.
	SlowStart *Duration `json:"slowStart,omitempty"`
	// ConnectTimeout and IdleTimeout (of upstream connections; 0: never)
	// are nil to keep the envoy package's defaults.
	ConnectTimeout   *Duration         `json:"connectTimeout,omitempty"`
	IdleTimeout      *Duration         `json:"idleTimeout,omitempty"`
	CircuitBreakers  *CircuitBreakers  `json:"circuitBreakers,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	HealthCheck      *HealthCheck      `json:"healthCheck,omitempty"`
	Endpoints        []Endpoint        `json:"endpoints,omitempty"`
}

// Validate checks the cluster's settings and endpoints.
func (c *Cluster) Validate() error {
	errs := []error{c.validateUpstream()}
	for _, e := range c.Endpoints {
		if e.Address == "" || e.Port == 0 || e.Port > 65535 {
			errs = append(errs, fmt.Errorf("cluster %q: endpoint %q: bad address %q port %d", c.Service, e.ID, e.Address, e.Port))
		}
		if !c.DNS && net.ParseIP(e.Address) == nil {
			errs = append(errs, fmt.Errorf("cluster %q: endpoint %q: address %q is not an IP, and the cluster is not a DNS one", c.Service, e.ID, e.Address))
		}
		if e.Weight < 1 || e.Weight > 128 {
			errs = append(errs, fmt.Errorf("cluster %q: endpoint %q: weight %d outside 1..128", c.Service, e.ID, e.Weight))
		}
	}
	return errors.Join(errs...)
}

// Health is an endpoint's health as Envoy sees it.
type Health string

// Endpoint health states.
const (
	Healthy   Health = "healthy"
	Unhealthy Health = "unhealthy"
	Draining  Health = "draining"
)

// Endpoint is one instance of a service.
type Endpoint struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Port     uint32 `json:"port"`
	Health   Health `json:"health"`
	Weight   uint32 `json:"weight"`
	Locality string `json:"locality,omitempty"` // the Consul datacenter
}

// Secret is a TLS certificate served over SDS.
type Secret struct {
	Name    string     `json:"name"`
	Source  string     `json:"source,omitempty"` // the Certificate's policy file and line
	CertPEM string     `json:"certPEM"`
	KeyPEM  PrivateKey `json:"keyPEM"`
	CAPEM   string     `json:"caPEM,omitempty"`
}

// PrivateKey is PEM private key material. It prints and marshals as
// "[redacted]" so it never reaches a log, an error or a debug page; Envoy
// builders read it with Reveal.
type PrivateKey string

const redacted = "[redacted]"

// Reveal returns the key material itself.
func (k PrivateKey) Reveal() string { return string(k) }

// String implements fmt.Stringer.
func (k PrivateKey) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (k PrivateKey) GoString() string { return redacted }

// MarshalText implements encoding.TextMarshaler (JSON and YAML use it).
func (k PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText reads key material, so golden inputs can carry a test key.
func (k *PrivateKey) UnmarshalText(b []byte) error {
	*k = PrivateKey(b)
	return nil
}

// Duration is a time.Duration written as "2s" in JSON and YAML, so IR files
// read like the policy they came from.
type Duration struct{ time.Duration }

// D makes a Duration.
func D(d time.Duration) Duration { return Duration{d} }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

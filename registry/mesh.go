package registry

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"time"
)

// Protocols a sidecar or upstream may declare in Proxy.Config["protocol"].
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// Sidecar is one Connect sidecar proxy registration (Consul service Kind
// "connect-proxy"): the Envoy that runs next to one service instance.
type Sidecar struct {
	ID        string // the proxy's service ID, e.g. web-1-sidecar-proxy; an Envoy's node.id
	Name      string // the proxy's service name, e.g. web-sidecar-proxy
	Service   string // Proxy.DestinationServiceName: the service it fronts, e.g. web
	ServiceID string // Proxy.DestinationServiceID: the instance it fronts, e.g. web-1
	Node      string
	// Address and Port are the public (inbound, mutual TLS) listener:
	// the proxy's service address (else its node's) and port.
	Address    string
	Port       int
	Datacenter string
	// LocalServiceAddress and LocalServicePort are where the local app
	// listens (Consul's default address is 127.0.0.1, as here).
	LocalServiceAddress string
	LocalServicePort    int
	// Protocol is Proxy.Config["protocol"], lower case: http, http2, grpc
	// or tcp (the default, as in Consul). An unknown value is tcp, with a
	// Problem saying so.
	Protocol string
	// Config is Proxy.Config with every value as a string (numbers and
	// booleans formatted with fmt; nested values left out).
	Config    map[string]string
	Upstreams []Upstream // in registration order
	// Health is the proxy's own checks and its node's. Consul's default
	// sidecar checks include an alias of the service instance's checks, so
	// with them a failing instance makes its sidecar Unhealthy too.
	Health Health
	// Problems are what Switchyard cannot honour in this registration (an
	// unknown protocol, a duplicate ID on another node), one sentence each.
	// An upstream's own problem is in Upstream.Problem.
	Problems []string
}

// Upstream is one entry of a sidecar's Proxy.Upstreams: a local listener
// that forwards to a destination.
type Upstream struct {
	DestinationType string // "service" (Consul's default) or "prepared_query"
	DestinationName string
	Datacenter      string // "" = the local one
	// LocalBindAddress and LocalBindPort are the outbound listener; the
	// address defaults to 127.0.0.1 as in Consul.
	LocalBindAddress string
	LocalBindPort    int
	// Protocol is the upstream's Config["protocol"], lower case, or ""
	// when unset (then the destination's protocol applies).
	Protocol string
	Config   map[string]string // Config with every value as a string, as Sidecar.Config
	// Problem, when not "", says why Switchyard cannot serve this upstream
	// (a prepared query, another datacenter, no bind port, a bind port
	// used twice): the control plane skips it, the others keep working.
	Problem string
}

// Endpoint is one way into a destination service: a sidecar of one of its
// instances (or a Connect-native instance itself), from
// /v1/health/connect/<service>.
type Endpoint struct {
	ProxyID   string // the sidecar's service ID ("" for a Connect-native instance)
	ServiceID string // the destination instance's service ID
	Node      string
	// Address and Port are the sidecar's public listener (a native
	// instance's own address and port).
	Address    string
	Port       int
	Datacenter string
	Native     bool // a Connect-native instance, no sidecar
	// ProxyHealth aggregates the sidecar's checks and its node's (with
	// Consul's default sidecar checks that includes an alias of the
	// instance's checks); ServiceHealth is the destination instance's own
	// (from /v1/health/service/<name>; Unhealthy when the instance is not
	// registered; a native instance's is its ProxyHealth). Health is the
	// worse of the two: Unhealthy if either is, else Draining if either is.
	// Weight is the sidecar's, as Instance.Weight.
	Health        Health
	ProxyHealth   Health
	ServiceHealth Health
	Weight        int
}

// Usable reports whether the endpoint may take new connections: both the
// sidecar and its service instance pass (or warn).
func (e Endpoint) Usable() bool { return e.Health == Healthy }

// Destination is a service as a mesh caller reaches it: its endpoints,
// sorted by (Node, ProxyID, ServiceID).
type Destination struct {
	Name      string
	Endpoints []Endpoint
}

// KeyPEM is a PEM-encoded private key. It never prints: fmt, slog, JSON,
// text and YAML marshalling all see "[redacted]". Use the bytes directly
// (e.g. string(k) or []byte(k)) only to hand them to Envoy.
type KeyPEM []byte

const redactedText = "[redacted]"

// String returns "[redacted]".
func (KeyPEM) String() string { return redactedText }

// GoString returns "[redacted]".
func (KeyPEM) GoString() string { return redactedText }

// Format writes "[redacted]" for every verb.
func (KeyPEM) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redactedText) }

// LogValue logs "[redacted]".
func (KeyPEM) LogValue() slog.Value { return slog.StringValue(redactedText) }

// MarshalJSON returns the JSON string "[redacted]".
func (KeyPEM) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedText + `"`), nil }

// MarshalText returns "[redacted]".
func (KeyPEM) MarshalText() ([]byte, error) { return []byte(redactedText), nil }

// MarshalYAML returns "[redacted]".
func (KeyPEM) MarshalYAML() (any, error) { return redactedText, nil }

// Leaf is a service's Connect CA leaf certificate: the identity every
// sidecar of the service presents.
type Leaf struct {
	Service      string
	SerialNumber string
	CertPEM      string
	KeyPEM       KeyPEM
	SPIFFE       string // the certificate's URI SAN, spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>
	NotBefore    time.Time
	NotAfter     time.Time
}

// LogValue logs the leaf without its key.
func (l Leaf) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("service", l.Service),
		slog.String("serial", l.SerialNumber),
		slog.String("spiffe", l.SPIFFE),
		slog.Time("not_after", l.NotAfter),
	)
}

// Roots are the Connect CA's trusted roots. During a CA rotation there
// are several (the new active one and the old ones it cross-signed): a
// peer's certificate is trusted if any root verifies it.
type Roots struct {
	TrustDomain  string // e.g. 1d2c...e4.consul
	ActiveRootID string
	Roots        []Root // sorted by ID
}

// Root is one CA root certificate.
type Root struct {
	ID       string
	Name     string
	CertPEM  string
	Active   bool
	NotAfter time.Time
}

// MeshSnapshot is the mesh as Consul describes it at one moment: every
// sidecar, the endpoints of every destination a sidecar's upstream (or
// MeshWatcher.WantDestinations) names, the leaf of every service that has
// a sidecar (or was named in MeshWatcher.WantLeaves), the CA roots, and
// every service-intentions entry with the default decision.
//
// A MeshSnapshot is immutable once published: never modify it or anything
// it points to, because the next one shares every unchanged part with it.
type MeshSnapshot struct {
	sidecars map[string]*Sidecar     // by proxy ID
	dests    map[string]*Destination // by name; present once its first answer arrived
	leaves   map[string]*Leaf        // by service; present once a leaf was fetched
	roots    *Roots
	// intentions are the service-intentions entries by name ("*" too);
	// intentionDefault is "allow" or "deny".
	intentions       map[string]*Intentions
	intentionDefault string
}

// Sidecar returns the sidecar with the given proxy service ID.
func (s *MeshSnapshot) Sidecar(proxyID string) (Sidecar, bool) {
	if s == nil {
		return Sidecar{}, false
	}
	sc, ok := s.sidecars[proxyID]
	if !ok {
		return Sidecar{}, false
	}
	return *sc, true
}

// SidecarFor returns the sidecar of the given service instance ID (what
// `--sidecar-for web-1` names). With several (instances with the same ID
// on different nodes), the first by node name.
func (s *MeshSnapshot) SidecarFor(serviceID string) (Sidecar, bool) {
	var found *Sidecar
	if s != nil {
		for _, sc := range s.sidecars {
			if sc.ServiceID == serviceID && (found == nil || sc.Node < found.Node) {
				found = sc
			}
		}
	}
	if found == nil {
		return Sidecar{}, false
	}
	return *found, true
}

// SidecarIDs returns every sidecar's proxy ID, sorted.
func (s *MeshSnapshot) SidecarIDs() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.sidecars))
}

// Destination returns the named destination's endpoints. ok is false when
// the destination is not watched or its first answer has not arrived (a
// destination with no endpoints is present, with none).
func (s *MeshSnapshot) Destination(name string) (d Destination, ok bool) {
	if s == nil {
		return Destination{}, false
	}
	p, ok := s.dests[name]
	if !ok {
		return Destination{}, false
	}
	return *p, true
}

// DestinationNames returns the watched destinations that have answered,
// sorted.
func (s *MeshSnapshot) DestinationNames() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.dests))
}

// Leaf returns the service's leaf certificate: the last one fetched
// successfully (a failed renewal keeps it). ok is false when none was ever
// fetched.
func (s *MeshSnapshot) Leaf(service string) (Leaf, bool) {
	if s == nil {
		return Leaf{}, false
	}
	l, ok := s.leaves[service]
	if !ok {
		return Leaf{}, false
	}
	return *l, true
}

// LeafServices returns the services with a leaf, sorted.
func (s *MeshSnapshot) LeafServices() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.leaves))
}

// Roots returns the CA roots (ok is false before the first answer; a
// published snapshot always has them).
func (s *MeshSnapshot) Roots() (Roots, bool) {
	if s == nil || s.roots == nil {
		return Roots{}, false
	}
	return *s.roots, true
}

// Intentions returns the intentions that apply to calls to destination:
// its own service-intentions entry merged with the "*" entry's, by
// Consul's precedence (see Intentions). ok is false when neither entry
// exists: every caller then gets IntentionDefault.
func (s *MeshSnapshot) Intentions(destination string) (in Intentions, ok bool) {
	if s == nil {
		return Intentions{}, false
	}
	own, wild := s.intentions[destination], s.intentions[WildcardName]
	if own == nil && wild == nil {
		return Intentions{}, false
	}
	return mergeIntentions(destination, own, wild), true
}

// IntentionNames returns the names of the service-intentions entries
// ("*" included), sorted.
func (s *MeshSnapshot) IntentionNames() []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(s.intentions))
}

// IntentionDefault is the decision, "allow" or "deny", for a caller that
// no intention matches (and for a request no L7 permission of its
// intention matches), as Consul decides it: allow when the agent's ACLs
// are disabled, else acl.default_policy. It is read from the agent's
// /v1/agent/self (DebugConfig.ACLsEnabled and the ACL default policy).
// When the token may not read it (no agent:read) ACLs are on, and the
// X-Consul-Default-ACL-Policy header of Consul's answers tells the policy;
// when it cannot be read at all it is "deny", logged once with the reason.
// It is read again whenever the intentions watch suspects the agent
// restarted.
func (s *MeshSnapshot) IntentionDefault() string {
	if s == nil || s.intentionDefault == "" {
		return IntentionDeny
	}
	return s.intentionDefault
}

// Equal reports whether two snapshots hold the same sidecars,
// destinations, leaves, roots and intentions.
func (s *MeshSnapshot) Equal(o *MeshSnapshot) bool {
	if s == nil || o == nil {
		return s == o
	}
	return mapsEqualDeep(s.sidecars, o.sidecars) && mapsEqualDeep(s.dests, o.dests) &&
		mapsEqualDeep(s.leaves, o.leaves) && reflect.DeepEqual(s.roots, o.roots) && intentionsEqual(s, o)
}

func mapsEqualDeep[T any](a, b map[string]*T) bool {
	return maps.EqualFunc(a, b, func(x, y *T) bool { return x == y || reflect.DeepEqual(x, y) })
}

func sortEndpoints(eps []Endpoint) {
	slices.SortFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.ProxyID, b.ProxyID), cmp.Compare(a.ServiceID, b.ServiceID))
	})
}

func deepEqual[T any](a, b *T) bool { return reflect.DeepEqual(a, b) }

// MeshData is what NewMeshSnapshot makes a snapshot of.
type MeshData struct {
	Sidecars     []Sidecar
	Destinations []Destination
	Leaves       []Leaf
	Roots        *Roots
	Intentions   []Intentions // by Destination; "*" applies to every service
	// IntentionDefault is "allow" or "deny" ("" is deny).
	IntentionDefault string
}

// NewMeshSnapshot builds a snapshot from data, as the MeshWatcher would
// publish it: for tests and tools that translate a mesh without Consul.
func NewMeshSnapshot(data MeshData) *MeshSnapshot {
	s := &MeshSnapshot{
		sidecars: map[string]*Sidecar{}, dests: map[string]*Destination{},
		leaves: map[string]*Leaf{}, intentions: map[string]*Intentions{},
		roots: data.Roots, intentionDefault: IntentionDeny,
	}
	if data.IntentionDefault == IntentionAllow {
		s.intentionDefault = IntentionAllow
	}
	for i := range data.Sidecars {
		sc := data.Sidecars[i]
		s.sidecars[sc.ID] = &sc
	}
	for i := range data.Destinations {
		d := data.Destinations[i]
		sortEndpoints(d.Endpoints)
		s.dests[d.Name] = &d
	}
	for i := range data.Leaves {
		l := data.Leaves[i]
		s.leaves[l.Service] = &l
	}
	for i := range data.Intentions {
		in := data.Intentions[i]
		s.intentions[in.Destination] = &in
	}
	return s
}

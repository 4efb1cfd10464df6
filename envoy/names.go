package envoy

import (
	"net"
	"strconv"
	"strings"
)

// Every Envoy resource and stat name Switchyard generates is built here.
// Names are a contract: operators' dashboards and alerts key on them
// (cluster.<name>.upstream_rq_5xx, http.<stat prefix>.downstream_rq_2xx), so
// changing a format here is a breaking change; names_test.go pins them.

// XDSClusterName is the bootstrap's static cluster that reaches Switchyard.
const XDSClusterName = "switchyard_xds"

// ClusterName names the cluster, and its ClusterLoadAssignment, for a Consul
// service. It is the service name itself, so Envoy's stats read
// cluster.web.upstream_rq_200.
func ClusterName(service string) string { return service }

// SubsetClusterName names the cluster, and its ClusterLoadAssignment, for
// the instances of a Consul service in a subset (chosen by tags and meta):
// "web~tag=v2", "web~not(tag=v2)". '~' never occurs in a service name, so
// it cannot collide with a service's own cluster. "" is the whole service.
func SubsetClusterName(service, subset string) string {
	if subset == "" {
		return ClusterName(service)
	}
	return service + "~" + subset
}

// ListenerName names a listener from its policy name.
func ListenerName(listener string) string { return listener }

// RouteConfigName names the RouteConfiguration a listener fetches over RDS.
func RouteConfigName(listener string) string { return listener }

// StatPrefix is the HTTP connection manager's stat prefix for a listener.
func StatPrefix(listener string) string { return listener }

// SecretName names the SDS secret for a policy Certificate.
func SecretName(certificate string) string { return certificate }

// LocalRateLimitStatPrefix prefixes a route's local rate limit stats:
// <prefix>.http_local_rate_limit.rate_limited. Route names are unique only
// within a virtual host, so the host (its first domain) is part of it, with
// dots and wildcards replaced: a dot would split the stat name.
func LocalRateLimitStatPrefix(listener, virtualHost, route string) string {
	host := strings.NewReplacer(".", "_", "*", "any", ":", "_").Replace(virtualHost)
	return "ratelimit_" + listener + "_" + host + "_" + route
}

// CASecretName names the SDS validation context holding a certificate's CA,
// used to verify client certificates. Policy names cannot contain a dot, so
// it never collides with a certificate's own secret.
func CASecretName(certificate string) string { return certificate + ".ca" }

// Sidecar mesh names. Where Consul's own xDS server has a name for the same
// thing, it is kept, so an operator moving a Connect sidecar from Consul to
// Switchyard keeps the stats their dashboards read (cluster.local_app.*,
// listener public_listener:...).

// LocalAppClusterName is a sidecar's cluster to its own application. Every
// sidecar has exactly one, in its own snapshot.
const LocalAppClusterName = "local_app"

// PublicListenerName names a sidecar's inbound listener, on its public
// address and port (Consul's format).
func PublicListenerName(address string, port uint32) string {
	return "public_listener:" + hostPort(address, port)
}

// PublicStatPrefix is the stat prefix of a sidecar's inbound TCP proxy or
// HTTP connection manager: tcp.public_listener.*, http.public_listener.*.
const PublicStatPrefix = "public_listener"

// PublicRouteConfigName names the inbound RouteConfiguration of an HTTP
// sidecar, to its local application, with its intentions. It is in the
// sidecar's own snapshot.
const PublicRouteConfigName = "public_listener"

// PublicVirtualHostName names the one virtual host of an HTTP sidecar's
// inbound routes (vhost.local_app.* stats).
const PublicVirtualHostName = "local_app"

// MeshVirtualHostName names the one virtual host of a destination's shared
// routes.
const MeshVirtualHostName = "upstream"

// IntentionsStatPrefix prefixes a TCP sidecar's network RBAC stats, the
// intention decisions: connect_authz.rbac.allowed, .denied. An HTTP
// sidecar's count under its connection manager: http.public_listener.rbac.*.
const IntentionsStatPrefix = "connect_authz"

// IntentionsL4PolicyName names the RBAC policy holding every source whose
// intention decides the whole connection.
const IntentionsL4PolicyName = "intentions-l4"

// IntentionsL7PolicyName names the RBAC policy of one source's L7
// (per request) intention; source is a service name or "*".
func IntentionsL7PolicyName(source string) string { return "intentions-l7-" + source }

// UpstreamListenerName names a sidecar's outbound listener for one upstream
// (Consul's format: destination:address:port).
func UpstreamListenerName(destination, address string, port uint32) string {
	return destination + ":" + hostPort(address, port)
}

// UpstreamStatPrefix is the stat prefix of an outbound listener's TCP proxy
// or HTTP connection manager: tcp.upstream.api.*.
func UpstreamStatPrefix(destination string) string { return "upstream." + destination }

// MeshClusterName names the cluster, and its ClusterLoadAssignment, of a
// destination service reached through its sidecars: its SNI, as Consul
// names it (api.default.dc1.internal.<trust domain>). The dots keep it apart
// from an edge cluster, which is named after a plain service name.
func MeshClusterName(sni string) string { return sni }

// MeshRouteConfigName names the RouteConfiguration every HTTP caller of a
// destination shares: the destination's SNI, like its cluster.
func MeshRouteConfigName(sni string) string { return sni }

// MeshLeafSecretName is the SDS secret holding a sidecar's own leaf
// certificate and key. It is the same name in every sidecar's snapshot, each
// holding its own service's certificate: so the mesh clusters that present
// it to upstreams are the same resource for every caller, and built once.
// Policy certificate names cannot contain a dot, so it never collides with
// one.
const MeshLeafSecretName = "mesh.leaf"

// MeshRootsSecretName is the SDS validation context holding the Connect
// CA's roots, shared by every sidecar.
const MeshRootsSecretName = "mesh.roots"

// hostPort is address:port, with an IPv6 address in brackets.
func hostPort(address string, port uint32) string {
	return net.JoinHostPort(address, strconv.FormatUint(uint64(port), 10))
}

package envoy

import "strings"

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

package envoy

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
// <prefix>.http_local_rate_limit.rate_limited.
func LocalRateLimitStatPrefix(listener, route string) string {
	return "ratelimit_" + listener + "_" + route
}

// CASecretName names the SDS validation context holding a certificate's CA,
// used to verify client certificates.
func CASecretName(certificate string) string { return certificate + "-ca" }

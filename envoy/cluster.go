package envoy

import (
	"net"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// connectTimeout bounds a new upstream connection. Instances are on the
// same network as their Envoys, so a short timeout fails over quickly.
const connectTimeout = 2 * time.Second

// adsConfig points a resource at the ADS stream it arrived on.
func adsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// cluster builds the cluster for a Consul service. Normally it is an EDS
// cluster, its endpoints in the ClusterLoadAssignment of the same name. A
// service with host names among its addresses gets a STRICT_DNS cluster
// instead, with the same endpoints inline: Envoy resolves each name (every
// 5 s, preferring IPv4) and keeps every address it returns as a host.
func cluster(c *ir.Cluster) *clusterv3.Cluster {
	cl := &clusterv3.Cluster{
		Name:           SubsetClusterName(c.Service, c.Subset),
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
		// Draining instances (Consul maintenance) keep their open requests
		// but get no new ones; unhealthy ones get nothing. Without this,
		// Envoy's default panic threshold (50%) would spread traffic over
		// unhealthy hosts as soon as half of them fail, which is the
		// opposite of what a Consul health check asks for.
		CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{
			HealthyPanicThreshold: &typev3.Percent{Value: 0},
		},
		OutlierDetection: tunedOutlierDetection(c.OutlierDetection),
		CircuitBreakers:  tunedCircuitBreakers(c.CircuitBreakers),
	}
	applyUpstream(cl, c)
	if c.DNS {
		cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		cl.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		cl.LoadAssignment = loadAssignment(c)
		return cl
	}
	cl.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	cl.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()}
	return cl
}

// loadAssignment builds a cluster's endpoints. Every instance is listed,
// with its health: Envoy keeps connections to an unhealthy host warm and
// the status is visible in its admin output, and traffic still avoids it.
func loadAssignment(c *ir.Cluster) *endpointv3.ClusterLoadAssignment {
	byLocality := map[string][]*endpointv3.LbEndpoint{}
	var order []string
	for _, e := range c.Endpoints {
		if _, ok := byLocality[e.Locality]; !ok {
			order = append(order, e.Locality)
		}
		byLocality[e.Locality] = append(byLocality[e.Locality], lbEndpoint(&e))
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: SubsetClusterName(c.Service, c.Subset)}
	for _, loc := range order {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:    &corev3.Locality{Region: loc},
			LbEndpoints: byLocality[loc],
		})
	}
	return cla
}

// lbEndpoint is one instance. Its hostname is the Host a request to it
// directly would carry (hostHeader), which routes with
// rewrite.hostFromUpstream send it (Envoy's auto host rewrite uses the
// hostname, and the DNS resolution of a STRICT_DNS cluster keeps it).
// Envoy's admin output shows it beside the address; the instance ID is in
// the Consul catalog under that address and port.
func lbEndpoint(e *ir.Endpoint) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address:  socketAddress(e.Address, e.Port),
			Hostname: hostHeader(e.Address, e.Port),
		}},
		HealthStatus:        healthStatus(e.Health),
		LoadBalancingWeight: wrapperspb.UInt32(e.Weight),
	}
}

// hostHeader is the Host header for an instance at addr and port: the
// address (an IPv6 one in brackets), and the port unless it is HTTP's 80.
func hostHeader(addr string, port uint32) string {
	if port == 80 {
		if strings.Contains(addr, ":") {
			return "[" + addr + "]"
		}
		return addr
	}
	return net.JoinHostPort(addr, strconv.FormatUint(uint64(port), 10))
}

func healthStatus(h ir.Health) corev3.HealthStatus {
	switch h {
	case ir.Healthy:
		return corev3.HealthStatus_HEALTHY
	case ir.Draining:
		return corev3.HealthStatus_DRAINING
	default:
		return corev3.HealthStatus_UNHEALTHY
	}
}

func socketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// outlierDetection ejects an instance that cannot be reached, before
// Consul's health check notices: three connections in a row that fail
// (refused, timed out, reset) take it out of rotation for 10 s, then 20 s,
// and so on up to 2 min while it keeps failing. Only such local-origin
// failures count; an application's own 5xx never ejects it, and at most
// half of a service's instances are ever ejected, so a service with one
// instance never loses it this way. Together with the routes' retries on
// connect-failure, a crashed instance costs clients nothing.
func outlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		SplitExternalLocalOriginErrors:         true,
		ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(3),
		EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
		EnforcingLocalOriginSuccessRate:        wrapperspb.UInt32(0),
		Consecutive_5Xx:                        wrapperspb.UInt32(0),
		ConsecutiveGatewayFailure:              wrapperspb.UInt32(0),
		EnforcingSuccessRate:                   wrapperspb.UInt32(0),
		EnforcingFailurePercentage:             wrapperspb.UInt32(0),
		Interval:                               durationpb.New(time.Second),
		BaseEjectionTime:                       durationpb.New(10 * time.Second),
		MaxEjectionTime:                        durationpb.New(2 * time.Minute),
		MaxEjectionPercent:                     wrapperspb.UInt32(50),
	}
}

// circuitBreakers replace Envoy's default of 3 concurrent retries per
// cluster, which a busy service overflows the moment an instance crashes
// (every request sent to it is retried; the overflow answers 503), with a
// budget: retries may be up to half of the requests in flight, and at
// least 10. Connection and request limits keep Envoy's defaults (1024
// each).
func circuitBreakers() *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: 50},
			MinRetryConcurrency: wrapperspb.UInt32(10),
		},
	}}}
}

// http2UpstreamOptions makes Envoy speak HTTP/2 to a cluster's hosts, without TLS
// (prior knowledge), as gRPC servers expect; without it Envoy sends
// HTTP/1.1 upstream even when the client spoke HTTP/2.
var http2UpstreamOptions = &httpv3.HttpProtocolOptions{
	UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	},
}

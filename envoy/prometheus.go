package envoy

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Names of the bootstrap's Prometheus listener and of the cluster that
// reaches Envoy's own admin API from it.
const (
	PrometheusListenerName = "switchyard_prometheus"
	selfAdminClusterName   = "switchyard_self_admin"
	// PrometheusPath is where the Prometheus listener serves Envoy's stats.
	PrometheusPath = "/metrics"
)

// prometheusResources are a static listener on addr that serves Envoy's
// stats in Prometheus format at /metrics (and /stats/prometheus), and the
// cluster it forwards to: Envoy's own admin listener. Nothing else of the
// admin API is reachable through it: every other path, and every method
// but GET, is answered 404 by the listener itself, so the admin port stays
// on loopback while Prometheus scrapes from anywhere.
func prometheusResources(addr string, adminHost string, adminPort uint32) (*listenerv3.Listener, *clusterv3.Cluster, error) {
	host, port, err := splitHostPort("prometheus address", addr)
	if err != nil {
		return nil, nil, err
	}
	toAdmin := func(path string) *routev3.Route {
		return &routev3.Route{
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Path{Path: path},
				Headers:       []*routev3.HeaderMatcher{getOnly()},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: selfAdminClusterName},
				PrefixRewrite:    "/stats/prometheus",
				Timeout:          durationpb.New(10 * time.Second),
			}},
		}
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "switchyard_prometheus",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: PrometheusListenerName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    PrometheusListenerName,
				Domains: []string{"*"},
				Routes: []*routev3.Route{
					toAdmin(PrometheusPath),
					toAdmin("/stats/prometheus"),
					{
						Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
						Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
							Status: 404,
							Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: fmt.Sprintf("Envoy's stats are at GET %s\n", PrometheusPath)}},
						}},
					},
				},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: routerFilterName, ConfigType: typedConfig(mustAny(&routerv3.Router{}))}},
	}
	l := &listenerv3.Listener{
		Name:    PrometheusListenerName,
		Address: socketAddress(host, port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}}}},
	}
	c := &clusterv3.Cluster{
		Name:                 selfAdminClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: selfAdminClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(adminHost, adminPort),
				}},
			}}}},
		},
	}
	return l, c, nil
}

// getOnly matches GET requests.
func getOnly() *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}},
	}}
}

package envoy

import (
	"fmt"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Envoy extension names of the sidecar mesh.
const (
	tcpProxyFilterName      = "envoy.filters.network.tcp_proxy"
	networkRBACFilterName   = "envoy.filters.network.rbac"
	httpRBACFilterName      = "envoy.filters.http.rbac"
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	localAppConnectTimeout  = 5 * time.Second // Consul's local_connect_timeout_ms default
)

// publicListener is a sidecar's inbound listener on its public address:
// mutual TLS with the mesh (a client certificate from the Connect CA, with
// a SPIFFE ID of the trust domain), then the intentions as RBAC on that
// SPIFFE ID, then the local application. A tcp sidecar proxies bytes; an
// HTTP one runs a connection manager, so L7 intentions see each request.
//
// An HTTP sidecar's intentions are not in the listener but in its route
// (publicRouteConfig), which Envoy applies to the next request on every
// open connection: an intention change takes effect at once, also on the
// pooled connections callers keep open, and never drains the listener. The
// listener's own RBAC config denies everything, so a route without the
// intentions fails closed. A tcp sidecar's network RBAC can only be in the
// listener: a change there applies to new connections, while open ones
// drain.
//
// Both kinds log each request or connection, and HTTP ones trace, as the
// mesh says (obs).
func publicListener(s *ir.Sidecar, obs *sidecarObs) (*listenerv3.Listener, error) {
	var c checked
	ts := c.tlsSocket(meshDownstreamTLS(s.TrustDomain))
	var filters []*listenerv3.Filter
	if s.Protocol.IsHTTP() {
		hcm := &hcmv3.HttpConnectionManager{
			StatPrefix: PublicStatPrefix,
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource:    adsConfig(),
				RouteConfigName: PublicRouteConfigName,
			}},
			HttpFilters: []*hcmv3.HttpFilter{
				c.httpFilter(httpRBACFilterName, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}}),
				c.httpFilter(routerFilterName, &routerv3.Router{}),
			},
			// The application learns who called: the verified caller's
			// SPIFFE ID (and subject) replace any x-forwarded-client-cert
			// the caller sent.
			ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE_SET,
			SetCurrentClientCertDetails: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
				Uri: true, Subject: wrapperspb.Bool(true),
			},
			// L7 intentions match one spelling of each path: a deny on
			// /admin also covers //admin, /./admin and /%61dmin. An escaped
			// slash is refused (400) rather than guessed at.
			NormalizePath:                wrapperspb.Bool(true),
			MergeSlashes:                 true,
			PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		}
		obs.http(hcm)
		filters = []*listenerv3.Filter{c.networkFilter(hcmFilterName, hcm)}
	} else {
		filters = []*listenerv3.Filter{
			c.networkFilter(networkRBACFilterName, &rbacnetv3.RBAC{StatPrefix: IntentionsStatPrefix, Rules: intentionsRBAC(s)}),
			c.networkFilter(tcpProxyFilterName, &tcpproxyv3.TcpProxy{
				StatPrefix:       PublicStatPrefix,
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: LocalAppClusterName},
				AccessLog:        obs.tcpLogs,
			}),
		}
	}
	if c.err != nil {
		return nil, fmt.Errorf("public listener: %w", c.err)
	}
	return &listenerv3.Listener{
		Name:             PublicListenerName(s.PublicAddress, s.PublicPort),
		Address:          socketAddress(s.PublicAddress, s.PublicPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: filters, TransportSocket: ts}},
	}, nil
}

// publicRouteConfig is an HTTP sidecar's inbound routes: everything to
// the local app, with the intentions as the route's RBAC.
func publicRouteConfig(s *ir.Sidecar) (*routev3.RouteConfiguration, error) {
	var c checked
	rc := &routev3.RouteConfiguration{
		Name: PublicRouteConfigName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    PublicVirtualHostName,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: LocalAppClusterName}}},
				TypedPerFilterConfig: map[string]*anypb.Any{
					httpRBACFilterName: c.any(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: intentionsRBAC(s)}}),
				},
			}},
		}},
	}
	if c.err != nil {
		return nil, fmt.Errorf("public routes: %w", c.err)
	}
	return rc, nil
}

// localAppCluster reaches the sidecar's own application: one static
// endpoint, in HTTP/2 (h2c) when the application speaks it.
func localAppCluster(s *ir.Sidecar) (*clusterv3.Cluster, error) {
	var ck checked
	c := &clusterv3.Cluster{
		Name:                 LocalAppClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(localAppConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: LocalAppClusterName,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(s.LocalAddress, s.LocalPort),
				}},
			}}}},
		},
	}
	if s.Protocol.IsHTTP2() {
		c.TypedExtensionProtocolOptions = ck.http2Options()
	}
	if ck.err != nil {
		return nil, fmt.Errorf("local app cluster: %w", ck.err)
	}
	return c, nil
}

// upstreamListener is a sidecar's outbound listener for one upstream, on
// its local bind address and port: a TCP proxy, or for an HTTP destination
// a connection manager whose routes are the destination's shared
// RouteConfiguration, to the destination's mesh cluster. It logs and
// traces as the public listener does.
func upstreamListener(u *ir.Upstream, obs *sidecarObs) (*listenerv3.Listener, error) {
	var c checked
	var f *listenerv3.Filter
	if u.Protocol.IsHTTP() {
		hcm := &hcmv3.HttpConnectionManager{
			StatPrefix: UpstreamStatPrefix(u.Destination),
			CodecType:  hcmv3.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				ConfigSource:    adsConfig(),
				RouteConfigName: MeshRouteConfigName(u.Cluster),
			}},
			HttpFilters: []*hcmv3.HttpFilter{
				c.httpFilter(routerFilterName, &routerv3.Router{}),
			},
		}
		obs.http(hcm)
		f = c.networkFilter(hcmFilterName, hcm)
	} else {
		f = c.networkFilter(tcpProxyFilterName, &tcpproxyv3.TcpProxy{
			StatPrefix:       UpstreamStatPrefix(u.Destination),
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: MeshClusterName(u.Cluster)},
			AccessLog:        obs.tcpLogs,
		})
	}
	if c.err != nil {
		return nil, fmt.Errorf("upstream listener %q: %w", u.Destination, c.err)
	}
	return &listenerv3.Listener{
		Name:             UpstreamListenerName(u.Destination, u.BindAddress, u.BindPort),
		Address:          socketAddress(u.BindAddress, u.BindPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}, nil
}

// sidecarObs is a sidecar's access logs and tracing as its listeners
// take them: the edge's builders, with the mesh's log fields. Built once
// per sidecar, not per listener: a JSON format is a few hundred
// allocations, and a sidecar has a listener per upstream. Each listener's
// filter config is marshalled as it is wrapped, so sharing is safe.
type sidecarObs struct {
	httpLogs []*accesslogv3.AccessLog
	// tcpLogs log a line per connection, when it closes; Envoy traces
	// HTTP requests only.
	tcpLogs []*accesslogv3.AccessLog
	tracing *hcmv3.HttpConnectionManager_Tracing
}

func newSidecarObs(s *ir.Sidecar) (*sidecarObs, error) {
	o := &sidecarObs{tracing: tracing(s.Tracing)}
	var err error
	if o.httpLogs, err = meshAccessLogs(s.AccessLog, false); err != nil {
		return nil, err
	}
	if o.tcpLogs, err = meshAccessLogs(s.AccessLog, true); err != nil {
		return nil, err
	}
	return o, nil
}

// http gives an HTTP listener's connection manager the access log and
// tracing.
func (o *sidecarObs) http(hcm *hcmv3.HttpConnectionManager) {
	hcm.AccessLog, hcm.Tracing = o.httpLogs, o.tracing
}

// meshLeafSecret is the sidecar's own certificate, under the name every
// sidecar uses for its own (MeshLeafSecretName).
func meshLeafSecret(l *ir.MeshLeaf) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: MeshLeafSecretName,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(l.CertPEM),
			PrivateKey:       inline(l.KeyPEM.Reveal()),
		}},
	}
}

// meshCluster is a destination service reached through its sidecars: EDS
// endpoints (their public ports), mutual TLS presenting the caller's leaf,
// sending the destination's SNI and verifying its SPIFFE ID. Nothing in it
// depends on the caller, so every caller shares it.
func meshCluster(c *ir.MeshCluster) (*clusterv3.Cluster, error) {
	var ck checked
	ts := ck.tlsSocket(meshUpstreamTLS(c))
	cl := &clusterv3.Cluster{
		Name:                 MeshClusterName(c.SNI),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		// As for edge clusters: a failing Consul check takes an instance
		// out, however many fail (see cluster).
		CommonLbConfig:   &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
		OutlierDetection: outlierDetection(),
		CircuitBreakers:  circuitBreakers(),
		TransportSocket:  ts,
	}
	if c.Protocol.IsHTTP2() {
		cl.TypedExtensionProtocolOptions = ck.http2Options()
	}
	if ck.err != nil {
		return nil, ck.err
	}
	return cl, nil
}

// meshLoadAssignment lists the destination's sidecars with their health.
func meshLoadAssignment(c *ir.MeshCluster) *endpointv3.ClusterLoadAssignment {
	cla := loadAssignment(&ir.Cluster{Service: c.SNI, Endpoints: c.Endpoints})
	cla.ClusterName = MeshClusterName(c.SNI)
	return cla
}

// meshRouteConfig is the routes every HTTP caller of a destination shares:
// all of its traffic to its mesh cluster, with the destination's policy
// (a Service's mesh block: timeout, retries), built once for every caller.
func meshRouteConfig(c *ir.MeshCluster) *routev3.RouteConfiguration {
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: MeshClusterName(c.SNI)}}
	if len(c.Split) > 0 {
		wc := &routev3.WeightedCluster{}
		for _, b := range c.Split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: MeshClusterName(b.Cluster), Weight: wrapperspb.UInt32(b.Weight)})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if c.Timeout != nil {
		action.Timeout = durationpb.New(c.Timeout.Duration)
	}
	if c.Retries != nil {
		action.RetryPolicy = retryPolicy(c.Retries)
	}
	return &routev3.RouteConfiguration{
		Name: MeshRouteConfigName(c.SNI),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    MeshVirtualHostName,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: action},
			}},
		}},
	}
}

// meshRootsSecret is the Connect CA's roots, trusted by every sidecar.
func meshRootsSecret(r *ir.MeshRoots) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: MeshRootsSecretName,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(r.RootsPEM),
		}},
	}
}

// meshDownstreamTLS is the inbound side of mesh mTLS: the sidecar's leaf,
// and a client certificate required, chaining to the mesh roots and
// carrying a SPIFFE ID of the trust domain. Which service may call is the
// RBAC filter's decision.
func meshDownstreamTLS(trustDomain string) *tlsv3.DownstreamTlsContext {
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext: meshCommonTLS(&matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"},
		}),
		RequireClientCertificate: wrapperspb.Bool(true),
	}
	return ctx
}

// meshUpstreamTLS is the outbound side: the caller's leaf as client
// certificate, the destination's SNI, and its certificate verified against
// the mesh roots and its exact SPIFFE ID.
func meshUpstreamTLS(c *ir.MeshCluster) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: c.SNI,
		CommonTlsContext: meshCommonTLS(&matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: c.SPIFFEID},
		}),
	}
	return ctx
}

// meshCommonTLS presents the proxy's own leaf and verifies the peer's
// certificate against the mesh roots and a URI SAN, all secrets over SDS,
// so a leaf renewal or a root rotation never touches a listener or
// cluster.
func meshCommonTLS(uriSAN *matcherv3.StringMatcher) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{
			{Name: MeshLeafSecretName, SdsConfig: adsConfig()},
		},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_URI,
						Matcher: uriSAN,
					}},
				},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: MeshRootsSecretName, SdsConfig: adsConfig()},
			},
		},
	}
}

// http2Options makes a cluster speak HTTP/2 to its endpoints.
func (c *checked) http2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsName: c.any(http2UpstreamOptions)}
}

// checked wraps extension configs in Any after validating them: a
// resource's ValidateAll stops at an Any, so without this an invalid
// filter or TLS config inside a listener would reach Envoy. It keeps the
// first error.
type checked struct{ err error }

func (c *checked) any(m proto.Message) *anypb.Any {
	if v, ok := m.(validator); ok && c.err == nil {
		if err := v.ValidateAll(); err != nil {
			c.err = fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().Name(), err)
		}
	}
	return mustAny(m)
}

// networkFilter wraps a network filter's config.
func (c *checked) networkFilter(name string, cfg proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: c.any(cfg)}}
}

// httpFilter wraps an HTTP filter's config.
func (c *checked) httpFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: typedConfig(c.any(cfg))}
}

// transportSocket wraps a TLS context.
func (c *checked) tlsSocket(ctx proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: c.any(ctx)},
	}
}

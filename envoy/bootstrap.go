package envoy

import (
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"
)

// RE2MaxProgramSize is the regex program size limit the bootstrap sets in
// Envoy's runtime.
const RE2MaxProgramSize = 10000

// BootstrapOptions describe one Envoy's static start-up config.
type BootstrapOptions struct {
	NodeID string // node.id: unique per Envoy
	Group  string // node.cluster: the proxy group whose config it gets
	// XDSAddress is Switchyard's gRPC address, host:port.
	XDSAddress string
	// AdminAddress is Envoy's admin listener, host:port. Keep it on
	// loopback: the admin API can change Envoy's state.
	AdminAddress string
	// Delta selects incremental xDS instead of state of the world.
	Delta bool

	// XDSCAFile, when set, makes Envoy reach Switchyard over TLS and
	// verify its certificate against this CA, for XDSServerName (default:
	// the host of XDSAddress, a DNS name or an IP). XDSCertFile and
	// XDSKeyFile are Envoy's client certificate, for mutual TLS. Envoy
	// reads the files at start.
	XDSCAFile, XDSServerName, XDSCertFile, XDSKeyFile string
}

// Bootstrap builds an Envoy bootstrap that fetches everything else from
// Switchyard over one ADS stream. It returns YAML.
func Bootstrap(o BootstrapOptions) ([]byte, error) {
	if o.NodeID == "" || o.Group == "" {
		return nil, fmt.Errorf("bootstrap: node id and group are required")
	}
	xdsHost, xdsPort, err := splitHostPort("xds address", o.XDSAddress)
	if err != nil {
		return nil, err
	}
	adminHost, adminPort, err := splitHostPort("admin address", o.AdminAddress)
	if err != nil {
		return nil, err
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	// Envoy refuses regexes whose RE2 program is larger than 100 by default,
	// which real path patterns exceed; policy validation bounds regexes well
	// inside this higher limit (policy.MaxRegexProgramSize).
	runtime, err := structpb.NewStruct(map[string]any{
		"re2.max_program_size.error_level": RE2MaxProgramSize,
	})
	if err != nil {
		return nil, err
	}
	discovery := clusterv3.Cluster_STATIC
	if net.ParseIP(xdsHost) == nil {
		discovery = clusterv3.Cluster_STRICT_DNS
	}
	transport, err := xdsTransport(o, xdsHost)
	if err != nil {
		return nil, err
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Group},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(adminHost, adminPort),
		},
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
			Name:           "switchyard",
			LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: runtime},
		}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName}},
				}},
				SetNodeOnFirstMessageOnly: true,
			},
			CdsConfig: adsConfig(),
			LdsConfig: adsConfig(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{{
				Name:                 XDSClusterName,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
				ConnectTimeout:       durationpb.New(time.Second),
				TransportSocket:      transport,
				TypedExtensionProtocolOptions: map[string]*anypb.Any{
					"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2,
				},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{
					ClusterName: XDSClusterName,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
						HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
							Address: socketAddress(xdsHost, xdsPort),
						}},
					}}}},
				},
			}},
		},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	js, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return yaml.JSONToYAML(js)
}

// xdsTransport is the TLS of the connection to Switchyard, or nil for
// plaintext.
func xdsTransport(o BootstrapOptions, xdsHost string) (*corev3.TransportSocket, error) {
	if o.XDSCAFile == "" {
		if o.XDSCertFile != "" || o.XDSKeyFile != "" || o.XDSServerName != "" {
			return nil, fmt.Errorf("bootstrap: xDS TLS needs the CA that verifies Switchyard (--xds-ca-file)")
		}
		return nil, nil
	}
	if (o.XDSCertFile == "") != (o.XDSKeyFile == "") {
		return nil, fmt.Errorf("bootstrap: the xDS client certificate and key (--xds-cert-file, --xds-key-file) go together; give both or neither")
	}
	name := o.XDSServerName
	if name == "" {
		name = xdsHost
	}
	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}},
	}
	if net.ParseIP(name) != nil {
		san.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	ctx := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 fileSource(o.XDSCAFile),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	}
	if net.ParseIP(name) == nil {
		ctx.Sni = name
	}
	if o.XDSCertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(o.XDSCertFile),
			PrivateKey:       fileSource(o.XDSKeyFile),
		}}
	}
	typed, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed},
	}, nil
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func splitHostPort(what, hostport string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("bootstrap: %s %q: %w", what, hostport, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("bootstrap: %s %q: want host:port", what, hostport)
	}
	return host, uint32(p), nil
}

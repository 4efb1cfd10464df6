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
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	downstreamconnectionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
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

// Overload protection defaults of the bootstrap (flags --max-connections and
// --max-heap-bytes).
const (
	// DefaultMaxConnections bounds the downstream connections open at once,
	// over all listeners. Every connection holds a file descriptor and
	// buffers; Envoy advises staying under half of the descriptor limit.
	DefaultMaxConnections = 50000
	// DefaultMaxHeapBytes is the heap size the overload actions measure
	// against: give Envoy somewhat more memory than this.
	DefaultMaxHeapBytes = 1 << 30
	// MinMaxHeapBytes is the smallest heap limit accepted: Envoy's own
	// baseline is tens of megabytes, so a smaller limit would have it shed
	// every connection from the start.
	MinMaxHeapBytes = 64 << 20
)

// Heap thresholds of the overload actions, as fractions of MaxHeapBytes.
const (
	shrinkHeapAt       = 0.90 // return free memory to the system
	disableKeepaliveAt = 0.92 // drain connections so clients reconnect elsewhere
	rejectConnsAt      = 0.95 // close new connections at once
	rejectRequestsAt   = 0.98 // answer new requests 503
)

// Envoy names of the overload manager's monitors, actions and load shed
// points the bootstrap configures.
const (
	connectionsMonitor     = "envoy.resource_monitors.global_downstream_max_connections"
	heapMonitor            = "envoy.resource_monitors.fixed_heap"
	shrinkHeapAction       = "envoy.overload_actions.shrink_heap"
	disableKeepaliveAction = "envoy.overload_actions.disable_http_keepalive"
	stopRequestsAction     = "envoy.overload_actions.stop_accepting_requests"
	listenerAcceptShed     = "envoy.load_shed_points.tcp_listener_accept"
)

// SidecarNodeCluster is node.cluster of every sidecar Envoy (switchyard
// bootstrap --sidecar-for). Consul's own bootstrap puts the service name
// there, which it looks up in the local agent; Switchyard's bootstrap
// talks to no one, and the control plane must tell a sidecar from an edge
// proxy group by node.cluster before it looks anything up. A proxy group
// name is a DNS label, so a name with a dot is never one: this cannot
// collide with a group. The sidecar itself is node.id, its proxy service
// ID, which the control plane finds in Consul's catalog.
const SidecarNodeCluster = "sidecar.mesh"

// SidecarProxyID is the proxy service ID Consul gives the sidecar of a
// service instance registered with Connect.SidecarService and no ID of its
// own: web-1 -> web-1-sidecar-proxy.
func SidecarProxyID(serviceID string) string { return serviceID + "-sidecar-proxy" }

// BootstrapOptions describe one Envoy's static start-up config.
type BootstrapOptions struct {
	NodeID string // node.id: unique per Envoy; a sidecar's proxy service ID
	// Group is node.cluster: the proxy group whose config it gets, or
	// SidecarNodeCluster for a sidecar.
	Group string
	// XDSAddresses are Switchyard's gRPC addresses, host:port: one, or one
	// per replica. Envoy holds one ADS stream to one of them and, when
	// that replica goes away, reconnects to another; replicas watching the
	// same Consul and policy serve the same versions, so nothing changes
	// for Envoy. A name is resolved (every address it has is a replica).
	XDSAddresses []string
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

	// MaxConnections caps the downstream connections open at once over all
	// listeners (the admin listener's count too, but it is never refused);
	// beyond it Envoy closes new connections as they arrive. 0: no limit.
	MaxConnections int64
	// PrometheusAddress, when set, is a listener (host:port) that serves
	// Envoy's stats in Prometheus format at /metrics, and nothing else of
	// the admin API.
	PrometheusAddress string
	// MaxHeapBytes is the heap size the heap overload actions measure
	// against (see the thresholds above); 0: no heap actions. At least
	// MinMaxHeapBytes otherwise.
	MaxHeapBytes uint64
}

// Bootstrap builds an Envoy bootstrap that fetches everything else from
// Switchyard over one ADS stream. It returns YAML.
func Bootstrap(o BootstrapOptions) ([]byte, error) {
	if o.NodeID == "" || o.Group == "" {
		return nil, fmt.Errorf("bootstrap: node id and group are required")
	}
	xdsHosts, xdsEndpoints, err := xdsEndpoints(o.XDSAddresses)
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
	// which real path patterns exceed; policy validation refuses any regex
	// whose RE2 program could exceed this higher limit (an upper bound of
	// RE2's count, policy.MaxRegexProgramSize, kept equal to it by a test).
	runtime, err := structpb.NewStruct(map[string]any{
		"re2.max_program_size.error_level": RE2MaxProgramSize,
	})
	if err != nil {
		return nil, err
	}
	discovery := clusterv3.Cluster_STATIC
	for _, h := range xdsHosts {
		if net.ParseIP(h) == nil {
			discovery = clusterv3.Cluster_STRICT_DNS
		}
	}
	transport, err := xdsTransport(o, xdsHosts)
	if err != nil {
		return nil, err
	}
	overload, err := overloadManager(o)
	if err != nil {
		return nil, err
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Group},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(adminHost, adminPort),
			// An Envoy at its connection limit still answers its
			// operator: stats and readiness are what explain it.
			IgnoreGlobalConnLimit: o.MaxConnections > 0,
		},
		OverloadManager: overload,
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
					Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: xdsEndpoints}},
				},
			}},
		},
	}
	if o.PrometheusAddress != "" {
		if sameListenPort(o.PrometheusAddress, o.AdminAddress) {
			return nil, fmt.Errorf("bootstrap: --prometheus-address %s takes the admin address's port (%s); give the stats listener its own port", o.PrometheusAddress, o.AdminAddress)
		}
		l, c, err := prometheusResources(o.PrometheusAddress, adminHost, adminPort)
		if err != nil {
			return nil, err
		}
		b.StaticResources.Listeners = append(b.StaticResources.Listeners, l)
		b.StaticResources.Clusters = append(b.StaticResources.Clusters, c)
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

// overloadManager protects Envoy from running out of file descriptors and
// memory: a global cap on downstream connections, and actions that shed
// load as the heap nears MaxHeapBytes. nil when both are off.
func overloadManager(o BootstrapOptions) (*overloadv3.OverloadManager, error) {
	if o.MaxConnections < 0 {
		return nil, fmt.Errorf("bootstrap: --max-connections %d: want 0 (no limit) or more", o.MaxConnections)
	}
	if o.MaxHeapBytes != 0 && o.MaxHeapBytes < MinMaxHeapBytes {
		return nil, fmt.Errorf("bootstrap: --max-heap-bytes %d: want 0 (no heap actions) or at least %d (64 MiB)", o.MaxHeapBytes, MinMaxHeapBytes)
	}
	if o.MaxConnections == 0 && o.MaxHeapBytes == 0 {
		return nil, nil
	}
	om := &overloadv3.OverloadManager{RefreshInterval: durationpb.New(250 * time.Millisecond)}
	if o.MaxConnections > 0 {
		// This monitor needs no action: Envoy counts connections as it
		// accepts them and closes those over the limit.
		om.ResourceMonitors = append(om.ResourceMonitors, &overloadv3.ResourceMonitor{
			Name: connectionsMonitor,
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(
				&downstreamconnectionsv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: o.MaxConnections})},
		})
	}
	if o.MaxHeapBytes > 0 {
		om.ResourceMonitors = append(om.ResourceMonitors, &overloadv3.ResourceMonitor{
			Name: heapMonitor,
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(
				&fixedheapv3.FixedHeapConfig{MaxHeapSizeBytes: o.MaxHeapBytes})},
		})
		om.Actions = []*overloadv3.OverloadAction{
			{Name: shrinkHeapAction, Triggers: heapTrigger(shrinkHeapAt)},
			{Name: disableKeepaliveAction, Triggers: heapTrigger(disableKeepaliveAt)},
			{Name: stopRequestsAction, Triggers: heapTrigger(rejectRequestsAt)},
		}
		om.LoadshedPoints = []*overloadv3.LoadShedPoint{
			{Name: listenerAcceptShed, Triggers: heapTrigger(rejectConnsAt)},
		}
	}
	return om, nil
}

func heapTrigger(at float64) []*overloadv3.Trigger {
	return []*overloadv3.Trigger{{
		Name:         heapMonitor,
		TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: at}},
	}}
}

// xdsEndpoints are the xDS cluster's endpoints, one per address, and the
// hosts of the addresses in order.
func xdsEndpoints(addrs []string) ([]string, []*endpointv3.LbEndpoint, error) {
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("bootstrap: no xds address (--xds-address)")
	}
	var hosts []string
	var eps []*endpointv3.LbEndpoint
	seen := map[string]bool{}
	for _, a := range addrs {
		host, port, err := splitHostPort("xds address", a)
		if err != nil {
			return nil, nil, err
		}
		if seen[a] {
			return nil, nil, fmt.Errorf("bootstrap: xds address %q given twice", a)
		}
		seen[a] = true
		hosts = append(hosts, host)
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)},
		}})
	}
	return hosts, eps, nil
}

// xdsTransport is the TLS of the connection to Switchyard, or nil for
// plaintext. Envoy verifies one name on every replica: XDSServerName, or
// the host of the addresses when they share one.
func xdsTransport(o BootstrapOptions, xdsHosts []string) (*corev3.TransportSocket, error) {
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
		name = xdsHosts[0]
		for _, h := range xdsHosts[1:] {
			if h != name {
				return nil, fmt.Errorf("bootstrap: xds addresses on different hosts (%s, %s) need the one name every replica's certificate carries (--xds-server-name)", name, h)
			}
		}
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

// sameListenPort reports whether two listen addresses would clash: the
// same port on the same host, or on any host when either is a wildcard.
func sameListenPort(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	wildcard := func(h string) bool { ip := net.ParseIP(h); return h == "" || (ip != nil && ip.IsUnspecified()) }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

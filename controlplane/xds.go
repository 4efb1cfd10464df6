package controlplane

import (
	"context"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// newGRPCServer serves ADS, state-of-the-world and delta, on one gRPC
// server. Envoy keeps one long-lived stream per proxy; keepalives find
// dead peers behind NATs and load balancers.
func (s *Server) newGRPCServer(ctx context.Context) *grpc.Server {
	gs := grpc.NewServer(
		grpc.MaxConcurrentStreams(1_000_000),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    30 * time.Second,
			Timeout: 5 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             15 * time.Second,
			PermitWithoutStream: true,
		}),
	)
	xds := serverv3.NewServer(ctx, s.cache, s.callbacks())
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	return gs
}

// callbacks observe the xDS streams: connected proxies, pushes and NACKs.
// They run synchronously on the stream's goroutine, so they stay cheap.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error {
			s.metrics.connectedProxies.WithLabelValues("sotw").Inc()
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.metrics.connectedProxies.WithLabelValues("sotw").Dec()
			s.streamClosed(id, node)
		},
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			s.metrics.connectedProxies.WithLabelValues("delta").Inc()
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, node *corev3.Node) {
			s.metrics.connectedProxies.WithLabelValues("delta").Dec()
			s.streamClosed(id, node)
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			node := s.streamRequest(id, req.GetNode(), "sotw")
			if req.GetErrorDetail() != nil {
				s.nack(node, req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			node := s.streamRequest(id, req.GetNode(), "delta")
			if req.GetErrorDetail() != nil {
				s.nack(node, req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail().GetMessage())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
		},
	}
}

// streamRequest remembers each stream's node the first time it speaks
// (Envoy sends the node only on its first message) and warns about Envoys
// whose group no policy defines: they would otherwise wait silently. It
// returns the stream's node.
func (s *Server) streamRequest(id int64, node *corev3.Node, protocol string) *corev3.Node {
	s.mu.Lock()
	known, ok := s.streams[id]
	if ok || node == nil {
		s.mu.Unlock()
		return known
	}
	s.streams[id] = node
	ready := s.ready
	_, hasGroup := s.groups[node.GetCluster()]
	s.mu.Unlock()
	s.log.Info("envoy connected", "node", node.GetId(), "group", node.GetCluster(), "protocol", protocol)
	if ready && !hasGroup {
		s.log.Warn("envoy asks for a proxy group no policy defines; it gets no config until one does",
			"node", node.GetId(), "group", node.GetCluster())
	}
	return node
}

func (s *Server) streamClosed(id int64, node *corev3.Node) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
	s.log.Info("envoy disconnected", "node", node.GetId(), "group", node.GetCluster())
}

// nack logs a rejected config with Envoy's own reason. The previous config
// stays in force on that Envoy.
func (s *Server) nack(node *corev3.Node, typeURL, nonce, version, detail string) {
	s.metrics.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
	s.log.Error("envoy rejected config (NACK); it keeps its previous config",
		"node", node.GetId(), "group", node.GetCluster(), "type", typeLabel(typeURL),
		"nonce", nonce, "version", version, "error", strings.TrimSpace(detail))
}

// typeLabel shortens a type URL to the resource's name ("Cluster").
func typeLabel(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

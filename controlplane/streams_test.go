package controlplane

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-io/switchyard/registry"
)

// openStream plays what the xDS server does for a new SotW stream's first
// request: the callbacks, then a watch in the snapshot cache.
func openStream(t *testing.T, s *Server, id int64, node *corev3.Node) (cancel func()) {
	t.Helper()
	cb := s.px.callbacks()
	if err := cb.OnStreamOpen(t.Context(), id, ""); err != nil {
		t.Fatal(err)
	}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}
	if err := cb.OnStreamRequest(id, req); err != nil {
		t.Fatal(err)
	}
	cancel, err := s.cache.CreateWatch(req, streamv3.NewSotwSubscription(nil, true), make(chan cache.Response, 1))
	if err != nil {
		t.Fatal(err)
	}
	return cancel
}

func bigNode(id, group string) *corev3.Node {
	meta, _ := structpb.NewStruct(map[string]any{"junk": strings.Repeat("x", 64<<10)})
	return &corev3.Node{Id: id, Cluster: group, Metadata: meta}
}

// Streams for proxy groups no policy defines leave nothing behind once
// they close: neither Switchyard's stream table nor the snapshot cache's
// per-group status keeps their (possibly huge) node. A defined group's
// snapshot stays, and an unknown group is forgotten only when its last
// stream closes.
func TestMadeUpGroupsLeaveNoState(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.px.callbacks()

	for i := range 300 {
		node := bigNode(fmt.Sprintf("n%d", i), fmt.Sprintf("made-up-%d", i))
		cancel := openStream(t, s, int64(i+1), node)
		cancel()
		cb.OnStreamClosed(int64(i+1), node)
	}
	if keys := s.cache.GetStatusKeys(); slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "made-up-") }) {
		t.Errorf("snapshot cache still keeps %d groups after their streams closed: %v...", len(keys), keys[:min(len(keys), 5)])
	}
	if n := len(s.px.streams); n != 0 {
		t.Errorf("%d streams remembered after all closed; want 0", n)
	}

	// Two streams of one unknown group: the first to close does not
	// forget the group under the second.
	a, b := bigNode("a", "later"), bigNode("b", "later")
	cancelA := openStream(t, s, 1001, a)
	cancelB := openStream(t, s, 1002, b)
	cancelA()
	cb.OnStreamClosed(1001, a)
	if !slices.Contains(s.cache.GetStatusKeys(), "later") {
		t.Error("group later forgotten while a stream of it is still open")
	}
	cancelB()
	cb.OnStreamClosed(1002, b)
	if slices.Contains(s.cache.GetStatusKeys(), "later") {
		t.Error("group later still kept after its last stream closed")
	}

	// A defined group keeps its snapshot when its Envoys leave.
	edge := bigNode("edge-1", "edge")
	cancel := openStream(t, s, 2000, edge)
	if got := s.px.streams[streamKey{false, 2000}].node.GetMetadata(); got != nil {
		t.Errorf("stream keeps the node's metadata (%d fields); want id and cluster only", len(got.GetFields()))
	}
	cancel()
	cb.OnStreamClosed(2000, edge)
	if _, err := s.cache.GetSnapshot("edge"); err != nil {
		t.Errorf("edge's snapshot is gone after its Envoy left: %v", err)
	}
}

// Through a real xDS server, on both protocols: a stream that switches
// its node.cluster, a node.cluster no policy could define, and a type
// Switchyard does not serve are refused, and leave nothing in the cache.
func TestRequestsThatWouldLeaveStateAreRefused(t *testing.T) {
	s, _ := runServer(t, Config{})
	conn, err := grpc.NewClient(s.cfg.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	meta, _ := structpb.NewStruct(map[string]any{"junk": strings.Repeat("x", 64<<10)})
	node := func(group string) *corev3.Node { return &corev3.Node{Id: "n", Cluster: group, Metadata: meta} }

	// sotw sends requests, and reports how the stream ended.
	sotw := func(reqs ...*discoveryv3.DiscoveryRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			return err
		}
		for _, r := range reqs {
			if err := st.Send(r); err != nil {
				break
			}
		}
		_, err = st.Recv()
		return err
	}
	delta := func(reqs ...*discoveryv3.DeltaDiscoveryRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		for _, r := range reqs {
			if err := st.Send(r); err != nil {
				break
			}
		}
		_, err = st.Recv()
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"sotw: cluster switched", sotw(
			&discoveryv3.DiscoveryRequest{Node: node("edge"), TypeUrl: resource.ClusterType},
			&discoveryv3.DiscoveryRequest{Node: node("made-up-1"), TypeUrl: resource.ListenerType})},
		{"delta: cluster switched", delta(
			&discoveryv3.DeltaDiscoveryRequest{Node: node("edge"), TypeUrl: resource.ClusterType},
			&discoveryv3.DeltaDiscoveryRequest{Node: node("made-up-2"), TypeUrl: resource.ListenerType})},
		{"sotw: not a group name", sotw(&discoveryv3.DiscoveryRequest{Node: node(strings.Repeat("X", 5000)), TypeUrl: resource.ClusterType})},
		{"delta: empty cluster", delta(&discoveryv3.DeltaDiscoveryRequest{Node: node(""), TypeUrl: resource.ClusterType})},
		{"sotw: made-up type", sotw(&discoveryv3.DiscoveryRequest{Node: node("edge"), TypeUrl: "type.example/Junk"})},
		{"delta: made-up type", delta(&discoveryv3.DeltaDiscoveryRequest{Node: node("edge"), TypeUrl: "type.example/Junk"})},
		// Rate limit configs go to the rate limit service alone (no node.cluster).
		{"sotw: an Envoy asks for rate limit configs", sotw(&discoveryv3.DiscoveryRequest{Node: node("edge"), TypeUrl: resource.RateLimitConfigType})},
		{"sotw: no cluster, Envoy types", sotw(&discoveryv3.DiscoveryRequest{Node: node(""), TypeUrl: resource.ListenerType})},
	} {
		if status.Code(tc.err) != codes.InvalidArgument {
			t.Errorf("%s: stream ended with %v; want InvalidArgument", tc.name, tc.err)
		}
	}
	if keys := s.cache.GetStatusKeys(); slices.ContainsFunc(keys, func(k string) bool { return k != "edge" && k != rateLimitKey }) {
		t.Errorf("the snapshot cache keeps state for %v; want at most edge and the rate limit service's", keys)
	}
}

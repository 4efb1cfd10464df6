package controlplane

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-io/switchyard/registry"
)

// openStream plays what the xDS server does for a new SotW stream's first
// request: the callbacks, then a watch in the snapshot cache.
func openStream(t *testing.T, s *Server, id int64, node *corev3.Node) (cancel func()) {
	t.Helper()
	cb := s.callbacks()
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
	s.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.callbacks()

	for i := range 300 {
		node := bigNode(fmt.Sprintf("n%d", i), fmt.Sprintf("made-up-%d", i))
		cancel := openStream(t, s, int64(i+1), node)
		cancel()
		cb.OnStreamClosed(int64(i+1), node)
	}
	if keys := s.cache.GetStatusKeys(); slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "made-up-") }) {
		t.Errorf("snapshot cache still keeps %d groups after their streams closed: %v...", len(keys), keys[:min(len(keys), 5)])
	}
	if n := len(s.streams); n != 0 {
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
	if got := s.streams[streamKey{false, 2000}].node.GetMetadata(); got != nil {
		t.Errorf("stream keeps the node's metadata (%d fields); want id and cluster only", len(got.GetFields()))
	}
	cancel()
	cb.OnStreamClosed(2000, edge)
	if _, err := s.cache.GetSnapshot("edge"); err != nil {
		t.Errorf("edge's snapshot is gone after its Envoy left: %v", err)
	}
}

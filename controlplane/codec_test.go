package controlplane

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"github.com/switchyard-io/switchyard/translator/translatortest"
	"github.com/switchyard-io/switchyard/xdscache"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The xDS codec writes what gRPC's proto codec writes, in a buffer of its
// own, and reads it back.
func TestXDSCodecRoundTrip(t *testing.T) {
	c := newXDSCodec()
	if c.Name() != "proto" {
		t.Fatalf("codec name %q; want proto (gRPC picks the codec by content subtype)", c.Name())
	}
	in := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "t", Nonce: "7",
		Resources: []*discoveryv3.Resource{{Name: "a", Version: "1", Resource: &anypb.Any{TypeUrl: "t", Value: make([]byte, 64<<10)}}}}
	data, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out discoveryv3.DeltaDiscoveryResponse
	if err := c.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Errorf("round trip changed the message: got %v", &out)
	}
}

// Responses the xDS cache makes are written from the cache's shared
// encodings of their resources (the very bytes, not copies), and read
// back as the response they are, for delta and state of the world.
func TestXDSCodecWritesSharedResources(t *testing.T) {
	snap, set := translatortest.Estate(t, 3, 2)
	var eb edgeBuilder
	groups, failed, _ := eb.build(snap, set, nil)
	if len(failed) > 0 || len(groups) != 1 {
		t.Fatalf("build: %d groups, failed %v", len(groups), failed)
	}
	c := xdscache.New(groupHash{}, servedTypeURLs, true)
	if err := c.SetSnapshot(context.Background(), groups[0].group, groups[0].snapshot); err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "e", Cluster: groups[0].group}
	codec := newXDSCodec()

	dch := make(chan cache.DeltaResponse, 1)
	dreq := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType}
	if _, err := c.CreateDeltaWatch(dreq, streamv3.NewDeltaSubscription(nil, nil, nil, true), dch); err != nil {
		t.Fatal(err)
	}
	delta, err := (<-dch).GetDeltaDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	delta.Nonce = "1" // as the server sets it
	checkShared(t, codec, delta, &discoveryv3.DeltaDiscoveryResponse{}, len(delta.GetResources()), func(i int) []byte {
		b, _ := xdscache.ResourceField(delta.GetResources()[i])
		return b.ReadOnlyData()
	})

	sch := make(chan cache.Response, 1)
	sreq := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}
	if _, err := c.CreateWatch(sreq, streamv3.NewSotwSubscription(nil, true), sch); err != nil {
		t.Fatal(err)
	}
	sotw, err := (<-sch).GetDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	checkShared(t, codec, sotw, &discoveryv3.DiscoveryResponse{}, len(sotw.GetResources()), func(i int) []byte {
		b, _ := xdscache.AnyField(sotw.GetResources()[i])
		return b.ReadOnlyData()
	})
}

func checkShared(t *testing.T, codec xdsCodec, in, out proto.Message, n int, wire func(int) []byte) {
	t.Helper()
	if n == 0 {
		t.Fatalf("%T: no resources", in)
	}
	data, err := codec.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 1+n {
		t.Fatalf("%T: %d buffers for %d resources; want the message's other fields, then each resource's shared field", in, len(data), n)
	}
	for i := range n {
		got, want := data[1+i].ReadOnlyData(), wire(i)
		if len(want) == 0 || &got[0] != &want[0] || len(got) != len(want) {
			t.Errorf("%T: resource %d written from a copy, not the cache's encoding", in, i)
		}
	}
	if err := codec.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("%T: read back as %v; want %v", in, out, in)
	}
}

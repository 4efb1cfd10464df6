package controlplane

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

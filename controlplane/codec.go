package controlplane

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchyard-io/switchyard/xdscache"
)

// xdsCodec is gRPC's proto codec except for how it writes a response:
//
//   - A response's resources are written from the bytes the xDS cache
//     encoded once for every stream (xdscache.ResourceWire, AnyWire),
//     not encoded again per response: the message gRPC sends is the
//     response's own fields, then each resource's field header and the
//     shared bytes. A thousand Envoys taking the same config at once hold
//     references to one copy in gRPC's send queues, not a thousand copies
//     (at 5,000 proxies those copies were about 700 MB, see
//     docs/benchmarks.md), and no CPU goes to encoding them.
//   - Anything else is encoded into a buffer of its own, not one from
//     gRPC's global pool: pooled, a big message's buffer stays reachable
//     until the next two garbage collections, which come late in a
//     steady Switchyard (after a 1,000-proxy sync the pool held 420 MB of
//     a 520 MB heap).
type xdsCodec struct{ encoding.CodecV2 }

func newXDSCodec() xdsCodec { return xdsCodec{encoding.GetCodecV2(grpcproto.Name)} }

// Field numbers of the resources in the two response messages (the
// envoy.service.discovery.v3 protos).
const (
	deltaResourcesField protowire.Number = 2 // DeltaDiscoveryResponse.resources
	sotwResourcesField  protowire.Number = 2 // DiscoveryResponse.resources
)

func (c xdsCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *discoveryv3.DeltaDiscoveryResponse:
		if out, ok := marshalShared(m, deltaResourcesField, len(m.GetResources()), func(i int) ([]byte, bool) {
			return xdscache.ResourceWire(m.GetResources()[i])
		}); ok {
			return out, nil
		}
	case *discoveryv3.DiscoveryResponse:
		if out, ok := marshalShared(m, sotwResourcesField, len(m.GetResources()), func(i int) ([]byte, bool) {
			return xdscache.AnyWire(m.GetResources()[i])
		}); ok {
			return out, nil
		}
	}
	pm, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	b, err := proto.Marshal(pm)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// marshalShared writes m with its repeated message field of n items
// taken from wire (each item's encoding, shared and never modified): m's
// other fields first, then each item's field header and bytes. Protobuf
// parsers accept fields in any order. ok is false when some item has no
// shared encoding (it was not made by the cache) or m cannot be encoded
// without the field: then the caller encodes m as usual.
func marshalShared(m proto.Message, field protowire.Number, n int, wire func(i int) ([]byte, bool)) (mem.BufferSlice, bool) {
	if n == 0 {
		return nil, false
	}
	items := make([][]byte, n)
	heads := 0
	for i := range n {
		b, ok := wire(i)
		if !ok {
			return nil, false
		}
		items[i] = b
		heads += protowire.SizeTag(field) + protowire.SizeVarint(uint64(len(b)))
	}
	// The message without the field: every other field, shared as is.
	src := m.ProtoReflect()
	rest := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != field {
			rest.Set(fd, v)
		}
		return true
	})
	head, err := proto.Marshal(rest.Interface())
	if err != nil {
		return nil, false
	}
	out := make(mem.BufferSlice, 0, 1+2*n)
	out = append(out, mem.SliceBuffer(head))
	// The items' field headers, in one allocation.
	hb := make([]byte, 0, heads)
	for _, b := range items {
		start := len(hb)
		hb = protowire.AppendTag(hb, field, protowire.BytesType)
		hb = protowire.AppendVarint(hb, uint64(len(b)))
		out = append(out, mem.SliceBuffer(hb[start:len(hb):len(hb)]), mem.SliceBuffer(b))
	}
	return out, true
}

package controlplane

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/switchyard-io/switchyard/xdscache"
)

// xdsCodec is gRPC's proto codec except for how it writes a response:
//
//   - A response's resources are written from the bytes the xDS cache
//     encoded once for every stream (xdscache.ResourceField, AnyField),
//     not encoded again per response: the message gRPC sends is the
//     response's own fields, then each resource's shared field. A thousand Envoys taking the same config at once hold
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

func (c xdsCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *discoveryv3.DeltaDiscoveryResponse:
		if out, ok := marshalShared(m, len(m.GetResources()), func(i int) (mem.Buffer, bool) {
			return xdscache.ResourceField(m.GetResources()[i])
		}); ok {
			return out, nil
		}
	case *discoveryv3.DiscoveryResponse:
		if out, ok := marshalShared(m, len(m.GetResources()), func(i int) (mem.Buffer, bool) {
			return xdscache.AnyField(m.GetResources()[i])
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

// marshalShared writes m, a response whose resources (field
// xdscache.ResponseResourcesField, n of them) the cache made: m's other
// fields, then each resource's field, encoded once by the cache and shared
// (field reports it). Protobuf parsers accept fields in any order. ok is
// false when some resource has no shared encoding (the cache did not make
// it) or m cannot be encoded: then the caller encodes m as usual.
func marshalShared(m proto.Message, n int, field func(i int) (mem.Buffer, bool)) (mem.BufferSlice, bool) {
	if n == 0 {
		return nil, false
	}
	out := make(mem.BufferSlice, 1, 1+n)
	for i := range n {
		b, ok := field(i)
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	// The message without its resources: every other field, shared as is.
	src := m.ProtoReflect()
	rest := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != xdscache.ResponseResourcesField {
			rest.Set(fd, v)
		}
		return true
	})
	head, err := proto.Marshal(rest.Interface())
	if err != nil {
		return nil, false
	}
	out[0] = mem.SliceBuffer(head)
	return out, true
}

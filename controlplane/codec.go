package controlplane

import (
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// xdsCodec is gRPC's proto codec except that it marshals each message into
// a buffer of its own instead of one from gRPC's global buffer pool.
//
// A thousand Envoys connecting at once each take their whole config in
// one message of hundreds of kilobytes, held until the Envoy has read it.
// Pooled, those buffers stay reachable until the next two garbage
// collections, and a steady Switchyard allocates so little that those come
// late: after a 1,000-proxy sync the pool held 420 MB of a 520 MB heap, and
// the process kept a gigabyte resident. Unpooled, they are garbage once
// written, and the runtime returns the memory. Steady-state messages (one
// changed resource) are small, so pooling them saves little.
type xdsCodec struct{ encoding.CodecV2 }

func newXDSCodec() xdsCodec { return xdsCodec{encoding.GetCodecV2(grpcproto.Name)} }

func (c xdsCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

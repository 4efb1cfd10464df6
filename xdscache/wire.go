package xdscache

import (
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Every resource version the cache serves is encoded once, as the field
// of a delta response that carries it: field 2 (resources) holding its
// Resource message. The Resource's own field 2 is its Any, so the same
// bytes also hold, contiguous, the field of a state-of-the-world response
// that carries it (DiscoveryResponse.resources is field 2 too), and the
// Any's value is a part of those. The gRPC codec writes responses from
// these shared bytes (ResourceField, AnyField) instead of encoding each
// response's resources again: a thousand Envoys taking the same config at
// once hold one copy of it, not a thousand in gRPC's send buffers.

// ResponseResourcesField is the field number of the resources in both
// DeltaDiscoveryResponse and DiscoveryResponse, which ResourceField and
// AnyField encode.
const ResponseResourcesField protowire.Number = 2

// wires maps each entry's *discoveryv3.Resource and its *anypb.Any to
// their response field, as a gRPC buffer made once (see newEntry), while
// the entry lives.
var wires sync.Map

// newEntry makes the entry for a resource version whose encoding is b.
// Its bytes: the delta response field [tag 2, length, Resource], where the
// Resource is [version (1)] [tag 2, length, Any] [name (3)], and the Any
// is [type URL (1)] [value (2): b]. Fields in number order, empty ones
// left out, as the proto package writes them.
func newEntry(typeURL, name, version string, b []byte) *entry {
	anyLen := sizeField(len(typeURL)) + sizeField(len(b))
	resLen := sizeField(len(version)) + protowire.SizeTag(2) + protowire.SizeBytes(anyLen) + sizeField(len(name))
	buf := make([]byte, 0, protowire.SizeTag(ResponseResourcesField)+protowire.SizeBytes(resLen))
	buf = protowire.AppendTag(buf, ResponseResourcesField, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(resLen))
	buf = appendField(buf, 1, []byte(version))
	anyField := len(buf)
	buf = protowire.AppendTag(buf, 2, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(anyLen))
	buf = appendField(buf, 1, []byte(typeURL))
	buf = appendField(buf, 2, b)
	anyEnd := len(buf)
	buf = appendField(buf, 3, []byte(name))

	a := &anypb.Any{TypeUrl: typeURL, Value: buf[anyEnd-len(b) : anyEnd : anyEnd]}
	e := &entry{version: version, res: &discoveryv3.Resource{Name: name, Version: version, Resource: a}}
	wires.Store(e.res, mem.Buffer(mem.SliceBuffer(buf)))
	wires.Store(a, mem.Buffer(mem.SliceBuffer(buf[anyField:anyEnd:anyEnd])))
	return e
}

// sizeField is the encoded size of a bytes field (field numbers below
// 16) of n bytes: nothing when n is 0, as proto3 leaves it out.
func sizeField(n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(1) + protowire.SizeBytes(n)
}

func appendField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// forgetWire drops a collected entry's encodings.
func forgetWire(res *discoveryv3.Resource, a *anypb.Any) {
	wires.Delete(res)
	wires.Delete(a)
}

// ResourceField returns the resources field (ResponseResourcesField) of a
// delta response carrying r, a Resource the cache made, encoded: shared
// by every response, never to be modified. False for any other Resource.
func ResourceField(r *discoveryv3.Resource) (mem.Buffer, bool) {
	b, ok := wires.Load(r)
	if !ok {
		return nil, false
	}
	return b.(mem.Buffer), true
}

// AnyField is ResourceField for the Any a state-of-the-world response
// carries.
func AnyField(a *anypb.Any) (mem.Buffer, bool) {
	b, ok := wires.Load(a)
	if !ok {
		return nil, false
	}
	return b.(mem.Buffer), true
}

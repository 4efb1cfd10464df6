package xdscache

import (
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Every resource version the cache serves is encoded once, as the
// Resource message a delta response carries, and the Any inside it (what
// a state-of-the-world response carries) is a part of those bytes. The
// gRPC codec (ResourceWire, AnyWire) writes responses from these shared
// bytes instead of encoding each response's resources again: a thousand
// Envoys taking the same config at once hold one copy of it, not a
// thousand in gRPC's send buffers.

// wires maps each entry's *discoveryv3.Resource and its *anypb.Any to
// their encoding, while the entry lives (see newEntry).
var wires sync.Map

// newEntry makes the entry for a resource version whose encoding is b:
// its Resource message, encoded once, with the Any's value a part of that
// encoding (b itself is then garbage).
func newEntry(typeURL, name, version string, b []byte) *entry {
	// Fields in number order, empty ones left out, as the proto package
	// writes them: version (1), the Any (2: type URL, value), name (3).
	anyLen := sizeField(len(typeURL)) + sizeField(len(b))
	wire := make([]byte, 0, sizeField(len(version))+protowire.SizeTag(2)+protowire.SizeBytes(anyLen)+sizeField(len(name)))
	wire = appendField(wire, 1, []byte(version))
	wire = protowire.AppendTag(wire, 2, protowire.BytesType)
	wire = protowire.AppendVarint(wire, uint64(anyLen))
	anyStart := len(wire)
	wire = appendField(wire, 1, []byte(typeURL))
	wire = appendField(wire, 2, b)
	anyEnd := len(wire)
	wire = appendField(wire, 3, []byte(name))

	a := &anypb.Any{TypeUrl: typeURL, Value: wire[anyEnd-len(b) : anyEnd : anyEnd]}
	e := &entry{version: version, res: &discoveryv3.Resource{Name: name, Version: version, Resource: a}}
	wires.Store(e.res, wire)
	wires.Store(a, wire[anyStart:anyEnd:anyEnd])
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

// ResourceWire returns the encoding of a Resource the cache made (one of
// a delta response's resources), which must not be modified; false for
// any other.
func ResourceWire(r *discoveryv3.Resource) ([]byte, bool) {
	b, ok := wires.Load(r)
	if !ok {
		return nil, false
	}
	return b.([]byte), true
}

// AnyWire returns the encoding of an Any the cache made (one of a state
// of the world response's resources), which must not be modified; false
// for any other.
func AnyWire(a *anypb.Any) ([]byte, bool) {
	b, ok := wires.Load(a)
	if !ok {
		return nil, false
	}
	return b.([]byte), true
}

package xdscache

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// An entry's shared response fields are exactly what the proto package
// writes for a delta response carrying its Resource and a state of the
// world response carrying its Any, and its Any's value is the resource's
// own encoding, held once.
func TestEntryFieldsAreTheEncoding(t *testing.T) {
	for _, tc := range []struct{ typeURL, name, version, value string }{
		{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "web", "0123456789abcdef", "\x0a\x03web"},
		{"t", "", "", ""},
		{"t", strings.Repeat("n", 300), strings.Repeat("v", 200), strings.Repeat("x", 70000)},
	} {
		e := newEntry(tc.typeURL, tc.name, tc.version, []byte(tc.value))
		if got := string(e.res.GetResource().GetValue()); got != tc.value {
			t.Errorf("%q: Any value %d bytes, want %d", tc.name, len(got), len(tc.value))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{e.res}})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := ResourceField(e.res)
		if !ok || !bytes.Equal(got.ReadOnlyData(), want) {
			t.Errorf("%q: delta field found %v, differs from the proto package's", tc.name, ok)
		}
		want, err = proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{e.res.GetResource()}})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := AnyField(e.res.GetResource()); !ok || !bytes.Equal(got.ReadOnlyData(), want) {
			t.Errorf("%q: state of the world field found %v, differs from the proto package's", tc.name, ok)
		}
	}
}

// An entry's encodings are forgotten once the cache no longer holds it.
func TestEntryWireForgottenWhenCollected(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := c.intern("t", "web", "1", []byte("abc"))
	res := e.res
	if _, ok := ResourceField(res); !ok {
		t.Fatal("a new entry has no encoding")
	}
	e = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		_, okRes := ResourceField(res)
		_, okAny := AnyField(res.GetResource())
		if !okRes && !okAny {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("encodings kept 10 s after the entry was dropped (resource %v, any %v)", okRes, okAny)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

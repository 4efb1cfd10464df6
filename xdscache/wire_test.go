package xdscache

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// An entry's shared encodings are exactly what the proto package writes
// for its Resource and its Any, and its Any's value is the resource's
// own encoding, held once.
func TestEntryWireIsTheEncoding(t *testing.T) {
	for _, tc := range []struct{ typeURL, name, version, value string }{
		{"type.googleapis.com/envoy.config.cluster.v3.Cluster", "web", "0123456789abcdef", "\x0a\x03web"},
		{"t", "", "", ""},
		{"t", strings.Repeat("n", 300), strings.Repeat("v", 200), strings.Repeat("x", 70000)},
	} {
		e := newEntry(tc.typeURL, tc.name, tc.version, []byte(tc.value))
		if got := string(e.res.GetResource().GetValue()); got != tc.value {
			t.Errorf("%q: Any value %d bytes, want %d", tc.name, len(got), len(tc.value))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.res)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := ResourceWire(e.res)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("%q: resource encoding %x (found %v), want %x", tc.name, got, ok, want)
		}
		wantAny, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.res.GetResource())
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := AnyWire(e.res.GetResource()); !ok || !bytes.Equal(got, wantAny) {
			t.Errorf("%q: Any encoding %x (found %v), want %x", tc.name, got, ok, wantAny)
		}
	}
}

// An entry's encodings are forgotten once the cache no longer holds it.
func TestEntryWireForgottenWhenCollected(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := c.intern("t", "web", "1", []byte("abc"))
	res := e.res
	if _, ok := ResourceWire(res); !ok {
		t.Fatal("a new entry has no encoding")
	}
	e = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		_, okRes := ResourceWire(res)
		_, okAny := AnyWire(res.GetResource())
		if !okRes && !okAny {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("encodings kept 10 s after the entry was dropped (resource %v, any %v)", okRes, okAny)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

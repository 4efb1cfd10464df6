package xdscache

import (
	"context"
	"runtime"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Groups that serve the same resource share one marshalled copy; a
// resource of the same name and version but other bytes gets its own; and
// an entry no group holds any more is forgotten.
func TestGroupsShareIdenticalResources(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(10, 2)
	for _, key := range []string{"a", "b"} {
		if err := c.SetSnapshot(context.Background(), key, e.snapshot()); err != nil {
			t.Fatal(err)
		}
	}
	a, b := c.group("a", false), c.group("b", false)
	for _, typ := range order {
		for name, ea := range a.types[typ].resources {
			if eb := b.types[typ].resources[name]; eb != ea {
				t.Errorf("%s %q: groups a and b hold different entries for the same resource", typ, name)
			}
		}
	}

	// Same name and version, other bytes: not shared.
	other := e.snapshot()
	other.Resources[types.Listener] = cache.NewResources("other", []types.Resource{&listenerv3.Listener{Name: "http", StatPrefix: "other"}})
	if err := c.SetSnapshot(context.Background(), "c", other); err != nil {
		t.Fatal(err)
	}
	if la, lc := a.types[resource.ListenerType].resources["http"], c.group("c", false).types[resource.ListenerType].resources["http"]; la == lc {
		t.Error("a listener with other bytes under the same version shares group a's entry")
	}

	for _, key := range []string{"a", "b", "c"} {
		c.ClearSnapshot(key)
	}
	a, b = nil, nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		c.internMu.Lock()
		n := len(c.interned)
		c.internMu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries still interned after every group was cleared", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

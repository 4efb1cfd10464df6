package controlplane

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// storeFunc is a snapshot store that runs fn on SetSnapshot.
type storeFunc func(key string) error

func (f storeFunc) SetSnapshot(_ context.Context, key string, _ cache.ResourceSnapshot) error {
	return f(key)
}
func (storeFunc) ClearSnapshot(string) {}

// A snapshot is recorded as served before the cache has it (an Envoy's
// ACK can come back before SetSnapshot returns, and must find its
// version); a failed SetSnapshot puts the previous one back.
func TestSetSnapshotRecordsFirstAndRevertsOnFailure(t *testing.T) {
	old := &groupSnapshot{group: "edge", versions: map[resource.Type]string{resource.ClusterType: "v1"}}
	next := &groupSnapshot{group: "edge", versions: map[resource.Type]string{resource.ClusterType: "v2"}}
	var p *publisher
	seen := ""
	p = newPublisher(slog.New(slog.DiscardHandler), newMetrics(), storeFunc(func(key string) error {
		seen = p.servedVersions(key)[resource.ClusterType].version
		return nil
	}))
	p.groups["edge"] = old
	if err := p.setSnapshot(next, old); err != nil {
		t.Fatal(err)
	}
	if seen != "v2" {
		t.Errorf("during SetSnapshot the served version was %q; want v2, recorded first", seen)
	}

	p.cache = storeFunc(func(string) error { return errors.New("refused") })
	third := &groupSnapshot{group: "edge", versions: map[resource.Type]string{resource.ClusterType: "v3"}}
	if err := p.setSnapshot(third, next); err == nil {
		t.Fatal("setSnapshot with a failing cache returned no error")
	}
	if got := p.servedVersions("edge")[resource.ClusterType].version; got != "v2" {
		t.Errorf("after a failed SetSnapshot the served version is %q; want the previous v2", got)
	}
	fresh := &groupSnapshot{group: "new", versions: map[resource.Type]string{resource.ClusterType: "v1"}}
	if err := p.setSnapshot(fresh, nil); err == nil || p.servedVersions("new") != nil {
		t.Errorf("a new group whose SetSnapshot failed is served: %v", p.servedVersions("new"))
	}
}

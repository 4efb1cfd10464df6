package controlplane

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
)

// groupSnapshot is one proxy group's built config: immutable once made.
type groupSnapshot struct {
	group     string
	resources envoy.Resources
	versions  map[resource.Type]string
	snapshot  *cache.Snapshot
	// sources maps resources (by type and name) to their policy file and
	// line, so a NACK can name what to fix.
	sources map[resource.Type]map[string]string
}

// build translates the inputs and builds every group's snapshot. It is a
// pure function of its inputs: the same Consul state and policy give the
// same versions on every replica and after every restart.
func build(snap *registry.Snapshot, set *policy.Set) ([]*groupSnapshot, policy.Diagnostics, error) {
	res := translator.Translate(snap, set)
	out := make([]*groupSnapshot, 0, len(res.Configs))
	for _, cfg := range res.Configs {
		resources, err := envoy.Build(cfg)
		if err != nil {
			return nil, res.Diagnostics, err
		}
		gs, err := newGroupSnapshot(cfg.Group, resources)
		if err != nil {
			return nil, res.Diagnostics, err
		}
		gs.sources = envoy.Sources(cfg)
		out = append(out, gs)
	}
	return out, res.Diagnostics, nil
}

// newGroupSnapshot versions each resource type by a hash of its content, so
// a type whose resources did not change keeps its version and is not
// re-pushed: a health flip changes the endpoints' version only.
func newGroupSnapshot(group string, resources envoy.Resources) (*groupSnapshot, error) {
	gs := &groupSnapshot{group: group, resources: resources, versions: map[resource.Type]string{}}
	snap := &cache.Snapshot{}
	for _, typ := range envoy.Types {
		items := resources[typ]
		v, err := contentVersion(items)
		if err != nil {
			return nil, fmt.Errorf("group %q: version %s: %w", group, typ, err)
		}
		gs.versions[typ] = v
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(v, items)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("group %q: inconsistent snapshot: %w", group, err)
	}
	gs.snapshot = snap
	return gs, nil
}

// contentVersion hashes resources (already sorted by name) with
// deterministic proto encoding.
func contentVersion(items []types.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, r := range items {
		b, err := opts.Marshal(r)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

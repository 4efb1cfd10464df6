package controlplane

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/ir"
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
	// changedAt is, per type, when the input change that produced its
	// version arrived (see stamp): where convergence is measured from.
	changedAt map[resource.Type]time.Time
	// rateLimits is the group's part of the rate limit service's config
	// (ratelimit.go): not served to the group's Envoys.
	rateLimits []*rlsconfv3.RateLimitConfig
}

// stamp sets changedAt before gs is published in place of old: a type
// whose version old had too keeps old's time, a new version gets at.
func (gs *groupSnapshot) stamp(old *groupSnapshot, at time.Time) {
	gs.changedAt = make(map[resource.Type]time.Time, len(gs.versions))
	for typ, v := range gs.versions {
		if old != nil && old.versions[typ] == v && !old.changedAt[typ].IsZero() {
			gs.changedAt[typ] = old.changedAt[typ]
		} else {
			gs.changedAt[typ] = at
		}
	}
}

// build translates the inputs and builds every group's snapshot, with the
// group's Builder from builders (created when missing; groups gone from the
// result are dropped from it). The same Consul state and policy give the
// same versions on every replica and after every restart: a Builder only
// saves work, it never changes what is built.
//
// A group that fails to build (a bug: translation produced something Envoy's
// schema refuses) is reported in failed, by group, and left out of the
// result; every other group is built as usual. One bad group must never
// stop Consul changes from reaching the Envoys of the others.
//
// mesh (nil when the mesh is off or not synced yet) is what the groups'
// routes through the mesh need. tr translates, reusing what it translated
// last time (a translator only saves work, like a Builder).
func build(tr *translator.EdgeTranslator, snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot, builders map[string]*envoy.Builder) (out []*groupSnapshot, failed map[string]error, diags policy.Diagnostics) {
	res := tr.Translate(snap, set, mesh)
	out = make([]*groupSnapshot, 0, len(res.Configs))
	seen := make(map[string]bool, len(res.Configs))
	for _, cfg := range res.Configs {
		seen[cfg.Group] = true
		b := builders[cfg.Group]
		if b == nil {
			b = &envoy.Builder{}
			builders[cfg.Group] = b
		}
		gs, err := buildGroup(b, cfg)
		if err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[cfg.Group] = err
			continue
		}
		out = append(out, gs)
	}
	for group := range builders {
		if !seen[group] {
			delete(builders, group)
		}
	}
	return out, failed, res.Diagnostics
}

// buildGroup builds one group's snapshot. On error the Builder keeps what
// it remembered from its last good build.
func buildGroup(b *envoy.Builder, cfg *ir.Config) (*groupSnapshot, error) {
	resources, digests, err := b.Build(cfg)
	if err != nil {
		return nil, err
	}
	gs, err := newGroupSnapshot(cfg.Group, resources, digests)
	if err != nil {
		return nil, err
	}
	gs.sources = b.Sources()
	gs.rateLimits = envoy.RateLimitConfigs(cfg)
	return gs, nil
}

// newGroupSnapshot versions each resource type by a hash of its resources'
// digests, so a type whose resources did not change keeps its version and
// is not re-pushed: a health flip changes the endpoints' version only. The
// digests also become the snapshot's per-resource versions for delta xDS,
// which go-control-plane would otherwise compute by marshalling every
// resource again on each change.
func newGroupSnapshot(group string, resources envoy.Resources, digests envoy.Digests) (*groupSnapshot, error) {
	gs := assembleSnapshot(group, resources, digests)
	if err := gs.consistent(); err != nil {
		return nil, err
	}
	return gs, nil
}

// consistent checks that the snapshot holds every endpoint and route its
// clusters and listeners name, and no other.
func (gs *groupSnapshot) consistent() error {
	if err := gs.snapshot.Consistent(); err != nil {
		return fmt.Errorf("group %q: inconsistent snapshot: %w", gs.group, err)
	}
	return nil
}

// assembleSnapshot is newGroupSnapshot without the consistency check.
func assembleSnapshot(group string, resources envoy.Resources, digests envoy.Digests) *groupSnapshot {
	gs := &groupSnapshot{group: group, resources: resources, versions: map[resource.Type]string{}}
	snap := &cache.Snapshot{VersionMap: map[string]map[string]string{}}
	for _, typ := range envoy.Types {
		items := resources[typ]
		v := typeVersion(items, digests[typ])
		gs.versions[typ] = v
		snap.Resources[cache.GetResponseType(typ)] = cache.NewResources(v, items)
		// Shared, not copied: a Builder makes new maps on every Build and
		// nothing writes to them afterwards.
		snap.VersionMap[typ] = digests[typ]
		if snap.VersionMap[typ] == nil {
			snap.VersionMap[typ] = map[string]string{}
		}
	}
	gs.snapshot = snap
	return gs
}

// typeVersion hashes the names and digests of a type's resources (sorted
// by name): 16 hex digits.
func typeVersion(items []types.Resource, digests map[string]string) string {
	h := sha256.New()
	var buf []byte
	for _, r := range items {
		name := envoy.GetName(r)
		buf = strconv.AppendInt(buf[:0], int64(len(name)), 10)
		buf = append(buf, ':')
		buf = append(buf, name...)
		buf = append(buf, '=')
		buf = append(buf, digests[name]...)
		buf = append(buf, ';')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

package controlplane

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
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

// edgeBuilder builds the edge groups' snapshots, remembering its last
// translation, each group's Builder and each group's last snapshot, so
// that a change costs what it changed (see build). Its zero value is
// ready; it is not safe for concurrent use (the publisher's one goroutine
// uses it).
type edgeBuilder struct {
	tr       translator.EdgeTranslator
	builders map[string]*envoy.Builder // each group's, to rebuild only what changed
	last     map[string]*groupSnapshot // each group's last build
	// endpointPos maps each group's endpoints, by name, to their place in
	// its last build's endpoint resources (a health patch keeps places).
	endpointPos map[string]map[string]int
	// healthPatches counts the builds that took the health path (tests).
	healthPatches int
}

// build translates the inputs and builds every group's snapshot. The same
// Consul state and policy give the same versions on every replica and after
// every restart: what the builder remembers only saves work, it never
// changes what is built.
//
// A change that is only instances' health (translator.TranslateHealth: a
// check passing or failing, the common case) takes a path of its own: the
// changed clusters' endpoints are rebuilt and put in place of the old ones
// in each group's last snapshot, so a flip among 5,000 services costs one
// endpoints resource, not a walk of every group's clusters, listeners and
// references (the names did not change, so the last snapshot's consistency
// holds). Anything else is translated and built in full.
//
// A group that fails to build (a bug: translation produced something Envoy's
// schema refuses) is reported in failed, by group, and left out of the
// result; every other group is built as usual. One bad group must never
// stop Consul changes from reaching the Envoys of the others.
//
// mesh (nil when the mesh is off or not synced yet) is what the groups'
// routes through the mesh need.
func (eb *edgeBuilder) build(snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot) (out []*groupSnapshot, failed map[string]error, diags policy.Diagnostics) {
	if eb.builders == nil {
		eb.builders, eb.last, eb.endpointPos = map[string]*envoy.Builder{}, map[string]*groupSnapshot{}, map[string]map[string]int{}
	}
	if res, changed, ok := eb.tr.TranslateHealth(snap, set, mesh); ok {
		eb.healthPatches++
		return eb.buildHealth(res, changed)
	}
	res := eb.tr.Translate(snap, set, mesh)
	out = make([]*groupSnapshot, 0, len(res.Configs))
	seen := make(map[string]bool, len(res.Configs))
	for _, cfg := range res.Configs {
		seen[cfg.Group] = true
		gs, err := eb.buildGroup(cfg)
		if err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[cfg.Group] = err
			continue
		}
		out = append(out, gs)
	}
	for group := range eb.builders {
		if !seen[group] {
			delete(eb.builders, group)
			delete(eb.last, group)
			delete(eb.endpointPos, group)
		}
	}
	return out, failed, res.Diagnostics
}

// buildGroup builds one group in full with its Builder and remembers the
// result (or, on failure, that the group has no last build).
func (eb *edgeBuilder) buildGroup(cfg *ir.Config) (*groupSnapshot, error) {
	b := eb.builders[cfg.Group]
	if b == nil {
		b = &envoy.Builder{}
		eb.builders[cfg.Group] = b
	}
	delete(eb.endpointPos, cfg.Group)
	gs, err := buildGroup(b, cfg)
	if err != nil {
		delete(eb.last, cfg.Group)
		return nil, err
	}
	eb.last[cfg.Group] = gs
	return gs, nil
}

// buildHealth builds res, a health patch of the last translation: changed
// lists, by group, the clusters whose endpoints changed.
func (eb *edgeBuilder) buildHealth(res *translator.Result, changed map[string][]int) (out []*groupSnapshot, failed map[string]error, diags policy.Diagnostics) {
	out = make([]*groupSnapshot, 0, len(res.Configs))
	for _, cfg := range res.Configs {
		old := eb.last[cfg.Group]
		var gs *groupSnapshot
		var err error
		switch {
		case old == nil: // failed last time: try in full
			gs, err = eb.buildGroup(cfg)
		case len(changed[cfg.Group]) == 0:
			// The same config; a copy, as the publisher stamps what it gets.
			cp := *old
			gs = &cp
		default:
			if gs, err = eb.patchEndpoints(old, cfg, changed[cfg.Group]); err == nil {
				eb.last[cfg.Group] = gs
			} else {
				// The translation moved on without this group's build: its
				// next build is a full one, as after any failure.
				delete(eb.last, cfg.Group)
				delete(eb.endpointPos, cfg.Group)
			}
		}
		if err != nil {
			if failed == nil {
				failed = map[string]error{}
			}
			failed[cfg.Group] = err
			continue
		}
		out = append(out, gs)
	}
	return out, failed, res.Diagnostics
}

// patchEndpoints is old with the endpoints of cfg's clusters at indexes
// idx built again; everything else, and every other endpoints resource,
// is shared with old (which stays as it was: snapshots are immutable).
func (eb *edgeBuilder) patchEndpoints(old *groupSnapshot, cfg *ir.Config, idx []int) (*groupSnapshot, error) {
	const typ = resource.EndpointType
	pos := eb.endpointPos[cfg.Group]
	if pos == nil {
		pos = make(map[string]int, len(old.resources[typ]))
		for i, r := range old.resources[typ] {
			pos[envoy.GetName(r)] = i
		}
		eb.endpointPos[cfg.Group] = pos
	}
	items := slices.Clone(old.resources[typ])
	digests := maps.Clone(old.snapshot.VersionMap[typ])
	rt := cache.GetResponseType(typ)
	indexed := maps.Clone(old.snapshot.Resources[rt].Items)
	for _, i := range idx {
		c := &cfg.Clusters[i]
		name := envoy.SubsetClusterName(c.Service, c.Subset)
		p, ok := pos[name]
		if !ok {
			return nil, fmt.Errorf("group %q: endpoints %q: not in the last build", cfg.Group, name)
		}
		r, d, err := envoy.LoadAssignment(c)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", cfg.Group, err)
		}
		items[p], digests[name], indexed[name] = r, d, types.ResourceWithTTL{Resource: r}
	}
	gs := &groupSnapshot{group: old.group, resources: maps.Clone(old.resources), versions: maps.Clone(old.versions),
		sources: old.sources, rateLimits: old.rateLimits}
	gs.resources[typ] = items
	v := typeVersion(items, digests)
	gs.versions[typ] = v
	snap := &cache.Snapshot{Resources: old.snapshot.Resources, VersionMap: maps.Clone(old.snapshot.VersionMap)}
	snap.Resources[rt] = cache.Resources{Version: v, Items: indexed}
	snap.VersionMap[typ] = digests
	gs.snapshot = snap
	return gs, nil
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

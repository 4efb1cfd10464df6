package controlplane

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// publisher builds each proxy group's snapshot from the inputs and puts it
// in the snapshot cache; it is the only one that changes the cache. It
// decides which groups are served: those of the policy, plus groups that
// left the policy while Envoys still use them (retained). One goroutine
// (the debounce loop) calls publish; the others read its state.
type publisher struct {
	log     *slog.Logger
	metrics *metrics
	cache   snapshotStore
	proxies *proxies // set after both are made; asked who uses a group

	// Used by publish alone (one goroutine), so not under a lock.
	edge          edgeBuilder       // the last translation and builds, to redo only what changed
	buildFailures map[string]string // each failing group's error, while it fails
	warned        map[string]bool   // translation warnings already logged
	mesh          meshState         // the sidecar mesh's builds (mesh.go)
	// changeAt is when the input change behind this publish arrived (set
	// by rebuild before publish and publishMesh).
	changeAt    time.Time
	heldForMesh []string // groups not built until the mesh's first sync
	// rateLimitSeries is the limits gauge's domains (publishRateLimits).
	rateLimitSeries map[string]int
	// keptSet is the set served last while groups were kept: keptFrom
	// (the policy) with keptNames kept (retain).
	keptFrom, keptSet *policy.Set
	keptNames         []string

	// pubMu orders changes to the cache with the decisions behind them
	// (SetSnapshot, ClearSnapshot). Taken before mu, and before the
	// proxies' lock.
	pubMu sync.Mutex
	mu    sync.Mutex
	// groups is each served group's published snapshot.
	groups map[string]*groupSnapshot
	// retained are groups removed from the policy while Envoys still use
	// them: they keep being served from lastServed (see retain).
	retained map[string]bool
	// lastServed is the policy set, retained groups included, of the last
	// build.
	lastServed *policy.Set
	ready      bool
	failing    []string // the groups whose latest build failed

	// restored are the groups served before a restart (restore), until
	// the first build decides which of them are retained.
	restored map[string]bool
}

// snapshotStore is what the publisher changes: the xDS cache.
type snapshotStore interface {
	SetSnapshot(ctx context.Context, key string, snap cache.ResourceSnapshot) error
	ClearSnapshot(key string)
}

func newPublisher(log *slog.Logger, m *metrics, c snapshotStore) *publisher {
	return &publisher{log: log, metrics: m, cache: c,
		buildFailures: map[string]string{}, warned: map[string]bool{},
		groups: map[string]*groupSnapshot{}, retained: map[string]bool{}}
}

// publish builds every served group from consul, set and mesh (nil
// without the mesh) and publishes what changed. It returns the set served
// (retained groups included) and whether the groups retained changed.
//
// meshPending says the mesh is on but has not synced yet: groups whose
// routes go through the mesh are then not built at all, and keep their
// last published snapshot (none after a start, so their Envoys wait),
// rather than get one whose routes through the mesh answer 503 because
// an input is missing. They are built on the first rebuild after the
// mesh syncs; readiness waits for that sync.
func (p *publisher) publish(consul *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot, meshPending bool) (served *policy.Set, retentionChanged bool) {
	start := time.Now()
	served, retentionChanged = p.retain(set)
	built, held := served, []string(nil)
	if meshPending {
		built, held = served.Without((*policy.ProxyGroup).UsesMesh)
	}
	p.logHeld(held)
	groups, failed, diags := p.edge.build(consul, built, mesh)
	p.metrics.snapshotBuild.Observe(time.Since(start).Seconds())
	p.reportBuildFailures(failed, served)
	p.mu.Lock()
	p.lastServed = served
	p.mu.Unlock()
	if len(groups) == 0 && len(failed) > 0 {
		// Nothing built: every last good snapshot stays, and readiness
		// stays as it was (/readyz names the failing groups). Groups
		// retain withdrew leave the rate limit service's config.
		p.publishRateLimits()
		return served, retentionChanged
	}
	p.logWarnings(diags)
	changed := 0
	for _, gs := range groups {
		p.mu.Lock()
		old := p.groups[gs.group]
		p.mu.Unlock()
		if old != nil && sameVersions(old, gs) {
			// Same config; keep the new one anyway, for its policy sources
			// (an edit may have moved lines without changing what is served).
			gs.stamp(old, p.changeAt)
			p.mu.Lock()
			p.groups[gs.group] = gs
			p.mu.Unlock()
			continue
		}
		p.pubMu.Lock()
		if err := p.setSnapshot(gs, old); err != nil {
			p.pubMu.Unlock()
			p.metrics.snapshotErrors.Inc()
			p.log.Error("set snapshot failed; the last good config keeps serving", "group", gs.group, "err", err)
			continue
		}
		changed++
		p.pubMu.Unlock()
		p.log.Debug("snapshot published", "group", gs.group, "versions", gs.versions)
	}
	p.publishRateLimits()
	p.mu.Lock()
	if !p.ready && len(held) == 0 {
		p.ready = true
		p.metrics.ready.Set(1)
		p.log.Info("ready: serving xDS", "groups", len(groups))
	}
	p.mu.Unlock()
	if changed > 0 {
		p.log.Info("config updated", "groups_changed", changed, "build_time", time.Since(start).Round(time.Microsecond))
	}
	return served, retentionChanged
}

// logHeld logs the groups held back for the mesh's first sync when they
// change (once at a start, and once when the sync releases them).
func (p *publisher) logHeld(held []string) {
	if slices.Equal(held, p.heldForMesh) {
		return
	}
	if len(held) > 0 {
		p.log.Info("waiting for the mesh's first sync before serving the proxy groups that route through it", "groups", held)
	} else {
		p.log.Info("mesh synced; serving the proxy groups that route through it", "groups", p.heldForMesh)
	}
	p.heldForMesh = held
}

// reportBuildFailures logs and counts groups that failed to build. Each
// keeps its last good snapshot (its Envoys keep running it) while every
// other group goes on following Consul and the policy. A failure is logged
// when it starts or changes, and once more when the group builds again, not
// on every rebuild.
func (p *publisher) reportBuildFailures(failed map[string]error, served *policy.Set) {
	p.metrics.failingGroups.Set(float64(len(failed)))
	names := slices.Sorted(maps.Keys(failed))
	p.mu.Lock()
	p.failing = names
	p.mu.Unlock()
	for group, err := range failed {
		p.metrics.snapshotErrors.Inc()
		if msg := err.Error(); p.buildFailures[group] != msg {
			p.buildFailures[group] = msg
			p.log.Error("proxy group failed to build; its Envoys keep its last good config, other groups are not affected",
				"group", group, "err", msg)
		}
	}
	for group := range p.buildFailures {
		if _, still := failed[group]; !still {
			delete(p.buildFailures, group)
			if _, inPolicy := served.Group(group); inPolicy {
				p.log.Info("proxy group builds again", "group", group)
			}
		}
	}
}

// retain decides what happens to proxy groups that left the policy since
// the last build, and returns the set to build. A group still used by
// connected Envoys is kept, from the last build's policy: its Envoys keep
// their listeners and routes, and its endpoints keep following Consul
// (removing a file must not blank running proxies, nor leave them sending
// to dead instances) until its last Envoy disconnects or the group comes
// back. A group no Envoy uses is withdrawn: its snapshot is cleared, so an
// Envoy that connects later gets nothing, as for any undefined group.
func (p *publisher) retain(set *policy.Set) (served *policy.Set, changed bool) {
	var kept, newlyKept, withdrawn []string
	counts := map[string]int{}
	// pubMu held through the clearing: no publish between the decision to
	// withdraw a group and its clearing, and (whileIdle) no stream of it
	// registering either.
	p.pubMu.Lock()
	p.mu.Lock()
	last, restored := p.lastServed, p.restored
	p.restored = nil
	for name := range p.retained {
		if _, back := set.Group(name); back {
			delete(p.retained, name)
			changed = true
		}
	}
	if last != nil {
		for _, g := range last.Groups {
			if _, ok := set.Group(g.Name); ok {
				continue
			}
			used, n := p.proxies.inUse(g.Name)
			switch {
			case used:
				if !p.retained[g.Name] {
					p.retained[g.Name] = true
					newlyKept = append(newlyKept, g.Name)
					counts[g.Name] = n
				}
				kept = append(kept, g.Name)
			case p.proxies.whileIdle(g.Name, func() { p.cache.ClearSnapshot(g.Name); p.proxies.forgetLocked(g.Name) }):
				delete(p.retained, g.Name)
				delete(p.groups, g.Name)
				withdrawn = append(withdrawn, g.Name)
			default: // a stream registered just now: keep it
				p.retained[g.Name] = true
				kept = append(kept, g.Name)
			}
		}
	}
	p.mu.Unlock()
	p.pubMu.Unlock()

	for _, name := range newlyKept {
		if restored[name] {
			p.log.Warn("proxy group removed from policy before the restart is served again from state.dir: its Envoys that reconnect keep its listeners and routes, with endpoints following Consul, until they disconnect; if none does within the linger, it is withdrawn",
				"group", name, "envoys", counts[name])
			continue
		}
		p.log.Warn("proxy group removed from policy while Envoys use it: they keep its listeners and routes, with endpoints following Consul, until they disconnect; restore the group or stop them",
			"group", name, "envoys", counts[name])
	}
	for _, name := range withdrawn {
		p.log.Info("proxy group removed from policy; no Envoy uses it, so its config is withdrawn", "group", name)
	}
	changed = changed || len(newlyKept)+len(withdrawn) > 0
	if len(kept) == 0 {
		p.keptFrom, p.keptNames, p.keptSet = nil, nil, nil
		return set, changed
	}
	// The same policy and the same kept groups serve the very set served
	// before, so that a Consul change alone leaves the served set as it
	// was (which the edge builder's health path needs): a kept group's
	// definition does not change while it is kept.
	if set == p.keptFrom && slices.Equal(kept, p.keptNames) {
		return p.keptSet, changed
	}
	p.keptFrom, p.keptNames, p.keptSet = set, kept, set.Keep(last, kept)
	return p.keptSet, changed
}

func sameVersions(a, b *groupSnapshot) bool {
	for typ, v := range a.versions {
		if b.versions[typ] != v {
			return false
		}
	}
	return len(a.versions) == len(b.versions)
}

// logWarnings logs each translation warning once, not on every rebuild.
func (p *publisher) logWarnings(diags policy.Diagnostics) {
	p.metrics.policyWarnings.Set(float64(len(diags)))
	p.warned = logNew(p.log, p.warned, diags)
}

// logNew logs the diagnostics not in warned and returns the set of all of
// them, to pass as warned next time: each is logged once while it lasts.
func logNew(log *slog.Logger, warned map[string]bool, diags policy.Diagnostics) map[string]bool {
	seen := make(map[string]bool, len(diags))
	for _, d := range diags {
		msg := d.String()
		seen[msg] = true
		if !warned[msg] {
			log.Warn(msg)
		}
	}
	return seen
}

// groupState implements groupView.
func (p *publisher) groupState(group string) (served, retained, ready bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.servedLocked(group), p.retained[group], p.ready
}

// servedLocked reports whether a group is served: published, retained, or
// restored and not yet built. Called with p.mu held.
func (p *publisher) servedLocked(group string) bool {
	return p.groups[group] != nil || p.retained[group] || p.restored[group]
}

// sources implements groupView.
func (p *publisher) sources(group, typeURL string) map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gs := p.groups[group]; gs != nil {
		return gs.sources[typeURL] // immutable, like the groupSnapshot
	}
	return nil
}

// setSnapshot puts gs in the cache in place of old. gs is recorded as
// served first: an Envoy can ACK it before SetSnapshot returns, and its
// ACK must find the version it accepted (see proxies.ack). A failed
// SetSnapshot puts old back. Called with pubMu held.
func (p *publisher) setSnapshot(gs, old *groupSnapshot) error {
	gs.stamp(old, p.changeAt)
	p.mu.Lock()
	p.groups[gs.group] = gs
	p.mu.Unlock()
	err := p.cache.SetSnapshot(context.Background(), gs.group, gs.snapshot)
	if err != nil {
		p.mu.Lock()
		if old != nil {
			p.groups[gs.group] = old
		} else {
			delete(p.groups, gs.group)
		}
		p.mu.Unlock()
	}
	return err
}

// servedVersions implements groupView.
func (p *publisher) servedVersions(group string) map[string]servedVersion {
	p.mu.Lock()
	gs := p.groups[group]
	p.mu.Unlock()
	if gs == nil {
		return nil
	}
	out := make(map[string]servedVersion, len(gs.versions))
	for typ, v := range gs.versions {
		out[typ] = servedVersion{version: v, changedAt: gs.changedAt[typ]} // both immutable, like gs
	}
	return out
}

// forgetUnknown implements groupView: without it every node.cluster a
// client sends would cost memory for as long as Switchyard runs.
func (p *publisher) forgetUnknown(group string) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	served := p.servedLocked(group)
	p.mu.Unlock()
	if !served {
		p.proxies.whileIdle(group, func() { p.cache.ClearSnapshot(group); p.proxies.forgetLocked(group) })
	}
}

// group returns a group's published snapshot and the names of all.
func (p *publisher) group(name string) (*groupSnapshot, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.groups[name], slices.Sorted(maps.Keys(p.groups))
}

// state returns what readiness needs: whether the first build is done,
// and the groups failing to build.
func (p *publisher) state() (ready bool, failing []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready, p.failing
}

// served returns the policy set of the last build (nil before one).
func (p *publisher) served() *policy.Set {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastServed
}

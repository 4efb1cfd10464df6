package controlplane

import (
	"maps"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// sidecarBuild is a sidecar's own resources, built from its IR as last
// reported changed by the translator.
type sidecarBuild struct {
	own     envoy.Resources
	digests envoy.Digests
}

// meshState is the publisher's memory of the mesh: the translator and the
// shared builder, which keep the last translation and build, and each
// sidecar's own build. Used by publishMesh alone (one goroutine).
type meshState struct {
	translator translator.MeshTranslator
	builder    envoy.MeshBuilder
	sidecars   map[string]*sidecarBuild // by proxy ID
	warned     map[string]bool
	// last is the snapshot last published from: the mesh depends on it
	// alone, so a rebuild for a gateway change skips the mesh.
	last    *registry.MeshSnapshot
	lastSet *policy.Set // the policy set last published from
	// leavesFrom is the snapshot the leaf expiry series were set from;
	// leafSeries are the services with a series.
	leavesFrom *registry.MeshSnapshot
	leafSeries map[string]bool
	// failed is each failing sidecar's error: it is retried when the
	// translator reports it again (what it is built from changed), and
	// its error is logged once.
	failed map[string]string
	// retry are sidecars built but not published (the cache refused the
	// snapshot): published at the next rebuild.
	retry map[string]*ir.Sidecar
	// gone are the keys of sidecars no longer served whose config is
	// still published: withdrawn once no Envoy uses it.
	gone map[string]bool
	// rootsFailed: the roots last set failed to build (a bug).
	rootsFailed bool
}

// publishMesh publishes the Connect sidecars' snapshots that a change in
// Consul's view of the mesh (or in the policy) touches, and no others:
// the translator reports the sidecars whose IR or shared parts changed;
// the shared parts that changed (roots, a destination's cluster,
// endpoints and routes) are built once, each sidecar's own part only when
// its IR changed; a sidecar's snapshot is assembled, checked and
// published only when it was reported. A sidecar that cannot be built is
// logged and keeps its last snapshot; a sidecar gone from Consul is
// withdrawn once no Envoy uses it.
func (p *publisher) publishMesh(snap *registry.MeshSnapshot, set *policy.Set) {
	m := &p.mesh
	if snap == m.last && set == m.lastSet && len(m.retry) == 0 {
		// Unchanged since the last publish; only sidecars no longer
		// served may have lost their last Envoy since.
		p.withdrawSidecars()
		return
	}
	if m.sidecars == nil {
		m.sidecars, m.failed, m.retry, m.gone = map[string]*sidecarBuild{}, map[string]string{}, map[string]*ir.Sidecar{}, map[string]bool{}
	}
	up := m.translator.Translate(snap, set)
	p.logMeshWarnings(up.Diagnostics)
	p.setLeafExpiry(snap)
	m.last, m.lastSet = snap, set
	if up.NoRoots {
		// Nothing can be built; every sidecar keeps its last config.
		return
	}
	// Without the roots' secret no sidecar can be built: each keeps its
	// last config until the roots change, which reports every sidecar.
	rootsBuilt := p.buildShared(up)
	retry := m.retry
	m.retry = map[string]*ir.Sidecar{}
	for _, su := range up.Sidecars {
		delete(retry, su.ProxyID)
		key := sidecarKey(su.ProxyID)
		if su.Sidecar == nil {
			delete(m.sidecars, su.ProxyID)
			delete(m.failed, su.ProxyID)
			m.gone[key] = true
			continue
		}
		delete(m.gone, key)
		if su.IRChanged {
			delete(m.sidecars, su.ProxyID)
		}
		if rootsBuilt {
			p.publishSidecar(su.Sidecar)
		}
	}
	for _, sc := range retry { // not reported again, so unchanged
		if rootsBuilt {
			p.publishSidecar(sc)
		}
	}
	p.metrics.failingSidecars.Set(float64(len(m.failed)))
	p.withdrawSidecars()
}

// buildShared builds the shared parts the translator reports changed,
// and reports whether the roots are built. A destination's part that
// fails (a bug) fails the sidecars that use it, logged with each, until it
// is set again.
func (p *publisher) buildShared(up *translator.MeshUpdate) (rootsBuilt bool) {
	m := &p.mesh
	b := &m.builder
	if up.RootsChanged {
		m.rootsFailed = false
		if err := b.SetRoots(&up.Roots); err != nil {
			m.rootsFailed = true
			p.metrics.snapshotErrors.Inc()
			p.log.Error("mesh roots failed to build; every sidecar keeps its last good config", "err", err)
		}
	}
	for _, c := range up.Clusters {
		if err := b.SetCluster(c); err != nil {
			p.metrics.snapshotErrors.Inc()
			p.log.Error("mesh cluster failed to build; the sidecars that call it keep their last good config", "cluster", c.SNI, "err", err)
		}
	}
	for _, sni := range up.RemovedClusters {
		b.RemoveCluster(sni)
	}
	return !m.rootsFailed
}

// publishSidecar builds one sidecar's snapshot, its own part only when it
// has none built from its current IR, and publishes it unless its
// versions are the ones published already.
func (p *publisher) publishSidecar(sc *ir.Sidecar) {
	m := &p.mesh
	fail := func(err error) {
		p.metrics.snapshotErrors.Inc()
		delete(m.sidecars, sc.ProxyID)
		if msg := err.Error(); m.failed[sc.ProxyID] != msg {
			m.failed[sc.ProxyID] = msg
			p.log.Error("sidecar failed to build; its Envoy keeps its last good config", "proxy", sc.ProxyID, "err", err)
		}
	}
	b := m.sidecars[sc.ProxyID]
	if b == nil {
		if err := ir.ValidateSidecarIn(sc, m.translator.Roots().TrustDomain, m.translator.Cluster); err != nil {
			fail(err)
			return
		}
		own, digests, err := envoy.BuildSidecar(sc)
		if err != nil {
			fail(err)
			return
		}
		b = &sidecarBuild{own: own, digests: digests}
		m.sidecars[sc.ProxyID] = b
	}
	all, digests, err := m.builder.Sidecar(sc, b.own, b.digests)
	if err != nil {
		fail(err)
		return
	}
	key := sidecarKey(sc.ProxyID)
	gs := assembleSnapshot(key, all, digests)
	if !sameReferences(p.publishedGroup(key), gs) {
		if err := gs.consistent(); err != nil {
			fail(err)
			return
		}
	}
	delete(m.failed, sc.ProxyID)
	if !p.put(gs) {
		m.retry[sc.ProxyID] = sc
	}
}

// sameReferences reports whether next references what prev (a consistent
// snapshot, or nil) does and holds the same endpoints and routes by name:
// then it is consistent too, and go-control-plane's check, which decodes
// every listener's connection manager to find its routes, can be
// skipped. Only clusters and listeners reference other resources, and
// their versions hash their contents; a health flip changes neither.
func sameReferences(prev, next *groupSnapshot) bool {
	if prev == nil {
		return false
	}
	for _, typ := range []resource.Type{resource.ClusterType, resource.ListenerType} {
		if prev.versions[typ] != next.versions[typ] {
			return false
		}
	}
	for _, typ := range []resource.Type{resource.EndpointType, resource.RouteType} {
		a, b := prev.resources[typ], next.resources[typ]
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if envoy.GetName(a[i]) != envoy.GetName(b[i]) {
				return false
			}
		}
	}
	return true
}

// put publishes a group's or a sidecar's snapshot unless its versions are
// the ones published already.
func (p *publisher) put(gs *groupSnapshot) bool {
	p.mu.Lock()
	old := p.groups[gs.group]
	p.mu.Unlock()
	if old != nil && sameVersions(old, gs) {
		return true
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	if err := p.setSnapshot(gs, old); err != nil {
		p.metrics.snapshotErrors.Inc()
		p.log.Error("set snapshot failed; the last good config keeps serving", "key", gs.group, "err", err)
		return false
	}
	p.log.Debug("snapshot published", "key", gs.group, "versions", gs.versions)
	return true
}

// publishedGroup returns key's published snapshot (nil: none).
func (p *publisher) publishedGroup(key string) *groupSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.groups[key]
}

// withdrawSidecars clears the snapshots of sidecars no longer served
// once no Envoy uses them (an Envoy still connected keeps its last
// config).
func (p *publisher) withdrawSidecars() {
	if len(p.mesh.gone) == 0 {
		return
	}
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, key := range slices.Sorted(maps.Keys(p.mesh.gone)) {
		if p.groups[key] == nil {
			delete(p.mesh.gone, key) // never published
			continue
		}
		if used, _ := p.proxies.inUse(key); used {
			continue // an Envoy has it open, or left less than the linger ago
		}
		if p.proxies.whileIdle(key, func() { p.cache.ClearSnapshot(key); p.proxies.forgetLocked(key) }) {
			delete(p.groups, key)
			delete(p.mesh.gone, key)
			p.log.Info("sidecar no longer served (gone from Consul, or not servable: see the warnings) and no Envoy uses it; its config is withdrawn", "key", key)
		}
	}
}

// setLeafExpiry sets the expiry gauge of each service whose leaf changed
// since the last call, and drops the series of services without a leaf
// any more (never a moment without any series).
func (p *publisher) setLeafExpiry(snap *registry.MeshSnapshot) {
	m := &p.mesh
	if m.leafSeries == nil {
		m.leafSeries = map[string]bool{}
	}
	for _, svc := range snap.ChangedLeaves(m.leavesFrom) {
		if l, ok := snap.Leaf(svc); ok && !l.NotAfter.IsZero() {
			p.metrics.leafExpiry.WithLabelValues(svc).Set(float64(l.NotAfter.Unix()))
			m.leafSeries[svc] = true
		} else if m.leafSeries[svc] {
			p.metrics.leafExpiry.DeleteLabelValues(svc)
			delete(m.leafSeries, svc)
		}
	}
	m.leavesFrom = snap
}

// logMeshWarnings logs each mesh translation warning once.
func (p *publisher) logMeshWarnings(diags policy.Diagnostics) {
	p.metrics.meshWarnings.Set(float64(len(diags)))
	p.mesh.warned = logNew(p.log, p.mesh.warned, diags)
}

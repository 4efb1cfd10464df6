package controlplane

import (
	"context"
	"reflect"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// sidecarBuild is what a sidecar's own resources were last built from.
type sidecarBuild struct {
	in      ir.Sidecar
	own     envoy.Resources
	digests envoy.Digests
	// shared is the digests of the shared resources the sidecar uses, as
	// last published: while it and the own build are unchanged, the
	// sidecar's snapshot is too, and a flip elsewhere costs it nothing.
	shared string
}

// meshState is the publisher's memory of the mesh: the shared builder and
// each sidecar's last build. Used by publishMesh alone (one goroutine).
type meshState struct {
	builder  envoy.MeshBuilder
	sidecars map[string]*sidecarBuild // by proxy ID
	warned   map[string]bool
	// last is the snapshot last published from: the mesh depends on it
	// alone, so a rebuild for a gateway change skips the mesh.
	last    *registry.MeshSnapshot
	lastSet *policy.Set     // the policy set last published from
	current map[string]bool // the sidecar keys built from last
	// buildErr is the shared build's error while it fails, logged once.
	buildErr string
	// leafSeries are the services with a leaf expiry series.
	leafSeries map[string]bool
	// failed is each failing sidecar's input and error, so a failure is
	// retried only when its input changes and logged once.
	failed map[string]sidecarFailure
}

type sidecarFailure struct {
	in    ir.Sidecar
	print string // sharedPrint when it failed
	err   string
}

// publishMesh builds every Connect sidecar's snapshot from Consul's view
// of the mesh: the shared part (roots, one cluster per destination) once,
// each sidecar's own part only when its IR changed, and publishes those
// whose versions changed. A sidecar that cannot be built is logged and
// keeps its last snapshot; a sidecar gone from Consul is withdrawn once no
// Envoy uses it.
func (p *publisher) publishMesh(snap *registry.MeshSnapshot, set *policy.Set) {
	if snap == p.mesh.last && set == p.mesh.lastSet {
		// Unchanged since the last publish; only sidecars no longer
		// served may have lost their last Envoy since.
		p.withdrawSidecars(p.mesh.current)
		return
	}
	if p.mesh.sidecars == nil {
		p.mesh.sidecars, p.mesh.failed = map[string]*sidecarBuild{}, map[string]sidecarFailure{}
	}
	res := translator.TranslateMesh(snap, set)
	p.logMeshWarnings(res.Diagnostics)
	p.setLeafExpiry(snap)
	if res.Mesh.Roots.RootsPEM == "" {
		// No CA roots (yet, or Consul lost them): nothing can be built;
		// every sidecar keeps its last config.
		return
	}
	shared, sharedDigests, err := p.mesh.builder.Build(&res.Mesh)
	if err != nil {
		p.metrics.snapshotErrors.Inc()
		if msg := err.Error(); msg != p.mesh.buildErr {
			p.mesh.buildErr = msg
			p.log.Error("mesh failed to build; every sidecar keeps its last good config", "err", err)
		}
		return
	}
	p.mesh.buildErr = ""
	current := map[string]bool{}
	clean := true // every sidecar published, or skipped as a known failure
	for i := range res.Sidecars {
		sc := &res.Sidecars[i]
		key := sidecarKey(sc.ProxyID)
		current[key] = true
		print := sharedPrint(sc, sharedDigests)
		// A failure is retried only when what it was built from changed,
		// and logged once.
		if f, ok := p.mesh.failed[sc.ProxyID]; ok && f.print == print && reflect.DeepEqual(f.in, *sc) {
			continue
		}
		fail := func(err error) {
			p.metrics.snapshotErrors.Inc()
			p.mesh.failed[sc.ProxyID] = sidecarFailure{in: *sc, print: print, err: err.Error()}
			p.log.Error("sidecar failed to build; its Envoy keeps its last good config", "proxy", sc.ProxyID, "err", err)
		}
		if err := res.Mesh.ValidateSidecar(sc); err != nil {
			fail(err)
			continue
		}
		b := p.mesh.sidecars[sc.ProxyID]
		if b == nil || !reflect.DeepEqual(b.in, *sc) {
			own, digests, err := envoy.BuildSidecar(sc)
			if err != nil {
				fail(err)
				continue
			}
			b = &sidecarBuild{in: *sc, own: own, digests: digests}
			p.mesh.sidecars[sc.ProxyID] = b
		}
		delete(p.mesh.failed, sc.ProxyID)
		if print == b.shared && p.published(key) {
			continue // neither its own part nor what it shares changed
		}
		all, err := envoy.SidecarResources(sc, b.own, shared)
		if err != nil {
			fail(err)
			continue
		}
		gs, err := newGroupSnapshot(key, all, mergeDigests(all, b.digests, sharedDigests))
		if err != nil {
			fail(err)
			continue
		}
		if p.put(gs) {
			b.shared = print
		} else {
			clean = false // retried at the next rebuild
		}
	}
	for id := range p.mesh.sidecars {
		if !current[sidecarKey(id)] {
			delete(p.mesh.sidecars, id)
		}
	}
	for id := range p.mesh.failed {
		if !current[sidecarKey(id)] {
			delete(p.mesh.failed, id)
		}
	}
	p.metrics.failingSidecars.Set(float64(len(p.mesh.failed)))
	if !clean {
		p.mesh.last = nil // not skipped next time
		p.withdrawSidecars(current)
		return
	}
	p.mesh.last, p.mesh.lastSet, p.mesh.current = snap, set, current
	p.withdrawSidecars(current)
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
	if err := p.cache.SetSnapshot(context.Background(), gs.group, gs.snapshot); err != nil {
		p.metrics.snapshotErrors.Inc()
		p.log.Error("set snapshot failed; the last good config keeps serving", "key", gs.group, "err", err)
		return false
	}
	gs.stamp(old, p.changeAt)
	p.mu.Lock()
	p.groups[gs.group] = gs
	p.mu.Unlock()
	p.log.Debug("snapshot published", "key", gs.group, "versions", gs.versions)
	return true
}

// published reports whether key has a published snapshot.
func (p *publisher) published(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.groups[key] != nil
}

// sharedPrint lists the digests of the shared resources a sidecar uses:
// the roots, and each upstream's cluster, endpoints and (HTTP) routes.
func sharedPrint(sc *ir.Sidecar, shared envoy.Digests) string {
	var b strings.Builder
	b.WriteString(shared[resource.SecretType][envoy.MeshRootsSecretName])
	for _, u := range sc.Upstreams {
		name := envoy.MeshClusterName(u.Cluster)
		b.WriteByte(';')
		b.WriteString(shared[resource.ClusterType][name])
		b.WriteByte(',')
		b.WriteString(shared[resource.EndpointType][name])
		if u.Protocol.IsHTTP() {
			b.WriteByte(',')
			b.WriteString(shared[resource.RouteType][envoy.MeshRouteConfigName(u.Cluster)])
		}
		for _, also := range u.Also {
			name := envoy.MeshClusterName(also)
			b.WriteByte('+')
			b.WriteString(shared[resource.ClusterType][name])
			b.WriteByte(',')
			b.WriteString(shared[resource.EndpointType][name])
		}
	}
	return b.String()
}

// withdrawSidecars clears the snapshots of sidecars not in keep once no
// Envoy uses them (an Envoy still connected keeps its last config).
func (p *publisher) withdrawSidecars(keep map[string]bool) {
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for key := range p.groups {
		if !strings.HasPrefix(key, "sidecar:") || keep[key] {
			continue
		}
		if used, _ := p.proxies.inUse(key); used {
			continue // an Envoy has it open, or left less than the linger ago
		}
		if p.proxies.whileIdle(key, func() { p.cache.ClearSnapshot(key); p.proxies.forgetLocked(key) }) {
			delete(p.groups, key)
			p.log.Info("sidecar no longer served (gone from Consul, or not servable: see the warnings) and no Envoy uses it; its config is withdrawn", "key", key)
		}
	}
}

// setLeafExpiry sets each service's leaf expiry gauge, then drops the
// series of services without a leaf (never a moment without any series).
func (p *publisher) setLeafExpiry(snap *registry.MeshSnapshot) {
	seen := map[string]bool{}
	for _, svc := range snap.LeafServices() {
		if l, ok := snap.Leaf(svc); ok && !l.NotAfter.IsZero() {
			p.metrics.leafExpiry.WithLabelValues(svc).Set(float64(l.NotAfter.Unix()))
			seen[svc] = true
		}
	}
	for svc := range p.mesh.leafSeries {
		if !seen[svc] {
			p.metrics.leafExpiry.DeleteLabelValues(svc)
		}
	}
	p.mesh.leafSeries = seen
}

// mergeDigests picks, for every resource of a sidecar's snapshot, its
// digest from the sidecar's own build or the shared one.
func mergeDigests(all envoy.Resources, own, shared envoy.Digests) envoy.Digests {
	out := envoy.Digests{}
	for typ, list := range all {
		out[typ] = make(map[string]string, len(list))
		for _, r := range list {
			name := envoy.GetName(r)
			if d, ok := own[typ][name]; ok {
				out[typ][name] = d
			} else {
				out[typ][name] = shared[typ][name]
			}
		}
	}
	for _, typ := range envoy.Types {
		if out[typ] == nil {
			out[typ] = map[string]string{}
		}
	}
	return out
}

// logMeshWarnings logs each mesh translation warning once.
func (p *publisher) logMeshWarnings(diags policy.Diagnostics) {
	p.metrics.meshWarnings.Set(float64(len(diags)))
	p.mesh.warned = logNew(p.log, p.mesh.warned, diags)
}

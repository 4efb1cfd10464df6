package translator

import (
	"reflect"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// EdgeTranslator translates as TranslateWith does, remembering the
// clusters and listeners of its last call, so that a health flip in one of
// 5,000 services translates that service's cluster and reuses the others'.
//
// A cluster (a service, or a subset of it, named by a route) is made from
// the service's Consul data, its Service policy and the route naming it,
// nothing else. It is reused when the snapshot holds the very service the
// last one held (registry.Snapshot.SameService: the Watcher shares unchanged
// services between snapshots), its Service policy is equal and the same
// route (by position) and subset name it. The reused cluster is the same
// value, sharing its endpoints with the last result; IR is immutable once
// built, so the envoy Builder recognises it cheaply. The warnings it gave are
// given again, in the same place: the result is the one TranslateWith gives,
// diagnostics included.
//
// A group that reaches nothing through the mesh also keeps its listeners
// and secrets while the policy set is the same one: they are made from the
// group's policy alone (and give no warnings), so its routes are not
// translated again either.
//
// Pure like the rest of the package, and not safe for concurrent use. Its
// zero value is ready.
type EdgeTranslator struct {
	snap      *registry.Snapshot
	set       *policy.Set
	clusters  map[clusterKey]*clusterMemo
	listeners map[string]*listenersMemo // by group

	// The last result (of Translate or TranslateHealth) and its inputs.
	last     *Result
	lastSnap *registry.Snapshot
	lastMesh *registry.MeshSnapshot
}

// clusterKey names a cluster's translation: the service, the subset's
// label and the position of the first route naming it (its Source, and
// where its warnings point).
type clusterKey struct {
	service, subset string
	pos             policy.Pos
	unregistered    string
}

// clusterMemo is one cluster's translation and what it read.
type clusterMemo struct {
	cluster  ir.Cluster
	policy   policy.Service // the service's Service policy, if found
	found    bool
	warnings []policy.Diagnostic // every t.warn call it made, in order
}

// listenersMemo is what a group's policy alone made: its listeners and
// secrets, and the clusters its routes name.
type listenersMemo struct {
	listeners []ir.Listener
	secrets   []ir.Secret
	refs      []serviceRef
}

// clusterCache is an EdgeTranslator's memory during one translation.
type clusterCache struct {
	prevSnap               *registry.Snapshot
	prevSet                *policy.Set
	prev, next             map[clusterKey]*clusterMemo
	prevGroups, nextGroups map[string]*listenersMemo
}

// Translate builds every proxy group's IR, as TranslateWith(snap, set,
// mesh) does.
func (e *EdgeTranslator) Translate(snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot) *Result {
	t := newTranslation(snap, set, mesh)
	t.cache = &clusterCache{prevSnap: e.snap, prevSet: e.set, prev: e.clusters, next: make(map[clusterKey]*clusterMemo, len(e.clusters)),
		prevGroups: e.listeners, nextGroups: map[string]*listenersMemo{}}
	t.translate()
	e.snap, e.set, e.clusters, e.listeners = snap, set, t.cache.next, t.cache.nextGroups
	e.last, e.lastSnap, e.lastMesh = t.res, snap, mesh
	return t.res
}

// cachedCluster is t.cluster, reusing the last translation's cluster when
// what it read is unchanged.
func (t *translation) cachedCluster(service string, subset *policy.Subset, pos policy.Pos, unregistered string) ir.Cluster {
	c := t.cache
	key := clusterKey{service: service, subset: subset.String(), pos: pos, unregistered: unregistered}
	sp, found := t.set.Service(service)
	if m, ok := c.prev[key]; ok && t.snap.SameService(c.prevSnap, service) && m.found == found &&
		(t.set == c.prevSet || reflect.DeepEqual(m.policy, sp)) {
		for _, d := range m.warnings {
			t.diagnose(d)
		}
		c.next[key] = m
		return m.cluster
	}
	var warnings []policy.Diagnostic
	t.record = &warnings
	out := t.cluster(service, subset, pos, unregistered)
	t.record = nil
	c.next[key] = &clusterMemo{cluster: out, policy: sp, found: found, warnings: warnings}
	return out
}

// cachedListeners is t.listeners for a group that reaches nothing through
// the mesh, reusing the last translation's when the policy set is the same.
func (t *translation) cachedListeners(g *policy.ProxyGroup, cfg *ir.Config) []serviceRef {
	c := t.cache
	if m, ok := c.prevGroups[g.Name]; ok && t.set == c.prevSet {
		cfg.Listeners, cfg.Secrets = m.listeners, m.secrets
		c.nextGroups[g.Name] = m
		return m.refs
	}
	refs := t.listeners(g, nil, cfg)
	c.nextGroups[g.Name] = &listenersMemo{listeners: cfg.Listeners, secrets: cfg.Secrets, refs: refs}
	return refs
}

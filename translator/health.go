package translator

import (
	"maps"
	"slices"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// TranslateHealth is Translate for the most common change of all: Consul
// saying that some instances' health changed, and nothing else. When snap
// differs from the last translation's snapshot only in the health (and
// with it the weights) of instances of some services, under the same
// policy set and mesh snapshot, it returns what Translate would: the last
// result with those services' endpoints updated, without walking every
// group's clusters. changed lists, by group, the indexes in the group's
// Clusters of the clusters whose endpoints changed (a group with none is
// absent, and its config is the last one).
//
// ok is false when anything else changed, or TranslateHealth cannot tell
// for sure that nothing else did: then the caller calls Translate. The
// result, diagnostics included, is the one Translate gives, which tests
// check change by change.
//
// Why health alone is safe to patch: an instance's health decides nothing
// but its endpoint's health and weight. Which instances a cluster holds
// (subsets match tags and meta), its protocol (meta), its DNS mode (the
// addresses) and every warning depend on the rest, which must be equal.
func (e *EdgeTranslator) TranslateHealth(snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot) (res *Result, changed map[string][]int, ok bool) {
	if e.last == nil || set != e.set || mesh != e.lastMesh {
		return nil, nil, false
	}
	names, ok := snap.ChangedSince(e.lastSnap)
	if !ok {
		return nil, nil, false
	}
	services := make(map[string]registry.Service, len(names))
	for _, name := range names {
		old, _ := e.lastSnap.Service(name)
		svc, _ := snap.Service(name)
		if !healthOnly(old, svc) {
			return nil, nil, false
		}
		services[name] = svc
	}
	// A group's rate limit service read from Consul becomes a cluster
	// named for its role, not for the service: translate it in full.
	for _, g := range set.Groups {
		if rl := g.RateLimitService; rl != nil && rl.Service != "" {
			if _, ok := services[rl.Service]; ok {
				return nil, nil, false
			}
		}
	}
	res = &Result{Configs: make([]*ir.Config, len(e.last.Configs)), Diagnostics: e.last.Diagnostics}
	changed = map[string][]int{}
	for i, cfg := range e.last.Configs {
		res.Configs[i] = cfg
		var clusters []ir.Cluster // cfg's, copied on the first change
		for j := range cfg.Clusters {
			svc, ok := services[cfg.Clusters[j].Service]
			if !ok {
				continue
			}
			c, same, ok := withHealth(cfg.Clusters[j], svc)
			if !ok {
				return nil, nil, false
			}
			if same {
				continue
			}
			if clusters == nil {
				clusters = slices.Clone(cfg.Clusters)
			}
			clusters[j] = c
			changed[cfg.Group] = append(changed[cfg.Group], j)
		}
		if clusters != nil {
			next := *cfg
			next.Clusters = clusters
			res.Configs[i] = &next
		}
	}
	e.last, e.lastSnap = res, snap
	return res, changed, true
}

// healthOnly reports whether svc is old with at most its instances'
// health and weights changed, each instance told apart from the others
// by what its endpoint shows (ID, address, port, datacenter).
func healthOnly(old, svc registry.Service) bool {
	if len(old.Instances) != len(svc.Instances) {
		return false
	}
	seen := make(map[endpointKey]bool, len(svc.Instances))
	for i, a := range old.Instances {
		b := svc.Instances[i]
		if a.ID != b.ID || a.Node != b.Node || a.Address != b.Address || a.Port != b.Port ||
			a.Datacenter != b.Datacenter || !slices.Equal(a.Tags, b.Tags) || !maps.Equal(a.Meta, b.Meta) {
			return false
		}
		k := endpointKey{b.ID, b.Address, b.Port, b.Datacenter}
		if seen[k] {
			return false
		}
		seen[k] = true
	}
	return true
}

type endpointKey struct {
	id, address string
	port        int
	datacenter  string
}

// withHealth is c, translated from an earlier version of svc that differs
// from it in health alone (healthOnly), as translating svc makes it; same
// says nothing changed. ok is false for a cluster it cannot patch: a DNS
// one (its endpoints are part of the cluster), or one with an endpoint
// that is no instance of svc.
func withHealth(c ir.Cluster, svc registry.Service) (out ir.Cluster, same, ok bool) {
	if c.DNS {
		return c, false, false
	}
	byKey := make(map[endpointKey]*registry.Instance, len(svc.Instances))
	for i := range svc.Instances {
		in := &svc.Instances[i]
		byKey[endpointKey{in.ID, in.Address, in.Port, in.Datacenter}] = in
	}
	var eps []ir.Endpoint // c's, copied on the first change
	for i, ep := range c.Endpoints {
		in := byKey[endpointKey{ep.ID, ep.Address, int(ep.Port), ep.Locality}]
		if in == nil {
			return c, false, false
		}
		h, w := health(in.Health), clampWeight(in.Weight)
		if h == ep.Health && w == ep.Weight {
			continue
		}
		if eps == nil {
			eps = slices.Clone(c.Endpoints)
		}
		eps[i].Health, eps[i].Weight = h, w
	}
	if eps == nil {
		return c, true, true
	}
	c.Endpoints = eps
	return c, false, true
}

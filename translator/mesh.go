package translator

import (
	"maps"
	"net"
	"slices"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// MeshResult is the sidecar mesh as Envoy needs it: what every sidecar
// shares (the CA roots, one cluster per destination) and each sidecar's
// own part. A sidecar that cannot be served yet (no leaf certificate, an
// unusable address) is left out with a warning; the others are served.
type MeshResult struct {
	Mesh        ir.Mesh            `json:"mesh"`
	Sidecars    []ir.Sidecar       `json:"sidecars"` // sorted by ProxyID
	Diagnostics policy.Diagnostics `json:"-"`
}

// consulPos is where a warning about Consul's data points: Consul, not a
// policy file.
var consulPos = policy.Pos{File: "consul"}

// TranslateMesh turns Consul's view of the mesh into IR. It is pure: the
// same snapshot gives the same IR. Without CA roots there is no mesh yet,
// and no sidecar is served.
//
// set, when not nil, is the served policy: a Service document's mesh block
// applies to every sidecar's HTTP calls to that service.
//
// It is a fresh MeshTranslator's first translation; the control plane
// keeps a MeshTranslator to translate only what changes.
func TranslateMesh(snap *registry.MeshSnapshot, set *policy.Set) *MeshResult {
	var t MeshTranslator
	up := t.Translate(snap, set)
	res := &MeshResult{Diagnostics: up.Diagnostics}
	if up.NoRoots {
		return res
	}
	res.Mesh.Roots = up.Roots
	// The clusters a sidecar reads join the mesh only if it is served.
	inMesh := map[string]bool{}
	for _, s := range up.Sidecars {
		res.Sidecars = append(res.Sidecars, *s.Sidecar)
		for _, sni := range t.sidecars[s.ProxyID].reads {
			inMesh[sni] = true
		}
	}
	for _, sni := range slices.Sorted(maps.Keys(inMesh)) {
		res.Mesh.Clusters = append(res.Mesh.Clusters, *t.clusters[sni].out)
	}
	return res
}

// sidecar builds one sidecar's own IR, without its upstreams.
func sidecar(snap *registry.MeshSnapshot, sc registry.Sidecar, td string, warn func(string, ...any)) (ir.Sidecar, bool) {
	leaf, ok := snap.Leaf(sc.Service)
	if !ok {
		warn("sidecar %q: no leaf certificate for service %q yet; it is served once Consul issues one", sc.ID, sc.Service)
		return ir.Sidecar{}, false
	}
	if net.ParseIP(sc.Address) == nil {
		warn("sidecar %q: address %q is not an IP address; not served", sc.ID, sc.Address)
		return ir.Sidecar{}, false
	}
	local := sc.LocalServiceAddress
	if local == "" {
		local = "127.0.0.1"
	}
	return ir.Sidecar{
		ProxyID:       sc.ID,
		Service:       sc.Service,
		TrustDomain:   td,
		PublicAddress: sc.Address,
		PublicPort:    uint32(sc.Port),
		LocalAddress:  local,
		LocalPort:     uint32(sc.LocalServicePort),
		Protocol:      protocolOf(sc.Protocol),
		Intentions:    intentions(snap, sc, protocolOf(sc.Protocol), warn),
		Leaf:          ir.MeshLeaf{Service: leaf.Service, CertPEM: leaf.CertPEM, KeyPEM: ir.PrivateKey(leaf.KeyPEM)},
	}, true
}

// meshSettings is the Mesh document of set, nil when there is none (or no
// set).
func meshSettings(set *policy.Set) *policy.Mesh {
	if set == nil {
		return nil
	}
	return set.Mesh
}

// observe gives a sidecar the mesh's access log and tracing: the edge's
// IR, with the edge's defaults (policy.Mesh.EffectiveAccessLog). Spans
// are named after the sidecar's service unless the Mesh names them.
func observe(s *ir.Sidecar, m *policy.Mesh) {
	if a := m.EffectiveAccessLog(); a != nil {
		s.AccessLog = &ir.AccessLog{Path: a.Path, Format: a.Format}
	}
	if m == nil || m.Tracing == nil {
		return
	}
	tr := m.Tracing
	name := tr.ServiceName
	if name == "" {
		name = s.Service
	}
	c := tracingCluster(tr)
	s.Tracing = &ir.Tracing{Cluster: c.Service, Sampling: uint32(tr.Sampling), ServiceName: name}
	s.TracingCluster = &c
}

// meshCluster is one destination as its callers reach it: its sidecars'
// public listeners, usable only while both the sidecar and its instance
// pass.
func meshCluster(snap *registry.MeshSnapshot, set *policy.Set, service, dc, td string, proto ir.Protocol, serves map[string]ir.Protocol, warn func(string, ...any)) *ir.MeshCluster {
	c := &ir.MeshCluster{
		Service: service, Datacenter: dc, Protocol: proto,
		SNI: ir.MeshSNI(service, dc, td), SPIFFEID: ir.SPIFFEID(td, dc, service),
	}
	var sv policy.Service
	var ok bool
	if set != nil {
		sv, ok = set.Service(service)
	}
	if ok && sv.Mesh != nil {
		if !proto.IsHTTP() {
			warn("Service %q (%s) has a mesh policy, but its sidecars speak %s: timeouts and retries need http, http2 or grpc; ignored", service, sv.Mesh.Pos, proto)
		} else {
			if sv.Mesh.Timeout != nil {
				d := ir.D(*sv.Mesh.Timeout)
				c.Timeout = &d
			}
			if r := sv.Mesh.Retries; r != nil && r.Attempts > 0 {
				c.Retries = retries(r)
			}
			c.Split = meshSplit(sv, dc, td, serves, warn)
		}
	}
	d, ok := snap.Destination(service)
	if !ok {
		return c // no endpoints (yet): calls fail until it registers, as in Consul
	}
	for _, e := range d.Endpoints {
		if net.ParseIP(e.Address) == nil || e.Port <= 0 || e.Port > 65535 {
			warn("destination %q: endpoint %q has no usable address (%q port %d); skipped", service, e.ProxyID, e.Address, e.Port)
			continue
		}
		h := ir.Unhealthy
		switch {
		case e.Usable():
			h = ir.Healthy
		case e.Health == registry.Draining:
			h = ir.Draining
		}
		id := e.ProxyID
		if id == "" {
			id = e.ServiceID
		}
		c.Endpoints = append(c.Endpoints, ir.Endpoint{ID: id, Address: e.Address, Port: uint32(e.Port), Health: h, Weight: clampWeight(e.Weight), Locality: e.Datacenter})
	}
	return c
}

// meshSplit is a Service's mesh split as mesh backends, or nil when it
// has none or cannot apply: every target must be a service whose sidecars
// speak HTTP.
func meshSplit(sv policy.Service, dc, td string, serves map[string]ir.Protocol, warn func(string, ...any)) []ir.MeshBackend {
	var out []ir.MeshBackend
	for _, w := range sv.Mesh.Split {
		if p, ok := serves[w.Service]; !ok || !p.IsHTTP() {
			warn("Service %q (%s): split to %q, which has no HTTP sidecar in Consul; the split is ignored and calls go to %q", sv.Name, sv.Mesh.Pos, w.Service, sv.Name)
			return nil
		}
		out = append(out, ir.MeshBackend{Service: w.Service, Cluster: ir.MeshSNI(w.Service, dc, td), Weight: w.Weight})
	}
	return out
}

// protocolOf maps a registry protocol ("" meaning unset) to the IR's; tcp
// is Consul's default.
func protocolOf(p string) ir.Protocol {
	switch ir.Protocol(p) {
	case ir.ProtocolHTTP, ir.ProtocolHTTP2, ir.ProtocolGRPC:
		return ir.Protocol(p)
	}
	return ir.ProtocolTCP
}

package envoy

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// The sidecar mesh's resources come in two kinds, built separately:
//
//   - BuildSidecar: what is one sidecar's own. Its inbound listener (mTLS,
//     intentions, to its application) and, for HTTP, its inbound routes
//     (which carry the intentions), its local_app cluster, one listener
//     per upstream, and its leaf certificate (MeshLeafSecretName).
//   - MeshBuilder: what every sidecar shares, one part at a time
//     (SetRoots, SetCluster; Build or BuildMesh for a whole ir.Mesh). One
//     cluster and ClusterLoadAssignment per destination service, the
//     RouteConfiguration of each HTTP destination, and the CA roots
//     (MeshRootsSecretName).
//
// A sidecar's snapshot is its own resources plus the shared ones it names
// (MeshBuilder.Sidecar): the very same values in every caller's snapshot, so
// a health flip of a destination is built once, however many sidecars
// call it, and re-pushed only to those.

// BuildSidecar builds one sidecar's own resources and their digests. An
// error means the IR was invalid or a proto failed validation: a bug, not a
// user mistake.
func BuildSidecar(s *ir.Sidecar) (Resources, Digests, error) {
	if err := s.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid ir for sidecar %q: %w", s.ProxyID, err)
	}
	obs, err := newSidecarObs(s)
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, err)
	}
	pub, err := publicListener(s, obs)
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, err)
	}
	app, err := localAppCluster(s)
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, err)
	}
	list := []typedResource{
		{typ: resource.ListenerType, name: s.ProxyID, r: pub},
		{typ: resource.ClusterType, name: s.ProxyID, r: app},
		{typ: resource.SecretType, name: s.ProxyID, r: meshLeafSecret(&s.Leaf)},
	}
	if s.Protocol.IsHTTP() {
		rc, err := publicRouteConfig(s)
		if err != nil {
			return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, err)
		}
		list = append(list, typedResource{typ: resource.RouteType, name: s.ProxyID, r: rc})
	}
	if tc := s.TracingCluster; tc != nil {
		// The collector's cluster is the sidecar's own: spans are named
		// after its service, and it is a few bytes.
		list = append(list, typedResource{typ: resource.ClusterType, name: s.ProxyID, r: cluster(tc)})
		if !tc.DNS { // a DNS cluster's endpoints are inline
			list = append(list, typedResource{typ: resource.EndpointType, name: s.ProxyID, r: loadAssignment(tc)})
		}
	}
	for i := range s.Upstreams {
		u := &s.Upstreams[i]
		l, err := upstreamListener(u, obs)
		if err != nil {
			return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, err)
		}
		list = append(list, typedResource{typ: resource.ListenerType, name: s.ProxyID + " upstream " + u.Destination, r: l})
	}
	var c collector
	if err := c.add(list, true); err != nil {
		return nil, nil, err
	}
	return c.done()
}

// BuildMesh builds the shared mesh resources and their digests.
func BuildMesh(m *ir.Mesh) (Resources, Digests, error) {
	return new(MeshBuilder).Build(m)
}

// MeshBuilder builds and keeps the shared mesh resources, one part at a
// time: the roots (SetRoots) and each destination's cluster, endpoints and
// routes (SetCluster). A part is built once per change, validated and
// digested, and the same values go into every sidecar snapshot that uses
// it (Sidecar): a health flip builds one destination's resources, however
// many sidecars call it. Not safe for concurrent use; its zero value is
// ready.
type MeshBuilder struct {
	trustDomain string
	roots       *meshPart
	clusters    map[string]*meshPart // by SNI
}

// meshPart is one shared part as last set: what it was built from, and
// its resources or why they could not be built.
type meshPart struct {
	in  any // ir.MeshRoots or ir.MeshCluster, a value
	out []typedResource
	err error
}

// SetRoots builds the roots' secret. A new trust domain drops every
// destination's part, built for the old one: set them again.
func (b *MeshBuilder) SetRoots(r *ir.MeshRoots) error {
	if b.roots != nil && reflect.DeepEqual(b.roots.in, *r) {
		return b.roots.err
	}
	if r.TrustDomain != b.trustDomain {
		b.trustDomain, b.clusters = r.TrustDomain, nil
	}
	b.roots = buildPart(*r, func() ([]typedResource, error) {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("invalid mesh ir: %w", err)
		}
		return []typedResource{{typ: resource.SecretType, name: "mesh roots", r: meshRootsSecret(r)}}, nil
	})
	return b.roots.err
}

// SetCluster builds one destination's cluster, endpoints and (HTTP)
// routes, in the trust domain of the roots last set. An error (invalid IR,
// or a proto that fails validation: a bug) is kept too: the sidecars that
// use the destination cannot be built until it is set again.
func (b *MeshBuilder) SetCluster(mc *ir.MeshCluster) error {
	if p := b.clusters[mc.SNI]; p != nil && reflect.DeepEqual(p.in, *mc) {
		return p.err
	}
	if b.clusters == nil {
		b.clusters = map[string]*meshPart{}
	}
	c := *mc
	p := buildPart(c, func() ([]typedResource, error) {
		if err := c.Validate(b.trustDomain); err != nil {
			return nil, fmt.Errorf("invalid mesh ir: %w", err)
		}
		cl, err := meshCluster(&c)
		if err != nil {
			return nil, fmt.Errorf("mesh cluster %q: %w", c.SNI, err)
		}
		out := []typedResource{
			{typ: resource.ClusterType, name: c.SNI, r: cl},
			{typ: resource.EndpointType, name: c.SNI, r: meshLoadAssignment(&c)},
		}
		if c.Protocol.IsHTTP() {
			out = append(out, typedResource{typ: resource.RouteType, name: c.SNI, r: meshRouteConfig(&c)})
		}
		return out, nil
	})
	b.clusters[c.SNI] = p
	return p.err
}

// RemoveCluster forgets a destination no sidecar uses any more.
func (b *MeshBuilder) RemoveCluster(sni string) { delete(b.clusters, sni) }

// buildPart builds a part's resources, validating and digesting each.
func buildPart(in any, mk func() ([]typedResource, error)) *meshPart {
	out, err := mk()
	if err == nil {
		err = new(collector).add(out, true)
	}
	if err != nil {
		return &meshPart{in: in, err: err}
	}
	return &meshPart{in: in, out: out}
}

// Build builds the whole shared mesh, reusing the parts whose IR did not
// change since the last call, and returns every part's resources and
// digests.
func (b *MeshBuilder) Build(m *ir.Mesh) (Resources, Digests, error) {
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid mesh ir: %w", err)
	}
	if err := b.SetRoots(&m.Roots); err != nil {
		return nil, nil, err
	}
	var c collector
	if err := c.add(b.roots.out, false); err != nil {
		return nil, nil, err
	}
	keep := make(map[string]bool, len(m.Clusters))
	for i := range m.Clusters {
		mc := &m.Clusters[i]
		keep[mc.SNI] = true
		if err := b.SetCluster(mc); err != nil {
			return nil, nil, err
		}
		if err := c.add(b.clusters[mc.SNI].out, false); err != nil {
			return nil, nil, err
		}
	}
	for sni := range b.clusters {
		if !keep[sni] {
			b.RemoveCluster(sni)
		}
	}
	return c.done()
}

// Sidecar is one sidecar's snapshot: its own resources (and their
// digests, from BuildSidecar) and the shared ones it uses, from the parts
// set: the roots, and each upstream's cluster, endpoints and routes (its
// split's targets' clusters and endpoints). Shared values, not copies. A
// part it uses that is missing or failed to build is an error: the
// snapshot would not be consistent.
func (b *MeshBuilder) Sidecar(s *ir.Sidecar, own Resources, ownDigests Digests) (Resources, Digests, error) {
	var c collector
	for _, typ := range Types {
		list := make([]typedResource, len(own[typ]))
		for i, r := range own[typ] {
			list[i] = typedResource{typ: typ, name: s.ProxyID, r: r, digest: ownDigests[typ][GetName(r)]}
		}
		if err := c.add(list, false); err != nil {
			return nil, nil, err
		}
	}
	if b.roots == nil || b.roots.err != nil {
		return nil, nil, fmt.Errorf("sidecar %q: the mesh roots are not built", s.ProxyID)
	}
	if err := c.add(b.roots.out, false); err != nil {
		return nil, nil, err
	}
	const (
		withoutRoutes = 1
		withRoutes    = 2
	)
	need := map[string]int{} // by SNI
	for _, u := range s.Upstreams {
		if u.Protocol.IsHTTP() {
			need[u.Cluster] = withRoutes
		} else {
			need[u.Cluster] = max(need[u.Cluster], withoutRoutes)
		}
		for _, also := range u.Also {
			need[also] = max(need[also], withoutRoutes)
		}
	}
	for _, sni := range slices.Sorted(maps.Keys(need)) {
		p, n := b.clusters[sni], need[sni]
		switch {
		case p == nil:
			return nil, nil, fmt.Errorf("sidecar %q: the mesh lacks cluster %q", s.ProxyID, sni)
		case p.err != nil:
			return nil, nil, fmt.Errorf("sidecar %q: %w", s.ProxyID, p.err)
		}
		out := p.out
		if n == withoutRoutes {
			out = out[:2] // the cluster and its endpoints
		}
		if err := c.add(out, false); err != nil {
			return nil, nil, err
		}
	}
	return c.done()
}

// collector gathers built resources, validating new ones and refusing two
// of one type with one name, which would replace each other in a snapshot.
type collector struct {
	res     Resources
	digests Digests
}

// add adds resources; fresh ones are validated and digested first (in
// place, so a memo keeps the digests).
func (c *collector) add(list []typedResource, fresh bool) error {
	if c.res == nil {
		c.res, c.digests = Resources{}, Digests{}
	}
	for i := range list {
		t := &list[i]
		if fresh {
			if err := t.r.(validator).ValidateAll(); err != nil {
				return fmt.Errorf("build %s %q: %w", shortType(t.typ), t.name, err)
			}
			r, d, err := digestShared(t.r)
			if err != nil {
				return fmt.Errorf("build %s %q: %w", shortType(t.typ), t.name, err)
			}
			t.r, t.digest = r, d
		}
		name := GetName(t.r)
		if c.digests[t.typ] == nil {
			c.digests[t.typ] = map[string]string{}
		}
		if _, dup := c.digests[t.typ][name]; dup {
			return fmt.Errorf("build %s %q: name %q used twice", shortType(t.typ), t.name, name)
		}
		c.digests[t.typ][name] = t.digest
		c.res[t.typ] = append(c.res[t.typ], t.r)
	}
	return nil
}

// done sorts each type's resources by name.
func (c *collector) done() (Resources, Digests, error) {
	if c.res == nil {
		c.res, c.digests = Resources{}, Digests{}
	}
	for _, list := range c.res {
		sort.Slice(list, func(i, j int) bool { return GetName(list[i]) < GetName(list[j]) })
	}
	return c.res, c.digests, nil
}

package envoy

import (
	"fmt"
	"reflect"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// The sidecar mesh's resources come in two kinds, built separately:
//
//   - BuildSidecar: what is one sidecar's own. Its inbound listener (mTLS,
//     intentions, to its application) and, for HTTP, its inbound routes
//     (which carry the intentions), its local_app cluster, one listener
//     per upstream, and its leaf certificate (MeshLeafSecretName).
//   - MeshBuilder.Build (BuildMesh): what every sidecar shares. One cluster
//     and ClusterLoadAssignment per destination service, the
//     RouteConfiguration of each HTTP destination, and the CA roots
//     (MeshRootsSecretName).
//
// A sidecar's snapshot is its own resources plus the shared ones it names
// (SidecarResources): the very same values in every caller's snapshot, so
// a health flip of a destination is built once, however many sidecars
// call it, and re-pushed only to those.

// BuildSidecar builds one sidecar's own resources and their digests. An
// error means the IR was invalid or a proto failed validation: a bug, not a
// user mistake.
func BuildSidecar(s *ir.Sidecar) (Resources, Digests, error) {
	if err := s.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid ir for sidecar %q: %w", s.ProxyID, err)
	}
	pub, err := publicListener(s)
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
	for i := range s.Upstreams {
		u := &s.Upstreams[i]
		l, err := upstreamListener(u)
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

// MeshBuilder builds the shared mesh resources like BuildMesh, remembering
// its last call as Builder does: a destination whose MeshCluster is
// unchanged reuses its cluster, endpoints and routes, already validated and
// digested, so a health flip builds one destination's resources. Not safe
// for concurrent use; its zero value is ready.
type MeshBuilder struct {
	memo map[string]*built // "mesh-cluster/<sni>", "mesh-roots"
}

// Build turns the shared mesh IR into xDS resources and their digests.
func (b *MeshBuilder) Build(m *ir.Mesh) (Resources, Digests, error) {
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid mesh ir: %w", err)
	}
	next := make(map[string]*built, len(b.memo))
	var c collector
	node := func(key string, in any, mk func() ([]typedResource, error)) error {
		if prev, ok := b.memo[key]; ok && reflect.DeepEqual(prev.in, in) {
			next[key] = prev
			return c.add(prev.out, false)
		}
		out, err := mk()
		if err != nil {
			return err
		}
		if err := c.add(out, true); err != nil {
			return err
		}
		next[key] = &built{in: in, out: out}
		return nil
	}
	err := node("mesh-roots", m.Roots, func() ([]typedResource, error) {
		return []typedResource{{typ: resource.SecretType, name: "mesh roots", r: meshRootsSecret(&m.Roots)}}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range m.Clusters {
		mc := m.Clusters[i]
		err := node("mesh-cluster/"+mc.SNI, mc, func() ([]typedResource, error) {
			cl, err := meshCluster(&mc)
			if err != nil {
				return nil, fmt.Errorf("mesh cluster %q: %w", mc.SNI, err)
			}
			out := []typedResource{
				{typ: resource.ClusterType, name: mc.SNI, r: cl},
				{typ: resource.EndpointType, name: mc.SNI, r: meshLoadAssignment(&mc)},
			}
			if mc.Protocol.IsHTTP() {
				out = append(out, typedResource{typ: resource.RouteType, name: mc.SNI, r: meshRouteConfig(&mc)})
			}
			return out, nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	res, digests, err := c.done()
	if err != nil {
		return nil, nil, err
	}
	b.memo = next
	return res, digests, nil
}

// SidecarResources is one sidecar's snapshot: its own resources and the
// shared ones it uses (the mesh roots, and each upstream's cluster,
// endpoints and routes), shared values not copies. A shared resource the
// sidecar names but mesh lacks is an error: the snapshot would not be
// consistent.
func SidecarResources(s *ir.Sidecar, own, mesh Resources) (Resources, error) {
	want := map[resource.Type]map[string]bool{
		resource.SecretType:   {MeshRootsSecretName: true},
		resource.ClusterType:  {},
		resource.EndpointType: {},
		resource.RouteType:    {},
	}
	for _, u := range s.Upstreams {
		want[resource.ClusterType][MeshClusterName(u.Cluster)] = true
		want[resource.EndpointType][MeshClusterName(u.Cluster)] = true
		for _, also := range u.Also { // the destination's split targets
			want[resource.ClusterType][MeshClusterName(also)] = true
			want[resource.EndpointType][MeshClusterName(also)] = true
		}
		if u.Protocol.IsHTTP() {
			want[resource.RouteType][MeshRouteConfigName(u.Cluster)] = true
		}
	}
	out := Resources{}
	for typ, list := range own {
		out[typ] = append([]types.Resource(nil), list...)
	}
	for typ, names := range want {
		found := 0
		for _, r := range mesh[typ] {
			if names[GetName(r)] {
				out[typ] = append(out[typ], r)
				found++
			}
		}
		if found != len(names) {
			return nil, fmt.Errorf("sidecar %q: the mesh lacks some of the %s it uses (%d of %d found)", s.ProxyID, shortType(typ), found, len(names))
		}
	}
	for _, list := range out {
		sort.Slice(list, func(i, j int) bool { return GetName(list[i]) < GetName(list[j]) })
	}
	return out, nil
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
			d, err := digest(t.r)
			if err != nil {
				return fmt.Errorf("build %s %q: %w", shortType(t.typ), t.name, err)
			}
			t.digest = d
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

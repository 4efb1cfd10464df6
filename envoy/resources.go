// Package envoy turns Switchyard's IR into Envoy xDS resources: small pure
// builders, one per IR node, each output checked with ValidateAll.
package envoy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Resources is one proxy group's xDS resources, by type URL, each list
// sorted by name.
type Resources map[resource.Type][]types.Resource

// Types lists the xDS types Switchyard serves, in the order Envoy should
// receive them: clusters before endpoints, listeners before routes.
var Types = []resource.Type{
	resource.ClusterType,
	resource.EndpointType,
	resource.SecretType,
	resource.ListenerType,
	resource.RouteType,
}

// validator is what every generated proto offers.
type validator interface{ ValidateAll() error }

// Build turns one group's IR into xDS resources. An error means a bug (the
// IR was inconsistent or a proto failed validation), never a user mistake:
// those are the translator's diagnostics.
func Build(cfg *ir.Config) (Resources, error) {
	res, _, err := new(Builder).Build(cfg)
	return res, err
}

// Digests holds a content digest of every resource, by type URL and name:
// equal resources have equal digests. The control plane derives its
// versions from them.
type Digests map[resource.Type]map[string]string

// Builder builds like Build, remembering its last call: an IR node (a
// cluster, a listener, a secret) equal to the one of the same name last
// time reuses that node's resources, already validated and digested.
// A health flip in one of 5,000 services then builds, validates and
// marshals that service's Cluster and ClusterLoadAssignment (the cluster
// node holds both; the Cluster comes out identical, so only endpoints are
// pushed), not every resource of the group.
// Resources are immutable once built, so sharing them between snapshots is
// safe. A Builder serves one proxy group and is not safe for concurrent
// use; its zero value is ready.
type Builder struct {
	memo    map[string]*built // by memo key: "cluster/web", "listener/public", ...
	sources Sources           // of the last successful Build
}

// Sources maps each built resource, by type URL and name, to the policy
// file and line of the IR node it was built from. When Envoy rejects a
// resource the control plane names that line, so the operator knows what to
// edit. Resources whose node has no known source are absent.
type Sources map[resource.Type]map[string]string

// built is what one IR node became.
type built struct {
	in  any // the IR node (a value; IR is immutable once built)
	out []typedResource
}

type typedResource struct {
	typ    resource.Type
	name   string // for error messages: the IR node's name
	source string // the IR node's policy position ("" when unknown)
	r      types.Resource
	digest string
}

// Build turns one group's IR into xDS resources and their digests.
func (b *Builder) Build(cfg *ir.Config) (Resources, Digests, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid ir for group %q: %w", cfg.Group, err)
	}
	next := make(map[string]*built, len(b.memo))
	// node returns the resources of one IR node: the remembered ones when
	// the node is unchanged, else freshly made, validated and digested.
	node := func(key string, in any, mk func() ([]typedResource, error)) ([]typedResource, error) {
		if m, ok := b.memo[key]; ok && reflect.DeepEqual(m.in, in) {
			next[key] = m
			return m.out, nil
		}
		out, err := mk()
		if err != nil {
			return nil, err
		}
		for i := range out {
			t := &out[i]
			if err := t.r.(validator).ValidateAll(); err != nil {
				return nil, fmt.Errorf("build %s %q: %w", shortType(t.typ), t.name, err)
			}
			if t.r, t.digest, err = digestShared(t.r); err != nil {
				return nil, fmt.Errorf("build %s %q: %w", shortType(t.typ), t.name, err)
			}
		}
		next[key] = &built{in: in, out: out}
		return out, nil
	}

	res, digests, sources := Resources{}, Digests{}, Sources{}
	// Sized up front: growing maps of 5,000 names cost more than filling
	// them. Each cluster node gives a Cluster and (most) an endpoints
	// resource; other types are few.
	sizeHint := func(typ resource.Type) int {
		if typ == resource.ClusterType || typ == resource.EndpointType {
			return len(cfg.Clusters)
		}
		return 0
	}
	add := func(list []typedResource) error {
		for _, t := range list {
			// Two resources of one type with one name would silently
			// replace each other in the snapshot.
			got := GetName(t.r)
			if digests[t.typ] == nil {
				digests[t.typ] = make(map[string]string, sizeHint(t.typ))
				res[t.typ] = make([]types.Resource, 0, sizeHint(t.typ))
			}
			if _, dup := digests[t.typ][got]; dup {
				return fmt.Errorf("build %s %q: name %q used twice", shortType(t.typ), t.name, got)
			}
			digests[t.typ][got] = t.digest
			res[t.typ] = append(res[t.typ], t.r)
			if t.source != "" {
				if sources[t.typ] == nil {
					sources[t.typ] = make(map[string]string, sizeHint(t.typ))
				}
				sources[t.typ][got] = t.source
			}
		}
		return nil
	}
	for _, c := range cfg.Clusters {
		name := SubsetClusterName(c.Service, c.Subset)
		list, err := node("cluster/"+name, c, func() ([]typedResource, error) {
			out := []typedResource{{typ: resource.ClusterType, name: name, source: c.Source, r: cluster(&c)}}
			if !c.DNS { // a DNS cluster's endpoints are inline
				out = append(out, typedResource{typ: resource.EndpointType, name: name, source: c.Source, r: loadAssignment(&c)})
			}
			return out, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if err := add(list); err != nil {
			return nil, nil, err
		}
	}
	if err := buildGroupMesh(cfg.Mesh, node, add); err != nil {
		return nil, nil, err
	}
	// A CA secret is served only when a listener verifies client
	// certificates with it: in ADS mode go-control-plane answers an SDS
	// request only when it names every secret in the snapshot, so an
	// unreferenced secret would hold back all of them.
	clientCAs := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.TLS != nil && l.TLS.ClientCA != "" {
			clientCAs[l.TLS.ClientCA] = true
		}
	}
	for _, s := range cfg.Secrets {
		withCA := clientCAs[s.Name]
		key := "secret/" + s.Name
		if withCA {
			key = "secret+ca/" + s.Name
		}
		list, err := node(key, s, func() ([]typedResource, error) {
			out := []typedResource{{typ: resource.SecretType, name: s.Name, source: s.Source, r: secret(&s)}}
			if withCA {
				out = append(out, typedResource{typ: resource.SecretType, name: CASecretName(s.Name), source: s.Source, r: caSecret(&s)})
			}
			return out, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if err := add(list); err != nil {
			return nil, nil, err
		}
	}
	for _, l := range cfg.Listeners {
		list, err := node("listener/"+l.Name, l, func() ([]typedResource, error) {
			lis, err := listener(&l)
			if err != nil {
				return nil, err
			}
			rc, err := routeConfig(&l)
			if err != nil {
				return nil, err
			}
			return []typedResource{
				{typ: resource.ListenerType, name: l.Name, source: l.Source, r: lis},
				{typ: resource.RouteType, name: l.Name, source: l.Source, r: rc},
			}, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if err := add(list); err != nil {
			return nil, nil, err
		}
	}
	for _, typ := range Types {
		list := res[typ]
		sort.Slice(list, func(i, j int) bool { return GetName(list[i]) < GetName(list[j]) })
	}
	b.memo = next // forget nodes that are gone
	b.sources = sources
	return res, digests, nil
}

// buildGroupMesh builds a group's part in the Connect mesh: each mesh cluster
// and its endpoints, the group's leaf and the CA roots, with the very
// builders of a sidecar's (meshCluster, meshLeafSecret, meshRootsSecret),
// so the edge reaches a sidecar exactly as another sidecar does.
func buildGroupMesh(m *ir.EdgeMesh, node func(string, any, func() ([]typedResource, error)) ([]typedResource, error), add func([]typedResource) error) error {
	if m == nil {
		return nil
	}
	put := func(key string, in any, mk func() ([]typedResource, error)) error {
		list, err := node(key, in, mk)
		if err != nil {
			return err
		}
		return add(list)
	}
	err := put("mesh-leaf", m.Leaf, func() ([]typedResource, error) {
		return []typedResource{{typ: resource.SecretType, name: MeshLeafSecretName, r: meshLeafSecret(&m.Leaf)}}, nil
	})
	if err != nil {
		return err
	}
	err = put("mesh-roots", m.Roots, func() ([]typedResource, error) {
		return []typedResource{{typ: resource.SecretType, name: MeshRootsSecretName, r: meshRootsSecret(&m.Roots)}}, nil
	})
	if err != nil {
		return err
	}
	for i := range m.Clusters {
		mc := m.Clusters[i]
		err := put("mesh-cluster/"+mc.SNI, mc, func() ([]typedResource, error) {
			cl, err := meshCluster(&mc)
			if err != nil {
				return nil, fmt.Errorf("mesh cluster %q: %w", mc.SNI, err)
			}
			return []typedResource{
				{typ: resource.ClusterType, name: mc.SNI, source: mc.Source, r: cl},
				{typ: resource.EndpointType, name: mc.SNI, source: mc.Source, r: meshLoadAssignment(&mc)},
			}, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Sources is where each resource of the last successful Build came from,
// recorded as it was built: exactly the resources Build returned, no more.
// The map is new on every Build and never written afterwards, so it may be
// shared with other goroutines.
func (b *Builder) Sources() Sources {
	return b.sources
}

// LoadAssignment is the endpoints resource (a ClusterLoadAssignment) of
// an EDS cluster, validated, and its digest: exactly what Build makes of
// it, for a caller that rebuilds a group's endpoints alone (a health
// change). A DNS cluster has none (its endpoints are inline).
func LoadAssignment(c *ir.Cluster) (types.Resource, string, error) {
	name := SubsetClusterName(c.Service, c.Subset)
	if c.DNS {
		return nil, "", fmt.Errorf("build endpoints %q: a DNS cluster's endpoints are part of the cluster", name)
	}
	if err := c.Validate(); err != nil {
		return nil, "", err
	}
	r := loadAssignment(c)
	if err := r.ValidateAll(); err != nil {
		return nil, "", fmt.Errorf("build %s %q: %w", shortType(resource.EndpointType), name, err)
	}
	shared, d, err := digestShared(r)
	if err != nil {
		return nil, "", fmt.Errorf("build %s %q: %w", shortType(resource.EndpointType), name, err)
	}
	return shared, d, nil
}

// sum hashes a resource's deterministic encoding: the SHA-256, and the
// digest that versions it (its first 16 hex digits).
func sum(r types.Resource) (sum [32]byte, digest string, err error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return sum, "", err
	}
	sum = sha256.Sum256(data)
	return sum, hex.EncodeToString(sum[:8]), nil
}

// digestShared is digest, and the resource every group shares that is
// equal to r (intern).
func digestShared(r types.Resource) (types.Resource, string, error) {
	s, d, err := sum(r)
	if err != nil {
		return nil, "", err
	}
	return intern(r, s), d, nil
}

// GetName is the resource's xDS name.
func GetName(r types.Resource) string {
	return cache.GetResourceName(r)
}

func shortType(typ resource.Type) string {
	switch typ {
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route configuration"
	case resource.SecretType:
		return "secret"
	}
	return typ
}

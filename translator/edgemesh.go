package translator

import (
	"fmt"
	"sort"
	"strings"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// A proxy group's routes through the mesh (policy.Route.Mesh) reach their
// services as a sidecar's upstream does: through the services' sidecars,
// over mutual TLS with the group's own Connect leaf certificate. Their
// clusters are the same MeshClusters sidecars use (meshCluster), with the
// route's own timeout, retries and split applied at the edge.

// groupMesh is one group's part in the mesh while its routes translate.
type groupMesh struct {
	mesh *ir.EdgeMesh // nil when the group cannot reach the mesh yet
	// why is what is missing when mesh is nil, for the routes' Unavailable.
	why      string
	dc       string
	clusters map[string]*ir.MeshCluster // by SNI
}

// groupMesh prepares a group's mesh part, or returns nil when none of its
// routes uses the mesh. Without the CA roots or the group's leaf
// certificate its routes through the mesh answer 503 (with a warning):
// never plain text to a sidecar, never a cluster waiting on a secret.
func (t *translation) groupMesh(g *policy.ProxyGroup) *groupMesh {
	if !g.UsesMesh() {
		return nil
	}
	pos, svc := g.Pos, g.MeshService()
	if g.Mesh != nil {
		pos = g.Mesh.Pos
	}
	gm := &groupMesh{clusters: map[string]*ir.MeshCluster{}}
	if taken := t.identityTaken(svc); taken != "" {
		gm.why = fmt.Sprintf("its mesh identity %q %s", svc, taken)
		t.warn(pos, "proxy group %q: mesh identity %q %s; an edge group must not present a service's identity, which would pass every intention granted to that service, so its routes through the mesh answer 503 and it presents no certificate; give it a mesh identity no service uses (mesh: {service: <name>})", g.Name, svc, taken)
		return gm
	}
	if t.mesh == nil {
		// Translated without a view of the mesh: what `switchyard
		// translate` does, which reads no Consul (serve builds no such
		// group before the mesh's first sync).
		gm.why = "translated without Consul's view of the Connect mesh, so without the group's leaf certificate"
		return gm
	}
	roots, ok := t.mesh.Roots()
	if !ok || len(roots.Roots) == 0 {
		gm.why = "the Connect CA has no roots yet"
		t.warn(pos, "proxy group %q: %s; its routes through the mesh answer 503 until it has", g.Name, gm.why)
		return gm
	}
	leaf, ok := t.mesh.Leaf(svc)
	if !ok {
		gm.why = fmt.Sprintf("no leaf certificate for its mesh identity %q yet", svc)
		t.warn(pos, "proxy group %q: %s; its routes through the mesh answer 503 until Consul issues one", g.Name, gm.why)
		return gm
	}
	dc, ok := spiffeDatacenter(leaf.SPIFFE, roots.TrustDomain, svc)
	if !ok {
		gm.why = fmt.Sprintf("the leaf certificate of %q has SPIFFE ID %q, not that service's in trust domain %q", svc, leaf.SPIFFE, roots.TrustDomain)
		t.warn(pos, "proxy group %q: %s; its routes through the mesh answer 503", g.Name, gm.why)
		return gm
	}
	gm.dc = dc
	gm.mesh = &ir.EdgeMesh{
		Leaf:  ir.MeshLeaf{Service: leaf.Service, CertPEM: leaf.CertPEM, KeyPEM: ir.PrivateKey(leaf.KeyPEM)},
		Roots: meshRoots(roots),
	}
	return gm
}

// identityTaken says why a group may not present svc as its mesh
// identity, or "" when it may. Consul's intentions name services: a group
// presenting a registered service's identity would be that service to
// every sidecar. So the identity must be a name Consul knows no service
// by: not in the registry snapshot (which covers the identities, see
// Services), and no sidecar's service in the mesh snapshot.
func (t *translation) identityTaken(svc string) string {
	if _, ok := t.snap.Service(svc); ok {
		return "is a service registered in Consul"
	}
	if _, ok := t.serves()[svc]; ok {
		return "is a service with Connect sidecars in Consul"
	}
	if !t.snap.Covers(svc) {
		return "is not known yet not to be a service registered in Consul"
	}
	return ""
}

// route points a route through the mesh at its services' mesh clusters,
// or makes it unavailable while the group cannot reach the mesh.
func (gm *groupMesh) route(t *translation, r *policy.Route, out *ir.Route) {
	if gm.mesh == nil {
		out.Backends, out.Unavailable = nil, gm.why
		return
	}
	td := gm.mesh.Roots.TrustDomain
	for i := range out.Backends {
		b := &out.Backends[i]
		sni := ir.MeshSNI(b.Service, gm.dc, td)
		b.MeshCluster = sni
		if gm.clusters[sni] != nil {
			continue
		}
		proto, ok := t.serves()[b.Service]
		if !ok {
			proto = ir.ProtocolHTTP // no sidecar known: no endpoints either
		}
		warn := func(format string, args ...any) { t.warn(consulPos, format, args...) }
		c := meshCluster(t.mesh, nil, b.Service, gm.dc, td, proto, t.serves(), warn)
		c.Source = r.Pos.String()
		gm.clusters[sni] = c
		if d, ok := t.mesh.Destination(b.Service); !ok || len(d.Endpoints) == 0 {
			t.warn(r.Pos, "service %q has no Connect sidecar in Consul; its routes through the mesh answer 503 until it has", b.Service)
		}
	}
}

// dropNameClashes keeps a service routed to directly whose name is one of
// the group's mesh cluster names (a Consul service literally named like a
// service's SNI) from becoming a second cluster of that name, of which
// Envoy would keep one: it leaves services, its direct routes answer 503,
// and a warning names the line of its first route.
func (gm *groupMesh) dropNameClashes(t *translation, services map[string]serviceRef, listeners []ir.Listener) {
	if gm == nil {
		return
	}
	clash := map[string]bool{}
	for key, ref := range services {
		if gm.clusters[ref.name] != nil {
			if !clash[ref.name] {
				t.warn(ref.pos, "service %q is named like the mesh cluster of a route through the mesh (its SNI); its routes reached directly answer 503: rename the service", ref.name)
			}
			clash[ref.name] = true
			delete(services, key)
		}
	}
	if len(clash) == 0 {
		return
	}
	for li := range listeners {
		for vi := range listeners[li].VirtualHosts {
			routes := listeners[li].VirtualHosts[vi].Routes
			for ri := range routes {
				for _, b := range routes[ri].Backends {
					if b.MeshCluster == "" && clash[b.Service] {
						routes[ri].Backends = nil
						routes[ri].Unavailable = fmt.Sprintf("service %q is named like a mesh cluster", b.Service)
						break
					}
				}
			}
		}
	}
}

// done returns the group's EdgeMesh, or nil when no route reaches the
// mesh: its secrets are served only while a cluster uses them.
func (gm *groupMesh) done() *ir.EdgeMesh {
	if gm == nil || gm.mesh == nil || len(gm.clusters) == 0 {
		return nil
	}
	for _, c := range gm.clusters {
		gm.mesh.Clusters = append(gm.mesh.Clusters, *c)
	}
	sort.Slice(gm.mesh.Clusters, func(i, j int) bool { return gm.mesh.Clusters[i].SNI < gm.mesh.Clusters[j].SNI })
	return gm.mesh
}

// serves is what each service's sidecars serve, computed once per
// translation.
func (t *translation) serves() map[string]ir.Protocol {
	if t.served == nil {
		t.served = servedProtocols(t.mesh)
	}
	return t.served
}

// spiffeDatacenter returns the datacenter of service's SPIFFE ID in the
// trust domain: spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>.
// ok is false for any other ID, another service's included: the group
// would present an identity other than the one it is named by.
func spiffeDatacenter(id, trustDomain, service string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://"+trustDomain+"/ns/default/dc/")
	if !ok {
		return "", false
	}
	dc, svc, ok := strings.Cut(rest, "/svc/")
	if !ok || !ir.ValidMeshName(dc) || svc != service {
		return "", false
	}
	return dc, true
}

// MeshDestinations lists the services the set's proxy groups reach
// through the mesh, sorted: the mesh watcher watches their sidecars'
// health.
func MeshDestinations(set *policy.Set) []string {
	seen := map[string]bool{}
	for _, g := range set.Groups {
		eachRoute(&g, func(r *policy.Route) {
			if r.Mesh {
				for _, ref := range routeServices(r) {
					seen[ref.name] = true
				}
			}
		})
	}
	return sortedKeys(seen)
}

// MeshIdentities lists the mesh identities (Consul service names) of the
// set's proxy groups that route through the mesh, sorted: the mesh
// watcher fetches their leaf certificates.
func MeshIdentities(set *policy.Set) []string {
	seen := map[string]bool{}
	for _, g := range set.Groups {
		if g.UsesMesh() {
			seen[g.MeshService()] = true
		}
	}
	return sortedKeys(seen)
}

// eachRoute calls fn with every route of a group, in file order.
func eachRoute(g *policy.ProxyGroup, fn func(r *policy.Route)) {
	for _, l := range g.Listeners {
		for _, vh := range l.Hosts {
			for i := range vh.Routes {
				fn(&vh.Routes[i])
			}
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// meshRoots is the CA's roots as the IR holds them: every root, so that
// during a rotation certificates of either verify.
func meshRoots(roots registry.Roots) ir.MeshRoots {
	var pem strings.Builder
	for _, r := range roots.Roots {
		pem.WriteString(r.CertPEM)
		if !strings.HasSuffix(r.CertPEM, "\n") {
			pem.WriteString("\n")
		}
	}
	return ir.MeshRoots{TrustDomain: roots.TrustDomain, RootsPEM: pem.String()}
}

// servedProtocols is what each service's sidecars say they serve (the
// first sidecar's, by proxy ID).
func servedProtocols(snap *registry.MeshSnapshot) map[string]ir.Protocol {
	serves := map[string]ir.Protocol{}
	for _, id := range snap.SidecarIDs() {
		sc, _ := snap.Sidecar(id)
		if _, seen := serves[sc.Service]; !seen {
			serves[sc.Service] = protocolOf(sc.Protocol)
		}
	}
	return serves
}

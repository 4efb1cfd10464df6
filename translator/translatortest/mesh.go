package translatortest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// MeshStep is one state of a changing mesh: what changed to reach it,
// and Consul's view and the policy set after the change.
type MeshStep struct {
	Change string
	Snap   *registry.MeshSnapshot
	Set    *policy.Set
}

// MeshChanges is a mesh changing steps times, chosen by seed: health
// flips, sidecars registered, deregistered and changed (protocol,
// upstreams, ports), what a service serves, intentions and their default, leaf and root
// rotations, a new trust domain, a moment without roots, and Service
// policy changes (timeouts, retries, splits, a split of a split). Its
// services speak every protocol; one, "ghost", has no sidecar, only a
// Connect-native instance, so its callers decide its protocol. Some
// states have sidecars that cannot be served (no leaf, a bad upstream,
// two listeners on one port). The same seed gives the same steps.
//
// For tests that an incremental translation or build equals a fresh one
// after every step. A health flip shares every other part of the
// snapshot with the one before, as the MeshWatcher's snapshots do; other
// steps build a new snapshot, whose unchanged parts are equal values.
func MeshChanges(tb testing.TB, seed uint64, steps int) []MeshStep {
	tb.Helper()
	m := newMeshModel(tb, seed)
	out := []MeshStep{{Change: "start", Snap: m.snapshot(), Set: m.set()}}
	for range steps {
		prev := out[len(out)-1].Snap
		change, snap := m.change(prev)
		if snap == nil {
			snap = m.snapshot()
		}
		out = append(out, MeshStep{Change: change, Snap: snap, Set: m.set()})
	}
	return out
}

// meshServices are the services that have sidecars, with the protocol
// their first sidecar declares.
var meshServices = []struct{ name, protocol string }{
	{"svc-0", "http"}, {"svc-1", "http"}, {"svc-2", "grpc"}, {"svc-3", "tcp"}, {"svc-4", "http2"}, {"svc-5", "http"},
}

// meshPolicies are the Service (and Mesh) policies a step may switch to
// ("" is no policy set at all).
var meshPolicies = []string{"", `
apiVersion: switchyard.io/v1
kind: Service
name: svc-0
mesh: { timeout: 2s, retries: { attempts: 2, on: [5xx] } }
---
apiVersion: switchyard.io/v1
kind: Service
name: svc-3
mesh: { timeout: 1s }
---
apiVersion: switchyard.io/v1
kind: Mesh
accessLog: { enabled: false }
`, `
apiVersion: switchyard.io/v1
kind: Service
name: svc-0
mesh:
  split:
    - { service: svc-0, weight: 80 }
    - { service: svc-1, weight: 20 }
---
apiVersion: switchyard.io/v1
kind: Service
name: svc-1
mesh:
  timeout: 3s
  split:
    - { service: svc-1, weight: 50 }
    - { service: svc-5, weight: 50 }
`, `
apiVersion: switchyard.io/v1
kind: Service
name: svc-1
mesh:
  split:
    - { service: ghost, weight: 10 }
    - { service: svc-1, weight: 90 }
---
apiVersion: switchyard.io/v1
kind: Service
name: svc-4
mesh: { retries: { attempts: 3, on: [reset] } }
---
apiVersion: switchyard.io/v1
kind: Mesh
accessLog: { path: /var/log/envoy/mesh.log, format: text }
tracing: { address: otel-collector.service.consul:4317, sampling: 5 }
`}

type meshModel struct {
	rnd        *rand.Rand
	sets       []*policy.Set
	setIdx     int
	sidecars   map[string]registry.Sidecar
	health     map[string]registry.Health // by proxy ID
	leaves     map[string]registry.Leaf
	intentions map[string]registry.Intentions
	deflt      string
	td         string
	rootsGen   int
	noRoots    bool
	next       int // for new proxy IDs and ports
}

func newMeshModel(tb testing.TB, seed uint64) *meshModel {
	m := &meshModel{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		sidecars: map[string]registry.Sidecar{}, health: map[string]registry.Health{},
		leaves: map[string]registry.Leaf{}, intentions: map[string]registry.Intentions{},
		deflt: registry.IntentionAllow, td: "11111111-2222-3333-4444-555555555555.consul"}
	for i, doc := range meshPolicies {
		if doc == "" {
			m.sets = append(m.sets, nil)
			continue
		}
		set, diags := policy.Parse(map[string][]byte{fmt.Sprintf("mesh-%d.yaml", i): []byte(doc)})
		if diags.HasErrors() {
			tb.Fatalf("policy %d: %v", i, diags.Err())
		}
		m.sets = append(m.sets, set)
	}
	for _, s := range meshServices {
		m.leaves[s.name] = m.leaf(s.name)
		for range 2 {
			m.addSidecar(s.name, s.protocol)
		}
	}
	m.intentions["svc-0"] = registry.Intentions{Destination: "svc-0", Sources: []registry.IntentionSource{
		{Name: "svc-1", Action: "deny", Precedence: 9}}}
	return m
}

func (m *meshModel) set() *policy.Set { return m.sets[m.setIdx] }

func (m *meshModel) leaf(svc string) registry.Leaf {
	m.next++
	return registry.Leaf{Service: svc, SerialNumber: fmt.Sprint(m.next),
		CertPEM: fmt.Sprintf("-----BEGIN CERTIFICATE-----\n%s-%d\n-----END CERTIFICATE-----\n", svc, m.next),
		KeyPEM:  registry.KeyPEM(fmt.Sprintf("-----BEGIN EC PRIVATE KEY-----\n%s-%d\n-----END EC PRIVATE KEY-----\n", svc, m.next))}
}

// addSidecar registers a sidecar of svc calling two or three services.
func (m *meshModel) addSidecar(svc, protocol string) {
	m.next++
	id := fmt.Sprintf("%s-%d-sidecar-proxy", svc, m.next)
	sc := registry.Sidecar{ID: id, Name: svc + "-sidecar-proxy", Service: svc, ServiceID: fmt.Sprintf("%s-%d", svc, m.next),
		Node: "node-a", Address: fmt.Sprintf("10.0.%d.%d", m.next/250, m.next%250+1), Port: 21000, Datacenter: "dc1",
		LocalServiceAddress: "127.0.0.1", LocalServicePort: 8080, Protocol: protocol, Health: registry.Healthy}
	if m.rnd.IntN(8) == 0 {
		sc.Datacenter = "dc2" // its upstreams are other clusters
	}
	sc.Upstreams = m.upstreams()
	m.sidecars[id] = sc
	m.health[id] = registry.Healthy
}

// upstreams picks two or three destinations, sometimes ghost, sometimes
// with a protocol of their own, rarely one that cannot be served.
func (m *meshModel) upstreams() []registry.Upstream {
	var ups []registry.Upstream
	for k := range 2 + m.rnd.IntN(2) {
		dest := "ghost"
		if m.rnd.IntN(5) > 0 {
			dest = meshServices[m.rnd.IntN(len(meshServices))].name
		}
		u := registry.Upstream{DestinationType: "service", DestinationName: dest, LocalBindPort: 9000 + k}
		switch m.rnd.IntN(12) {
		case 0:
			u.Protocol = "http"
		case 1:
			u.Protocol = "tcp"
		case 2:
			u.DestinationName = "bad name"
		case 3:
			u.LocalBindPort = 9000 // maybe twice: the sidecar cannot be served
		case 4:
			u.Problem = "prepared queries are not supported"
		}
		ups = append(ups, u)
	}
	return ups
}

func (m *meshModel) ids() []string { return slices.Sorted(maps.Keys(m.sidecars)) }

// change makes one random change; it returns the snapshot itself when it
// derives it from prev.
func (m *meshModel) change(prev *registry.MeshSnapshot) (string, *registry.MeshSnapshot) {
	if m.noRoots {
		m.noRoots = false
		return "roots back", nil
	}
	ids := m.ids()
	pick := func() string { return ids[m.rnd.IntN(len(ids))] }
	switch n := m.rnd.IntN(100); {
	case n < 30 && len(ids) > 0:
		id := pick()
		states := []registry.Health{registry.Healthy, registry.Unhealthy, registry.Draining}
		m.health[id] = states[m.rnd.IntN(len(states))]
		d := m.destination(m.sidecars[id].Service)
		if prev != nil && !m.noRoots {
			return fmt.Sprintf("health of %s: %s", id, m.health[id]), prev.WithDestination(d)
		}
		return fmt.Sprintf("health of %s: %s", id, m.health[id]), nil
	case n < 40:
		s := meshServices[m.rnd.IntN(len(meshServices))]
		m.addSidecar(s.name, s.protocol)
		return "sidecar of " + s.name + " registered", nil
	case n < 48 && len(ids) > 1:
		id := pick()
		delete(m.sidecars, id)
		delete(m.health, id)
		return id + " deregistered", nil
	case n < 55:
		// What a service serves is its first sidecar's protocol.
		svc := meshServices[m.rnd.IntN(len(meshServices))].name
		for _, id := range ids {
			if sc := m.sidecars[id]; sc.Service == svc {
				sc.Protocol = []string{"http", "grpc", "tcp"}[m.rnd.IntN(3)]
				m.sidecars[id] = sc
				return fmt.Sprintf("%s serves %s", svc, sc.Protocol), nil
			}
		}
		return "no change", nil
	case n < 62 && len(ids) > 0:
		id := pick()
		sc := m.sidecars[id]
		switch m.rnd.IntN(3) {
		case 0:
			sc.Protocol = []string{"http", "http2", "grpc", "tcp", ""}[m.rnd.IntN(5)]
		case 1:
			sc.Upstreams = m.upstreams()
		default:
			sc.Port++
		}
		m.sidecars[id] = sc
		return id + " changed", nil
	case n < 72:
		name := []string{"svc-0", "svc-1", "svc-2", "svc-3", "*"}[m.rnd.IntN(5)]
		if m.rnd.IntN(4) == 0 {
			delete(m.intentions, name)
			return "intentions of " + name + " removed", nil
		}
		m.intentions[name] = m.intentionsFor(name)
		return "intentions of " + name + " changed", nil
	case n < 75:
		m.deflt = map[string]string{registry.IntentionAllow: registry.IntentionDeny, registry.IntentionDeny: registry.IntentionAllow}[m.deflt]
		return "intention default " + m.deflt, nil
	case n < 82:
		svc := meshServices[m.rnd.IntN(len(meshServices))].name
		if _, ok := m.leaves[svc]; ok && m.rnd.IntN(4) == 0 {
			delete(m.leaves, svc)
			return "leaf of " + svc + " gone", nil
		}
		m.leaves[svc] = m.leaf(svc)
		return "leaf of " + svc + " rotated", nil
	case n < 86:
		m.rootsGen++
		return "roots rotated", nil
	case n < 94:
		m.setIdx = m.rnd.IntN(len(m.sets))
		return fmt.Sprintf("policy %d", m.setIdx), nil
	case n < 97:
		m.noRoots = true
		return "no roots", nil
	default:
		m.next++
		m.td = fmt.Sprintf("%08d-2222-3333-4444-555555555555.consul", m.next)
		return "new trust domain", nil
	}
}

// intentionsFor is a random service-intentions entry: L4 rules, and an
// L7 one (a deny for a tcp service).
func (m *meshModel) intentionsFor(name string) registry.Intentions {
	in := registry.Intentions{Destination: name}
	for _, s := range meshServices {
		switch m.rnd.IntN(4) {
		case 0:
			in.Sources = append(in.Sources, registry.IntentionSource{Name: s.name, Action: "deny", Precedence: 9})
		case 1:
			in.Sources = append(in.Sources, registry.IntentionSource{Name: s.name, Action: "allow", Precedence: 9})
		case 2:
			in.Sources = append(in.Sources, registry.IntentionSource{Name: s.name, Precedence: 9, Permissions: []registry.IntentionPermission{
				{Action: "allow", HTTP: &registry.IntentionHTTP{PathPrefix: "/public", Methods: []string{"GET"}}}}})
		}
	}
	if m.rnd.IntN(2) == 0 {
		in.Sources = append(in.Sources, registry.IntentionSource{Name: "*", Action: "deny", Precedence: 5})
	}
	return in
}

// destination is a service's endpoints: its sidecars with their health
// (ghost's: one Connect-native instance).
func (m *meshModel) destination(svc string) registry.Destination {
	d := registry.Destination{Name: svc}
	if svc == "ghost" {
		d.Endpoints = []registry.Endpoint{{ServiceID: "ghost-1", Node: "node-b", Address: "10.9.0.1", Port: 8443, Datacenter: "dc1",
			Native: true, Health: registry.Healthy, Weight: 1}}
		return d
	}
	for _, id := range m.ids() {
		sc := m.sidecars[id]
		if sc.Service != svc {
			continue
		}
		h := m.health[id]
		d.Endpoints = append(d.Endpoints, registry.Endpoint{ProxyID: id, ServiceID: sc.ServiceID, Node: sc.Node,
			Address: sc.Address, Port: sc.Port, Datacenter: sc.Datacenter, Health: h, ProxyHealth: h, ServiceHealth: h, Weight: 1})
	}
	return d
}

// snapshot is the model as a new snapshot.
func (m *meshModel) snapshot() *registry.MeshSnapshot {
	d := registry.MeshData{IntentionDefault: m.deflt}
	for _, id := range m.ids() {
		d.Sidecars = append(d.Sidecars, m.sidecars[id])
	}
	for _, s := range meshServices {
		d.Destinations = append(d.Destinations, m.destination(s.name))
	}
	d.Destinations = append(d.Destinations, m.destination("ghost"))
	for _, svc := range slices.Sorted(maps.Keys(m.leaves)) {
		d.Leaves = append(d.Leaves, m.leaves[svc])
	}
	for _, name := range slices.Sorted(maps.Keys(m.intentions)) {
		d.Intentions = append(d.Intentions, m.intentions[name])
	}
	if !m.noRoots {
		d.Roots = &registry.Roots{TrustDomain: m.td, Roots: []registry.Root{{ID: fmt.Sprint(m.rootsGen),
			CertPEM: fmt.Sprintf("-----BEGIN CERTIFICATE-----\nroot-%d\n-----END CERTIFICATE-----\n", m.rootsGen)}}}
	}
	return registry.NewMeshSnapshot(d)
}

package envoy

import (
	"fmt"
	"testing"

	"github.com/switchyard-io/switchyard/translator/ir"
)

const benchTD = "11111111-2222-3333-4444-555555555555.consul"

// benchMesh is 100 destinations with 5 sidecars each.
func benchMesh() *ir.Mesh {
	m := &ir.Mesh{Roots: ir.MeshRoots{TrustDomain: benchTD, RootsPEM: "ROOTS"}}
	for i := 0; i < 100; i++ {
		svc := fmt.Sprintf("svc-%03d", i)
		c := ir.MeshCluster{Service: svc, Datacenter: "dc1", SNI: ir.MeshSNI(svc, "dc1", benchTD),
			SPIFFEID: ir.SPIFFEID(benchTD, "dc1", svc), Protocol: ir.ProtocolHTTP}
		for j := 0; j < 5; j++ {
			c.Endpoints = append(c.Endpoints, ir.Endpoint{ID: fmt.Sprintf("%s-%d-sidecar-proxy", svc, j),
				Address: fmt.Sprintf("10.0.%d.%d", i, j+1), Port: 21000, Health: ir.Healthy, Weight: 1})
		}
		m.Clusters = append(m.Clusters, c)
	}
	return m
}

// A health flip of one destination among 100: one destination's resources
// are built; the rest are reused.
func BenchmarkMeshHealthFlip(b *testing.B) {
	m := benchMesh()
	var mb MeshBuilder
	if _, _, err := mb.Build(m); err != nil {
		b.Fatal(err)
	}
	flip := *m
	flip.Clusters = append([]ir.MeshCluster(nil), m.Clusters...)
	c := &flip.Clusters[42]
	c.Endpoints = append([]ir.Endpoint(nil), c.Endpoints...)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Endpoints[0].Health = []ir.Health{ir.Healthy, ir.Unhealthy}[i%2]
		if _, _, err := mb.Build(&flip); err != nil {
			b.Fatal(err)
		}
	}
}

// One sidecar with 10 upstreams and a few intentions, without and with
// the default access log.
func BenchmarkBuildSidecar(b *testing.B) {
	s := &ir.Sidecar{ProxyID: "web-1-sidecar-proxy", Service: "web", TrustDomain: benchTD,
		PublicAddress: "10.0.0.1", PublicPort: 21000, LocalAddress: "127.0.0.1", LocalPort: 8080,
		Protocol: ir.ProtocolHTTP,
		Intentions: ir.Intentions{Default: ir.Deny, Rules: []ir.Intention{
			{Source: "frontend", Permissions: []ir.Permission{{Action: ir.Allow, HTTP: &ir.PermissionHTTP{PathPrefix: "/public"}}}},
			{Source: "*", Action: ir.Allow}, {Source: "legacy", Action: ir.Deny},
		}},
		Leaf: ir.MeshLeaf{Service: "web", CertPEM: "CERT", KeyPEM: "KEY"}}
	for i := 0; i < 10; i++ {
		svc := fmt.Sprintf("svc-%03d", i)
		s.Upstreams = append(s.Upstreams, ir.Upstream{Destination: svc, BindAddress: "127.0.0.1", BindPort: uint32(9000 + i),
			Protocol: ir.ProtocolHTTP, Cluster: ir.MeshSNI(svc, "dc1", benchTD)})
	}
	build := func(s *ir.Sidecar) func(*testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, _, err := BuildSidecar(s); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("no-access-log", build(s))
	// What a sidecar gets without a Mesh document: a JSON access log on
	// each of its 11 listeners.
	logged := *s
	logged.AccessLog = &ir.AccessLog{Path: "stdout", Format: "json"}
	b.Run("default-access-log", build(&logged))
}

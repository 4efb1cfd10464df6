package ir_test

import (
	"fmt"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// How a translator fills the mesh IR from Consul's data. The Consul side
// (what registry would hand over) is in the comments.
func ExampleSidecar() {
	// GET /v1/connect/ca/roots: {"TrustDomain": "<cluster id>.consul",
	// "Roots": [{"RootCert": ..., "Active": true}, ...]}. Every root is
	// trusted, so a rotation's old and new roots both verify.
	td := "11111111-2222-3333-4444-555555555555.consul"
	mesh := ir.Mesh{Roots: ir.MeshRoots{TrustDomain: td, RootsPEM: "<every RootCert>"}}

	// A destination that some sidecar names in its upstreams, from
	// GET /v1/health/connect/api: each entry is one of api's sidecars
	// (Service.Address, Service.Port: its public port), healthy when its
	// checks and its service's pass. Its protocol is api's service-defaults
	// "protocol" (default tcp).
	mesh.Clusters = append(mesh.Clusters, ir.MeshCluster{
		Service: "api", Datacenter: "dc1",
		SNI:      ir.MeshSNI("api", "dc1", td),
		SPIFFEID: ir.SPIFFEID(td, "dc1", "api"),
		Protocol: ir.ProtocolHTTP,
		Endpoints: []ir.Endpoint{
			{ID: "api-1-sidecar-proxy", Address: "10.0.0.11", Port: 21000, Health: ir.Healthy, Weight: 1, Locality: "dc1"},
		},
	})

	// The sidecar, from its connect-proxy registration:
	// {"ID": "web-1-sidecar-proxy", "Kind": "connect-proxy", "Address":
	// "10.0.0.1", "Port": 21000, "Proxy": {"DestinationServiceName": "web",
	// "LocalServiceAddress": "127.0.0.1", "LocalServicePort": 8080,
	// "Config": {"protocol": "http"}, "Upstreams": [{"DestinationName":
	// "api", "LocalBindPort": 9191}]}}.
	web := ir.Sidecar{
		ProxyID: "web-1-sidecar-proxy", Service: "web", TrustDomain: td,
		PublicAddress: "10.0.0.1", PublicPort: 21000,
		LocalAddress: "127.0.0.1", LocalPort: 8080,
		Protocol: ir.ProtocolHTTP,
		// The service-intentions config entry for web (Sources[].Name,
		// Action or Permissions[].Action/HTTP); the default is deny when
		// the ACL default policy is deny.
		Intentions: ir.Intentions{Default: ir.Deny, Rules: []ir.Intention{
			{Source: "frontend", Permissions: []ir.Permission{
				{Action: ir.Allow, HTTP: &ir.PermissionHTTP{PathPrefix: "/public", Methods: []string{"GET"}}},
			}},
		}},
		Upstreams: []ir.Upstream{{
			Destination: "api", BindAddress: "127.0.0.1", // LocalBindAddress, default 127.0.0.1
			BindPort: 9191, Protocol: ir.ProtocolHTTP, Cluster: ir.MeshSNI("api", "dc1", td),
		}},
		// GET /v1/agent/connect/ca/leaf/web: CertPEM, PrivateKeyPEM.
		Leaf: ir.MeshLeaf{Service: "web", CertPEM: "<CertPEM>", KeyPEM: "<PrivateKeyPEM>"},
	}

	fmt.Println(mesh.Validate(), web.Validate(), mesh.ValidateSidecar(&web))
	fmt.Println(web.Leaf.KeyPEM) // a key never prints
	fmt.Println(mesh.Clusters[0].SNI)
	// Output:
	// <nil> <nil> <nil>
	// [redacted]
	// api.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul
}

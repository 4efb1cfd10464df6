package policy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-io/switchyard/policy"
)

const meshDoc = `apiVersion: switchyard.io/v1
kind: Mesh
accessLog: { path: /var/log/envoy/access.log, format: text }
tracing: { address: otel-collector.service.consul:4317, sampling: 10 }
`

// A Mesh document sets every sidecar's access log and tracing, with the
// rules of a proxy group's; without one, sidecars log JSON to stdout.
func TestMeshDocument(t *testing.T) {
	set, diags := policy.ParseWith(policy.Options{Mesh: true}, map[string][]byte{"mesh.yaml": []byte(meshDoc)})
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", lines(diags))
	}
	want := &policy.Mesh{
		Pos:       policy.Pos{File: "mesh.yaml", Line: 2},
		AccessLog: &policy.AccessLog{Pos: policy.Pos{File: "mesh.yaml", Line: 3}, Path: "/var/log/envoy/access.log", Format: "text"},
		// No serviceName: each sidecar's service name.
		Tracing: &policy.Tracing{Pos: policy.Pos{File: "mesh.yaml", Line: 4}, Address: "otel-collector.service.consul:4317", Sampling: 10},
	}
	if diff := cmp.Diff(want, set.Mesh); diff != "" {
		t.Errorf("Mesh (-want +got):\n%s", diff)
	}
	if got := set.Mesh.EffectiveAccessLog(); got.Path != "/var/log/envoy/access.log" || got.Format != "text" {
		t.Errorf("EffectiveAccessLog = %+v", got)
	}

	empty, _ := policy.ParseWith(policy.Options{Mesh: true}, map[string][]byte{})
	if empty.Mesh != nil {
		t.Errorf("no Mesh document: Mesh = %+v; want nil", empty.Mesh)
	}
	if got := empty.Mesh.EffectiveAccessLog(); got == nil || got.Path != "stdout" || got.Format != "json" {
		t.Errorf("default sidecar access log = %+v; want JSON on stdout", got)
	}
	off, _ := policy.ParseWith(policy.Options{Mesh: true}, map[string][]byte{"mesh.yaml": []byte("apiVersion: switchyard.io/v1\nkind: Mesh\naccessLog: { enabled: false }\n")})
	if got := off.Mesh.EffectiveAccessLog(); got != nil {
		t.Errorf("enabled: false: EffectiveAccessLog = %+v; want nil", got)
	}
}

// A Mesh document is checked as strictly as any: the same access log and
// tracing rules as a group's, unknown fields, a second document, and the
// mesh being off, each at its file and line.
func TestMeshDocumentErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  policy.Options
		files map[string][]byte
		want  []string
	}{
		{"fields", policy.Options{Mesh: true}, map[string][]byte{"m.yaml": []byte(`apiVersion: switchyard.io/v1
kind: Mesh
name: mesh
accessLog: { path: logs/access.log, format: xml }
tracing: { address: otel-collector, serviceName: "" }
`)}, []string{
			`m.yaml:3: unknown field "name" in Mesh`,
			`m.yaml:4: accessLog path "logs/access.log": want stdout, stderr or an absolute, clean file path (such as /var/log/envoy/access.log)`,
			`m.yaml:4: accessLog format "xml": want json or text`,
			`m.yaml:5: tracing address "otel-collector": want host:port, such as otel-collector.service.consul:4317 or 10.0.0.9:4317`,
			`m.yaml:5: tracing serviceName must not be empty`,
		}},
		{"second document", policy.Options{Mesh: true}, map[string][]byte{
			"a.yaml": []byte(meshDoc),
			"b.yaml": []byte("apiVersion: switchyard.io/v1\nkind: Mesh\naccessLog: { enabled: false }\n"),
		}, []string{
			`b.yaml:2: a second Mesh document (the first is at a.yaml:2); the mesh has one: merge them`,
		}},
		{"mesh off", policy.Options{}, map[string][]byte{"m.yaml": []byte(meshDoc + "---\n" + `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners: [{ name: public, port: 8080, hosts: [{ domains: ["*"], routes: [{ service: web }] }] }]
`)}, []string{
			`m.yaml:2: a Mesh document needs the Connect mesh, which is off; run serve --mesh (and validate --mesh), or remove it`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := policy.ParseWith(tt.opts, tt.files)
			if diff := cmp.Diff(tt.want, lines(diags)); diff != "" {
				t.Errorf("diagnostics (-want +got):\n%s", diff)
			}
			if set != nil {
				t.Error("got a Set; want none")
			}
		})
	}
}

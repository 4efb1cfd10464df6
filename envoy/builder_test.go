package envoy

import (
	"os"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/translator/ir"
)

func loadIR(t *testing.T, path string) *ir.Config {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg ir.Config
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// A Builder that remembers must build exactly what a fresh one builds,
// through a sequence of changes: reuse saves work and changes nothing.
func TestBuilderMatchesFreshBuild(t *testing.T) {
	edge := loadIR(t, "testdata/edge.in.yaml")
	dns := loadIR(t, "testdata/dns.in.yaml")

	flip := *edge // one endpoint's health changed
	flip.Clusters = append([]ir.Cluster(nil), edge.Clusters...)
	flip.Clusters[0].Endpoints = append([]ir.Endpoint(nil), flip.Clusters[0].Endpoints...)
	flip.Clusters[0].Endpoints[0].Health = ir.Unhealthy

	fewer := *edge // listeners and clusters gone: only "plain", to api
	fewer.Listeners = edge.Listeners[1:2]
	fewer.Clusters = edge.Clusters[:1]
	if fewer.Listeners[0].Name != "plain" || fewer.Clusters[0].Service != "api" {
		t.Fatal("the fixture changed: want listener 1 plain, cluster 0 api")
	}

	var b Builder
	for i, cfg := range []*ir.Config{edge, &flip, edge, &fewer, dns, edge, edge} {
		got, gotDigests, err := b.Build(cfg)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want, wantDigests, err := new(Builder).Build(cfg)
		if err != nil {
			t.Fatalf("step %d, fresh: %v", i, err)
		}
		for _, typ := range Types {
			if len(got[typ]) != len(want[typ]) {
				t.Fatalf("step %d: %d %s; a fresh build has %d", i, len(got[typ]), typ, len(want[typ]))
			}
			for j := range want[typ] {
				if !proto.Equal(got[typ][j], want[typ][j]) {
					t.Errorf("step %d: %s %q differs from a fresh build", i, typ, GetName(want[typ][j]))
				}
			}
			for name, d := range wantDigests[typ] {
				if gotDigests[typ][name] != d {
					t.Errorf("step %d: %s %q digest %q; fresh %q", i, typ, name, gotDigests[typ][name], d)
				}
			}
		}
	}
}

// An unchanged node's resources are the very ones built before; a changed
// cluster's endpoints are new, and their digest changes.
func TestBuilderReusesUnchangedNodes(t *testing.T) {
	edge := loadIR(t, "testdata/edge.in.yaml")
	var b Builder
	first, firstDigests, err := b.Build(edge)
	if err != nil {
		t.Fatal(err)
	}
	flip := *edge
	flip.Clusters = append([]ir.Cluster(nil), edge.Clusters...)
	flip.Clusters[0].Endpoints = append([]ir.Endpoint(nil), flip.Clusters[0].Endpoints...)
	flip.Clusters[0].Endpoints[0].Health = ir.Unhealthy
	changed := ClusterName(flip.Clusters[0].Service)

	second, secondDigests, err := b.Build(&flip)
	if err != nil {
		t.Fatal(err)
	}
	byName := func(list []types.Resource) map[string]types.Resource {
		m := map[string]types.Resource{}
		for _, r := range list {
			m[GetName(r)] = r
		}
		return m
	}
	for _, typ := range Types {
		before := byName(first[typ])
		for _, r := range second[typ] {
			name := GetName(r)
			same := before[name] == r // the same pointer: reused
			// The flipped cluster's node is built again, both its
			// resources; its Cluster comes out equal (same digest), so
			// the shared one is used (intern).
			wantSame := name != changed || typ != resource.EndpointType
			if same != wantSame {
				t.Errorf("%s %q reused = %v; want %v", typ, name, same, wantSame)
			}
		}
	}
	if firstDigests[resource.EndpointType][changed] == secondDigests[resource.EndpointType][changed] {
		t.Errorf("the flipped cluster's endpoints kept digest %q", firstDigests[resource.EndpointType][changed])
	}
	if firstDigests[resource.ClusterType][changed] != secondDigests[resource.ClusterType][changed] {
		t.Errorf("the flipped cluster's Cluster changed digest; a health flip must leave it equal")
	}
	if len(b.memo) != len(edge.Clusters)+len(edge.Listeners)+len(edge.Secrets) {
		t.Errorf("the builder remembers %d nodes; want one per cluster, listener and secret", len(b.memo))
	}
}

// Two groups' Builders building equal resources share them (one copy in
// memory, whatever the number of groups), except secrets, which hold
// private keys; what differs is not shared.
func TestBuildersShareEqualResources(t *testing.T) {
	edge := loadIR(t, "testdata/edge.in.yaml")
	other := *edge
	other.Group = "other"
	other.Clusters = append([]ir.Cluster(nil), edge.Clusters...)
	other.Clusters[0].Endpoints = append([]ir.Endpoint(nil), other.Clusters[0].Endpoints...)
	other.Clusters[0].Endpoints[0].Weight++
	differs := ClusterName(other.Clusters[0].Service)
	a, _, err := new(Builder).Build(edge)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := new(Builder).Build(&other)
	if err != nil {
		t.Fatal(err)
	}
	shared := 0
	for _, typ := range Types {
		if len(a[typ]) != len(b[typ]) {
			t.Fatalf("%s: %d and %d resources", typ, len(a[typ]), len(b[typ]))
		}
		for i := range a[typ] {
			name := GetName(a[typ][i])
			same := a[typ][i] == b[typ][i]
			want := typ != resource.SecretType && !(typ == resource.EndpointType && name == differs)
			if same != want {
				t.Errorf("%s %q shared = %v; want %v", typ, name, same, want)
			}
			if same {
				shared++
			}
		}
	}
	if shared == 0 {
		t.Error("nothing shared")
	}
}

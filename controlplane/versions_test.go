package controlplane

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// An Envoy's reported release is logged when it connects and shown in
// /debug/proxies; one outside the supported range gets a warning.
func TestEnvoyVersionLoggedAndChecked(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	cb := s.px.callbacks()
	connect := func(id int64, node string, major, minor, patch uint32) {
		t.Helper()
		_ = cb.OnStreamOpen(context.Background(), id, "")
		n := &corev3.Node{Id: node, Cluster: "edge", UserAgentName: "envoy",
			UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
				Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor, Patch: patch}}}}
		if err := cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
			t.Fatalf("request from %s: %v", node, err)
		}
	}
	connect(1, "edge-new", 1, 40, 2)
	connect(2, "edge-old", 1, 30, 0)
	out := logs.String()
	if !strings.Contains(out, `msg="envoy connected" node=edge-new group=edge protocol=sotw envoy_version=1.40.2`) {
		t.Errorf("no connect line with the version for edge-new:\n%s", out)
	}
	if !strings.Contains(out, `msg="envoy version outside the supported range; its config may be refused or behave differently" node=edge-old envoy_version=1.30.0 supported="1.36 to 1.40"`) {
		t.Errorf("no warning for edge-old's 1.30:\n%s", out)
	}
	if strings.Count(out, "outside the supported range") != 1 {
		t.Errorf("want exactly one version warning (edge-old's):\n%s", out)
	}
	versions := map[string]string{}
	for _, p := range s.px.list() {
		versions[p.Node] = p.EnvoyVersion
	}
	if versions["edge-new"] != "1.40.2" || versions["edge-old"] != "1.30.0" {
		t.Errorf("/debug/proxies versions %v; want edge-new 1.40.2, edge-old 1.30.0", versions)
	}
}

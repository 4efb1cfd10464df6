package controlplane

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

const otherPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: other
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`

// A group removed from the policy while an Envoy uses it keeps being
// served, its endpoints following Consul, until its last Envoy
// disconnects; then it is withdrawn.
func TestRemovedGroupServedWhileUsed(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	if err := cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}

	other, diags := policy.Parse(map[string][]byte{"other.yaml": []byte(otherPolicy)})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	s.in.policy = other
	s.rebuild()
	kept := s.pub.groups["edge"]
	if kept == nil || s.pub.groups["other"] == nil {
		t.Fatalf("after edge left the policy: groups %v; want edge kept for its Envoy, and other", groupNames(s))
	}
	if !strings.Contains(logs.String(), "removed from policy while Envoys use it") {
		t.Errorf("no warning about the kept group:\n%s", logs.String())
	}

	// Consul changes still reach it.
	s.in.consul = webSnapshot(registry.Unhealthy)
	s.rebuild()
	if v := s.pub.groups["edge"]; v == nil || v.versions[resource.EndpointType] == kept.versions[resource.EndpointType] {
		t.Fatal("the kept group's endpoints did not follow Consul")
	}
	if _, err := s.cache.GetSnapshot("edge"); err != nil {
		t.Fatalf("the kept group has no snapshot: %v", err)
	}
	// While a group is kept, a health change still takes the health path
	// (the served set, policy plus kept groups, is the same one).
	patches, before := s.pub.edge.healthPatches, s.pub.groups["edge"]
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	if s.pub.edge.healthPatches != patches+1 {
		t.Errorf("a health change with a kept group: %d builds took the health path, want 1", s.pub.edge.healthPatches-patches)
	}
	if v := s.pub.groups["edge"]; v == nil || v.versions[resource.EndpointType] == before.versions[resource.EndpointType] {
		t.Fatal("the kept group's endpoints did not follow Consul the second time")
	}

	// Its last Envoy leaves and comes back (a reconnect): still served.
	s.px.linger = time.Hour
	cb.OnStreamClosed(1, node)
	s.rebuild()
	if s.pub.groups["edge"] == nil {
		t.Fatalf("groups %v right after edge's last Envoy disconnected; want edge kept while it may reconnect", groupNames(s))
	}
	if err := cb.OnStreamRequest(2, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	s.rebuild()
	if _, err := s.cache.GetSnapshot("edge"); err != nil {
		t.Fatalf("the reconnected Envoy's group has no snapshot: %v", err)
	}

	// It leaves for good (the linger passes): withdrawn.
	cb.OnStreamClosed(2, node)
	s.px.linger = 0
	s.rebuild()
	if s.pub.groups["edge"] != nil {
		t.Errorf("groups %v after edge's last Envoy left; want edge withdrawn", groupNames(s))
	}
	if _, err := s.cache.GetSnapshot("edge"); err == nil {
		t.Error("edge's snapshot is still in the cache")
	}
}

// A group removed while no Envoy uses it is withdrawn at once.
func TestRemovedUnusedGroupWithdrawn(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	other, _ := policy.Parse(map[string][]byte{"other.yaml": []byte(otherPolicy)})
	s.in.policy = other
	s.rebuild()
	if s.pub.groups["edge"] != nil {
		t.Errorf("groups %v; want edge withdrawn", groupNames(s))
	}
	if _, err := s.cache.GetSnapshot("edge"); err == nil {
		t.Error("edge's snapshot is still in the cache")
	}
}

func groupNames(s *Server) []string {
	s.pub.mu.Lock()
	defer s.pub.mu.Unlock()
	var out []string
	for name := range s.pub.groups {
		out = append(out, name)
	}
	return out
}

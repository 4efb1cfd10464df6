package controlplane

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/switchyard-io/switchyard/registry"
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

// An Envoy is in sync with a type once it ACKs the version served; a new
// version makes it behind until it ACKs that one, and each ACK of a served
// version is one convergence observation, from the input change.
func TestAckedVersionsAndConvergence(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.setConsul(webSnapshot(registry.Healthy))
	s.rebuild()
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	_ = cb.OnStreamOpen(context.Background(), 1, "")
	first := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType}
	if err := cb.OnStreamRequest(1, first); err != nil {
		t.Fatal(err)
	}
	served := func() string {
		gs, _ := s.pub.group("edge")
		return gs.versions[resource.EndpointType]
	}
	state := func() typeState {
		t.Helper()
		list := s.px.list()
		if len(list) != 1 {
			t.Fatalf("list: %+v", list)
		}
		return list[0].Types[resource.EndpointType]
	}
	histogram := func() (count uint64, sum float64) {
		m := &dto.Metric{}
		if err := s.metrics.convergence.WithLabelValues("ClusterLoadAssignment").(prometheus.Histogram).Write(m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
	}
	observations := func() uint64 { n, _ := histogram(); return n }
	send := func(nonce string) {
		cb.OnStreamResponse(context.Background(), 1, first, &discoveryv3.DiscoveryResponse{TypeUrl: resource.EndpointType, VersionInfo: served(), Nonce: nonce})
	}
	ack := func(nonce string) {
		if err := cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResponseNonce: nonce, VersionInfo: served()}); err != nil {
			t.Fatal(err)
		}
	}

	v1 := served()
	send("1")
	if st := state(); st.InSync || st.Served != v1 || st.Acked != "" {
		t.Errorf("sent, not acknowledged: %+v; want behind, served %s", st, v1)
	}
	ack("1")
	if st := state(); !st.InSync || st.Acked != v1 {
		t.Errorf("acknowledged: %+v; want in sync at %s", st, v1)
	}
	if n := observations(); n != 0 {
		t.Errorf("%d convergence observations after the first ACK of a stream opened after the change; want 0 (a start is not a convergence)", n)
	}

	t0 := time.Now()
	s.in.setConsul(webSnapshot(registry.Unhealthy)) // web-2 fails: new endpoints
	s.rebuild()
	v2 := served()
	if v2 == v1 {
		t.Fatal("the health flip did not change the endpoints' version")
	}
	if st, behind := state(), s.px.list()[0].Behind; st.InSync || st.Served != v2 || st.Acked != v1 || len(behind) != 1 || behind[0] != "ClusterLoadAssignment" {
		t.Errorf("after a new version: %+v behind %v; want behind on ClusterLoadAssignment, acked %s, served %s", st, behind, v1, v2)
	}
	send("2")
	ack("2")
	ack("2") // a repeated ACK is not a second convergence
	if st := state(); !st.InSync || st.Acked != v2 {
		t.Errorf("acknowledged again: %+v; want in sync at %s", st, v2)
	}
	n, sum := histogram()
	if n != 1 {
		t.Errorf("%d convergence observations after the second version's ACK; want 1", n)
	}
	if limit := time.Since(t0).Seconds(); sum <= 0 || sum > limit {
		t.Errorf("convergence measured %v s; want between 0 and %v s (the time since the Consul change)", sum, limit)
	}
}

// An Envoy whose group no policy defines has no config; one that rejected
// a type is not in sync on it even after accepting other responses.
func TestStatusNoConfigAndRejected(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.setConsul(webSnapshot(registry.Healthy))
	s.rebuild()
	cb := s.px.callbacks()
	_ = cb.OnStreamOpen(context.Background(), 1, "")
	if err := cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "lost-1", Cluster: "nosuchgroup"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	_ = cb.OnStreamOpen(context.Background(), 2, "")
	first := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType}
	if err := cb.OnStreamRequest(2, first); err != nil {
		t.Fatal(err)
	}
	gs, _ := s.pub.group("edge")
	served := gs.versions[resource.RouteType]
	cb.OnStreamResponse(context.Background(), 2, first, &discoveryv3.DiscoveryResponse{TypeUrl: resource.RouteType, VersionInfo: served, Nonce: "1"})
	if err := cb.OnStreamRequest(2, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResponseNonce: "1",
		ErrorDetail: &statuspb.Status{Message: "rejected"}}); err != nil {
		t.Fatal(err)
	}
	byNode := map[string]debugProxy{}
	for _, p := range s.px.list() {
		byNode[p.Node] = p
	}
	if p := byNode["lost-1"]; !p.NoConfig {
		t.Errorf("an Envoy of a group no policy defines: %+v; want noConfig", p)
	}
	if p := byNode["edge-1"]; p.NoConfig || p.Types[resource.RouteType].InSync || len(p.Behind) != 1 {
		t.Errorf("an Envoy that rejected its routes: %+v; want routes not in sync (behind)", p)
	}
}

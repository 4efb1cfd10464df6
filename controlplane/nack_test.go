package controlplane

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/switchyard-io/switchyard/registry"
)

func TestRejectedSources(t *testing.T) {
	listeners := map[string]string{
		"public":       "edge.yaml:5",
		"public-admin": "edge.yaml:20",
	}
	clusters := map[string]string{"web": "edge.yaml:12", "web-canary": "edge.yaml:14"}
	for _, tc := range []struct {
		name    string
		sources map[string]string
		detail  string
		want    string
	}{
		{"listener named", listeners,
			"Error adding/updating listener(s) public-admin: cannot bind '127.0.0.1:8443': Address already in use",
			"edge.yaml:20 (public-admin)"},
		{"a longer name does not match a shorter one", clusters,
			"cluster 'web-canary': bad config", "edge.yaml:14 (web-canary)"},
		{"a name ending a sentence", clusters, "cannot update cluster web.", "edge.yaml:12 (web)"},
		{"several named, sorted", listeners,
			"Error adding/updating listener(s) public: x, public-admin: y",
			"edge.yaml:20 (public-admin); edge.yaml:5 (public)"},
		{"none named among several", clusters, "something went wrong", ""},
		{"none named, the only resource", map[string]string{"public": "edge.yaml:5"},
			"Invalid regex: too large", "edge.yaml:5 (public)"},
		{"nothing known", nil, "listener public: bad", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rejectedSources(tc.sources, tc.detail); got != tc.want {
				t.Errorf("rejectedSources(%q) = %q; want %q", tc.detail, got, tc.want)
			}
		})
	}
}

// A NACK stays visible, in /debug/proxies and the rejecting gauge, until
// Envoy accepts a later response of that type; a closed stream leaves.
func TestRejectionsShownUntilAccepted(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	// A delta Envoy sends its node on the first request only.
	if err := cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if err := cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.ListenerType, ResponseNonce: "1",
		ErrorDetail: &statuspb.Status{Message: "Error adding/updating listener(s) https: cannot bind"},
	}); err != nil {
		t.Fatal(err)
	}
	proxies := func() []debugProxy {
		t.Helper()
		rec := adminGet(s, "/debug/proxies")
		var out struct{ Proxies []debugProxy }
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("/debug/proxies: %v\n%s", err, rec.Body)
		}
		return out.Proxies
	}
	got := proxies()
	if len(got) != 1 || got[0].Node != "edge-1" || got[0].Group != "edge" || got[0].Protocol != "delta" ||
		!got[0].Rejecting || len(got[0].Rejected) != 1 {
		t.Fatalf("after a NACK: got %+v; want edge-1 (delta) rejecting one type", got)
	}
	r := got[0].Rejected[0]
	if r.Type != "Listener" || !strings.Contains(r.Error, "cannot bind") || !strings.HasSuffix(r.Policy, "edge.yaml:5 (https)") {
		t.Errorf("rejection %+v; want the Listener, Envoy's reason and edge.yaml:5 (https)", r)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 1 {
		t.Errorf("rejecting gauge %v; want 1", n)
	}
	if !strings.Contains(logs.String(), "node=edge-1 group=edge") {
		t.Errorf("the NACK line lacks the node and group of a delta stream:\n%s", logs.String())
	}

	// An ACK of another type changes nothing; of the rejected type, clears it.
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "2"})
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 1 {
		t.Errorf("after a Cluster ACK: rejecting gauge %v; want 1", n)
	}
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: "3"})
	if got := proxies(); len(got) != 1 || got[0].Rejecting || len(got[0].Rejected) != 0 {
		t.Errorf("after a Listener ACK: got %+v; want no rejection", got)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 0 {
		t.Errorf("after a Listener ACK: rejecting gauge %v; want 0", n)
	}

	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.ListenerType, ResponseNonce: "4", ErrorDetail: &statuspb.Status{Message: "again"}})
	cb.OnDeltaStreamClosed(3, node)
	if got := proxies(); len(got) != 0 {
		t.Errorf("after the stream closed: got %+v; want none", got)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 0 {
		t.Errorf("after the stream closed: rejecting gauge %v; want 0", n)
	}
}

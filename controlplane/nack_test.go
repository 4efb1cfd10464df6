package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/envoy"
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

// proxiesOf reads /debug/proxies.
func proxiesOf(t *testing.T, s *Server) []debugProxy {
	t.Helper()
	rec := adminGet(s, "/debug/proxies")
	var out struct{ Proxies []debugProxy }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("/debug/proxies: %v\n%s", err, rec.Body)
	}
	return out.Proxies
}

// deltaListeners is a delta response carrying listeners (by name).
func deltaListeners(nonce string, names ...string) *discoveryv3.DeltaDiscoveryResponse {
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.ListenerType, Nonce: nonce}
	for _, n := range names {
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: n})
	}
	return resp
}

// A delta NACK stays visible, in /debug/proxies and the rejecting gauge,
// until Envoy accepts a later response that carries the rejected resource
// again; accepting other resources, or other types, does not end it. A
// closed stream leaves.
func TestDeltaRejectionShownUntilTheResourceIsAccepted(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	// A delta Envoy sends its node on the first request only.
	if err := cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	cb.OnStreamDeltaResponse(3, nil, deltaListeners("1", "https", "other"))
	if err := cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.ListenerType, ResponseNonce: "1",
		ErrorDetail: &statuspb.Status{Message: "Error adding/updating listener(s) https: cannot bind"},
	}); err != nil {
		t.Fatal(err)
	}
	got := proxiesOf(t, s)
	if len(got) != 1 || got[0].Node != "edge-1" || got[0].Group != "edge" || got[0].Protocol != "delta" ||
		!got[0].Rejecting || len(got[0].Rejected) != 1 {
		t.Fatalf("after a NACK: got %+v; want edge-1 (delta) rejecting one type", got)
	}
	r := got[0].Rejected[0]
	if r.Type != "Listener" || !strings.Contains(r.Error, "cannot bind") || !strings.HasSuffix(r.Policy, "edge.yaml:5 (https)") ||
		!slices.Equal(r.Resources, []string{"https"}) {
		t.Errorf("rejection %+v; want the Listener https, Envoy's reason and edge.yaml:5 (https)", r)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 1 {
		t.Errorf("rejecting gauge %v; want 1", n)
	}
	if !strings.Contains(logs.String(), "node=edge-1 group=edge") {
		t.Errorf("the NACK line lacks the node and group of a delta stream:\n%s", logs.String())
	}

	stillRejecting := func(when string) {
		t.Helper()
		if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 1 {
			t.Errorf("%s: rejecting gauge %v; want 1", when, n)
		}
	}
	// Another type accepted; another listener accepted: https still rejected.
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: "2"})
	stillRejecting("after a Cluster ACK")
	cb.OnStreamDeltaResponse(3, nil, deltaListeners("3", "other"))
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: "3"})
	stillRejecting("after an ACK of listener other alone")

	// https sent again and accepted: done.
	cb.OnStreamDeltaResponse(3, nil, deltaListeners("4", "https"))
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: "4"})
	if got := proxiesOf(t, s); len(got) != 1 || got[0].Rejecting || len(got[0].Rejected) != 0 {
		t.Errorf("after https was accepted: got %+v; want no rejection", got)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 0 {
		t.Errorf("after https was accepted: rejecting gauge %v; want 0", n)
	}
	// Answered responses are forgotten: the stream keeps no names of them.
	s.px.mu.Lock()
	kept := len(s.px.streams[streamKey{true, 3}].deltaSent[resource.ListenerType])
	s.px.mu.Unlock()
	if kept != 0 {
		t.Errorf("after every listener response was answered: %d kept; want 0", kept)
	}

	cb.OnStreamDeltaResponse(3, nil, deltaListeners("5", "https"))
	_ = cb.OnStreamDeltaRequest(3, &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resource.ListenerType, ResponseNonce: "5", ErrorDetail: &statuspb.Status{Message: "again"}})
	cb.OnDeltaStreamClosed(3, node)
	if got := proxiesOf(t, s); len(got) != 0 {
		t.Errorf("after the stream closed: got %+v; want none", got)
	}
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 0 {
		t.Errorf("after the stream closed: rejecting gauge %v; want 0", n)
	}
}

// On state of the world a NACK ends when Envoy accepts a later response
// (the type's whole config); a request that still names the rejected
// response, as when Envoy changes subscriptions after the NACK, does not
// end it.
func TestSotWRejectionShownUntilALaterResponseIsAccepted(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	first := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType}
	_ = cb.OnStreamRequest(9, first)
	cb.OnStreamResponse(context.Background(), 9, first, &discoveryv3.DiscoveryResponse{TypeUrl: resource.RouteType, VersionInfo: "v2", Nonce: "5"})
	_ = cb.OnStreamRequest(9, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, VersionInfo: "v1", ResponseNonce: "5",
		ErrorDetail: &statuspb.Status{Message: "bad route"}})
	_ = cb.OnStreamRequest(9, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, VersionInfo: "v1", ResponseNonce: "5",
		ResourceNames: []string{"http", "admin"}})
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 1 {
		t.Errorf("after a subscription change naming the rejected response: rejecting gauge %v; want 1", n)
	}
	cb.OnStreamResponse(context.Background(), 9, first, &discoveryv3.DiscoveryResponse{TypeUrl: resource.RouteType, VersionInfo: "v3", Nonce: "6"})
	_ = cb.OnStreamRequest(9, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, VersionInfo: "v3", ResponseNonce: "6"})
	if n := testutil.ToFloat64(s.metrics.rejectingProxies); n != 0 {
		t.Errorf("after v3 was accepted: rejecting gauge %v; want 0", n)
	}
}

// A NACK flood cannot grow Switchyard: a request for a made-up type URL
// is refused before it becomes stream state or a metric label, and a huge
// error text is cut before it is stored, logged or scanned for policy
// names.
func TestNACKFloodIsBounded(t *testing.T) {
	var logs bytes.Buffer
	s, _ := newTestServer(t, &logs)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	cb := s.px.callbacks()
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	for i := range 50 {
		err := cb.OnStreamRequest(int64(100+i), &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: "type.example/made.up." + strings.Repeat("x", i),
			ResponseNonce: "1", ErrorDetail: &statuspb.Status{Message: "no"}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("request for a made-up type: %v; want InvalidArgument", err)
		}
	}
	if n := testutil.CollectAndCount(s.metrics.nacks); n != len(envoy.Types) {
		t.Errorf("nack series = %d after 50 made-up type URLs; want only the %d served types' (made at start)", n, len(envoy.Types))
	}
	if got := testutil.ToFloat64(s.metrics.refusedStreams.WithLabelValues("type")); got != 50 {
		t.Errorf(`switchyard_xds_refused_streams_total{reason="type"} = %v; want 50`, got)
	}
	if got := proxiesOf(t, s); len(got) != 0 {
		t.Errorf("made-up types are stream state: %+v; want none", got)
	}

	_ = cb.OnStreamRequest(4, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType})
	huge := "listener https: " + strings.Repeat("é", 2<<20) // 4 MiB
	_ = cb.OnStreamRequest(4, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType,
		ResponseNonce: "2", ErrorDetail: &statuspb.Status{Message: huge}})
	got := proxiesOf(t, s)
	if len(got) != 1 || len(got[0].Rejected) != 1 {
		t.Fatalf("after a big NACK: %+v; want one rejection", got)
	}
	r := got[0].Rejected[0]
	if len(r.Error) > maxNACKDetail+64 || !strings.Contains(r.Error, "bytes cut]") || !utf8.ValidString(r.Error) {
		t.Errorf("stored error is %d bytes (valid UTF-8: %v); want at most %d and marked as cut", len(r.Error), utf8.ValidString(r.Error), maxNACKDetail+64)
	}
	if !strings.HasSuffix(r.Policy, "(https)") {
		t.Errorf("policy %q; want the https listener's line (the name is in the kept part)", r.Policy)
	}
	if logs.Len() > 64<<10 {
		t.Errorf("log grew by %d bytes for one NACK; want the error cut", logs.Len())
	}
}

func TestTypeLabel(t *testing.T) {
	for in, want := range map[string]string{
		resource.ClusterType:  "Cluster",
		resource.EndpointType: "ClusterLoadAssignment",
		resource.ListenerType: "Listener",
		resource.RouteType:    "RouteConfiguration",
		resource.SecretType:   "Secret",
		"":                    "other",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster.evil": "other",
	} {
		if got := typeLabel(in); got != want {
			t.Errorf("typeLabel(%q) = %q; want %q", in, got, want)
		}
	}
}

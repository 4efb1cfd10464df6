package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The status table shows each Envoy's state and sums them per group.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var rejecting proxyStatus
	rejecting.Group, rejecting.Node, rejecting.Protocol, rejecting.Since, rejecting.Rejecting = "edge", "edge-3", "sotw", now.Add(-time.Minute), true
	rejecting.Rejected = append(rejecting.Rejected, struct {
		Type   string `json:"type"`
		Error  string `json:"error"`
		Policy string `json:"policy"`
	}{Type: "Listener", Error: "invalid\n  regex", Policy: "edge.yaml:12"})
	var b bytes.Buffer
	printStatus(&b, []proxyStatus{
		{Group: "edge", Node: "edge-1", Protocol: "delta", EnvoyVersion: "1.40.0", Since: now.Add(-90 * time.Second)},
		{Group: "edge", Node: "edge-2", Protocol: "delta", Since: now.Add(-5 * time.Second), Behind: []string{"ClusterLoadAssignment"}},
		rejecting,
		{Group: "sidecar.mesh", Node: "web-1-sidecar-proxy", Protocol: "delta", EnvoyVersion: "1.39.3", Since: now.Add(-time.Hour)},
		{Group: "typo", Node: "edge-9", Protocol: "delta", Since: now.Add(-time.Second), NoConfig: true},
	}, now)
	out := b.String()
	for _, want := range []string{
		"GROUP         NODE                 PROTOCOL  ENVOY   CONNECTED  STATE",
		"edge          edge-1               delta     1.40.0  1m30s      in sync",
		"edge          edge-2               delta     -       5s         behind: ClusterLoadAssignment",
		"edge          edge-3               sotw      -       1m0s       rejecting Listener: invalid regex (edge.yaml:12)",
		"sidecar.mesh  web-1-sidecar-proxy  delta     1.39.3  1h0m0s     in sync",
		"typo          edge-9               delta     -       1s         no config",
		"edge: 3 connected, 1 in sync, 1 behind, 1 rejecting, 0 without config",
		"sidecar.mesh: 1 connected, 1 in sync, 0 behind, 0 rejecting, 0 without config",
		"typo: 1 connected, 0 in sync, 0 behind, 0 rejecting, 1 without config",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	printStatus(&b, nil, now)
	if b.String() != "no Envoy is connected\n" {
		t.Errorf("no proxies: %q", b.String())
	}
}

// status names the address it could not reach.
func TestStatusUnreachable(t *testing.T) {
	_, _, err := run(t, "status", "--admin-address", "127.0.0.1:1", "--timeout", "2s")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("got %v; want an error naming the admin address", err)
	}
}

package controlplane

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// twoGroups is two proxy groups routing to web.
const twoGroups = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: web
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: other
listeners:
  - name: http
    port: 8081
    hosts:
      - domains: [other.example.com]
        routes:
          - service: web
`

func loadTwoGroups(t *testing.T) *policy.Set {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "groups.yaml"), []byte(twoGroups), 0o600); err != nil {
		t.Fatal(err)
	}
	set, diags := policy.Load(dir)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	return set
}

// TestUnbuildableGroupDoesNotFreezeOthers: a group whose config Envoy's
// schema refuses (here a domain with a newline, put in behind the
// validator's back, as a translation bug would) keeps its last good
// snapshot, is logged and counted, and every other group still follows
// Consul.
func TestUnbuildableGroupDoesNotFreezeOthers(t *testing.T) {
	var logs bytes.Buffer
	s, err := New(Config{PolicyPaths: []string{t.TempDir()}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.in.policy = loadTwoGroups(t)
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	if s.pub.groups["edge"] == nil || s.pub.groups["other"] == nil {
		t.Fatalf("groups built: %v; want edge and other", s.pub.groups)
	}
	otherBefore := s.pub.groups["other"].versions
	edgeBefore := s.pub.groups["edge"].versions

	bad := loadTwoGroups(t)
	g := &bad.Groups[1]
	if g.Name != "other" {
		t.Fatalf("group 1 is %q; want other", g.Name)
	}
	g.Listeners[0].Hosts[0].Domains = []string{"other.example.com\nx"}
	s.in.policy = bad
	s.in.consul = webSnapshot(registry.Unhealthy)
	s.rebuild()

	if got := s.pub.groups["edge"].versions[resource.EndpointType]; got == edgeBefore[resource.EndpointType] {
		t.Errorf("edge's endpoints version did not change after a health flip while group other fails to build")
	}
	for typ, v := range otherBefore {
		if got := s.pub.groups["other"].versions[typ]; got != v {
			t.Errorf("other's %s version = %s; want its last good %s", typ, got, v)
		}
	}
	if _, snapErr := s.cache.GetSnapshot("other"); snapErr != nil {
		t.Errorf("other's last good snapshot is gone from the cache: %v", snapErr)
	}
	if got := testutil.ToFloat64(s.metrics.failingGroups); got != 1 {
		t.Errorf("switchyard_failing_groups = %v; want 1", got)
	}
	if got := testutil.ToFloat64(s.metrics.snapshotErrors); got != 1 {
		t.Errorf("switchyard_snapshot_errors_total = %v; want 1", got)
	}
	if !strings.Contains(logs.String(), "proxy group failed to build") || !strings.Contains(logs.String(), "group=other") {
		t.Errorf("log does not name the failing group:\n%s", logs.String())
	}
	if !s.pub.ready {
		t.Error("not ready; want ready (edge builds)")
	}

	// Fixed: the group builds again and says so.
	s.in.policy = loadTwoGroups(t)
	s.rebuild()
	if got := testutil.ToFloat64(s.metrics.failingGroups); got != 0 {
		t.Errorf("switchyard_failing_groups = %v after the fix; want 0", got)
	}
	if !strings.Contains(logs.String(), "proxy group builds again") {
		t.Errorf("log does not say the group builds again:\n%s", logs.String())
	}
}

// When every group fails its first build, Switchyard is not ready and
// /readyz says which groups and why to look at the log.
func TestEveryGroupFailingIsNotReady(t *testing.T) {
	s, err := New(Config{PolicyPaths: []string{t.TempDir()}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	bad := loadTwoGroups(t)
	for i := range bad.Groups {
		bad.Groups[i].Listeners[0].Hosts[0].Domains = []string{"x\r"}
	}
	s.in.policy = bad
	s.in.consul = webSnapshot(registry.Healthy)
	s.rebuild()
	rec := adminGet(s, "/readyz")
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "failed to build") || !strings.Contains(rec.Body.String(), "edge, other") {
		t.Errorf("/readyz: %d %q; want 503 naming edge and other", rec.Code, rec.Body.String())
	}
}

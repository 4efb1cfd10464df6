package controlplane

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// stateWorld is a policy directory and a state directory shared by the
// successive lives of a Switchyard (newServer), fed directly as
// newTestServer's are.
type stateWorld struct {
	t                   *testing.T
	policyDir, stateDir string
	keyPEM              string
}

func newStateWorld(t *testing.T) *stateWorld {
	w := &stateWorld{t: t, policyDir: t.TempDir(), stateDir: t.TempDir()}
	w.keyPEM = writeCert(t, w.policyDir)
	w.write("edge.yaml", edgePolicy)
	w.write("other.yaml", otherPolicy)
	return w
}

func (w *stateWorld) write(name, content string) {
	w.t.Helper()
	if err := os.WriteFile(filepath.Join(w.policyDir, name), []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// newServer starts a life: a server on the world's state directory, with
// Consul's view set and the saved policy restored, as Run does.
func (w *stateWorld) newServer(logs *bytes.Buffer, linger time.Duration) *Server {
	w.t.Helper()
	s, err := New(Config{PolicyPaths: []string{w.policyDir}, StateDir: w.stateDir, Linger: linger}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		w.t.Fatal(err)
	}
	s.in.consul = webSnapshot(registry.Healthy)
	s.restorePolicy()
	return s
}

// load reads the policy as the watcher does and makes it the served one.
func (w *stateWorld) load(s *Server) *policy.Set {
	w.t.Helper()
	set, diags := policy.LoadWith(s.policyOptions(), w.policyDir)
	if diags.HasErrors() {
		w.t.Fatal(diags.Err())
	}
	if err := s.keeper.capture([]string{w.policyDir}, set); err != nil {
		w.t.Fatal(err)
	}
	s.in.policy = set
	s.rebuild()
	flushKeeper(w.t, s.keeper)
	return set
}

// flushKeeper writes the copy the keeper has queued, as its run loop does.
func flushKeeper(t *testing.T, k *policyKeeper) {
	t.Helper()
	select {
	case b := <-k.next:
		if err := writeState(k.path, b); err != nil {
			t.Fatal(err)
		}
	default:
	}
}

// savedGroups lists the groups in the saved policy, and checks what the
// file must never hold: a certificate's or key's bytes.
func (w *stateWorld) savedGroups(keyPEM string) []string {
	w.t.Helper()
	path := filepath.Join(w.stateDir, policyStateFile)
	b, err := os.ReadFile(path)
	if err != nil {
		w.t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		w.t.Errorf("saved policy mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}
	var saved savedPolicy
	if err := json.Unmarshal(b, &saved); err != nil {
		w.t.Fatal(err)
	}
	var groups []string
	for _, set := range saved.Sets {
		groups = append(groups, set.Groups...)
		for name, content := range set.Files {
			if !strings.HasSuffix(name, ".yaml") || bytes.Contains(content, []byte("PRIVATE KEY")) || bytes.Contains(content, []byte(strings.TrimSpace(keyPEM))) {
				w.t.Errorf("saved policy holds %s:\n%s\nwant policy files only, no key", name, content)
			}
		}
	}
	return groups
}

func listenerRequest(s *Server, id int64, node *corev3.Node) error {
	return s.px.callbacks().OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType})
}

// A group removed from the policy while an Envoy uses it survives a
// restart with state.dir: the next life serves it again from the saved
// policy (its certificate read again from its files), until its Envoys
// leave; a group the policy still defines takes the policy's definition;
// and a life that no Envoy of the removed group comes back to withdraws
// it after the linger, with the usual log line.
func TestRemovedGroupSurvivesRestart(t *testing.T) {
	w := newStateWorld(t)
	edge := &corev3.Node{Id: "edge-1", Cluster: "edge"}

	// Life 1: edge's Envoy connects; edge.yaml is removed.
	var logs1 bytes.Buffer
	s1 := w.newServer(&logs1, time.Hour)
	if strings.Contains(logs1.String(), "state.dir") {
		t.Errorf("life 1, nothing saved yet: the log speaks of state.dir:\n%s", logs1.String())
	}
	w.load(s1)
	if err := listenerRequest(s1, 1, edge); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.policyDir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	w.load(s1)
	if s1.pub.groups["edge"] == nil {
		t.Fatalf("life 1: groups %v; want edge retained for its Envoy", groupNames(s1))
	}
	if got := w.savedGroups(w.keyPEM); strings.Join(got, ",") != "edge,other" {
		t.Fatalf("saved groups %v; want edge (retained) and other", got)
	}
	before := s1.pub.groups["edge"].versions

	// Life 2: other changed meanwhile; edge's Envoy reconnects.
	w.write("other.yaml", strings.Replace(otherPolicy, "port: 8080", "port: 9090", 1))
	var logs2 bytes.Buffer
	s2 := w.newServer(&logs2, time.Hour)
	if err := listenerRequest(s2, 1, edge); err != nil { // before the first build: no snapshot yet
		t.Fatal(err)
	}
	w.load(s2)
	gs := s2.pub.groups["edge"]
	if gs == nil {
		t.Fatalf("life 2: groups %v; want edge served again from state.dir\n%s", groupNames(s2), logs2.String())
	}
	for typ, v := range before {
		if gs.versions[typ] != v {
			t.Errorf("life 2: edge's %s version %s; want %s, as before the restart", typ, gs.versions[typ], v)
		}
	}
	if !strings.Contains(logs2.String(), "removed from policy before the restart is served again from state.dir") {
		t.Errorf("life 2: no warning that edge is served from state.dir:\n%s", logs2.String())
	}
	if strings.Contains(logs2.String(), w.keyPEM[:40]) {
		t.Error("life 2: the log holds the private key")
	}
	other, _ := s2.pub.served().Group("other")
	if port := other.Listeners[0].Port; port != 9090 {
		t.Errorf("life 2: other's port %d; want 9090, the policy's (not the saved copy's 8080)", port)
	}
	// Its Envoy leaves: withdrawn after the linger.
	s2.px.callbacks().OnStreamClosed(1, edge)
	s2.px.linger = 0
	s2.rebuild()
	if s2.pub.groups["edge"] != nil {
		t.Errorf("life 2: groups %v after edge's Envoy left; want edge withdrawn", groupNames(s2))
	}
	// Not kept for the next life either.
	flushKeeper(t, s2.keeper)
	if got := w.savedGroups(w.keyPEM); strings.Join(got, ",") != "other" {
		t.Errorf("life 2: saved groups %v; want other only", got)
	}
}

// A restart that no Envoy of a removed group comes back to serves the
// group for the linger, then withdraws it with the usual log line.
func TestRestoredGroupWithdrawnAfterLinger(t *testing.T) {
	w := newStateWorld(t)
	var logs1 bytes.Buffer
	s1 := w.newServer(&logs1, time.Hour)
	w.load(s1)
	if err := listenerRequest(s1, 1, &corev3.Node{Id: "edge-1", Cluster: "edge"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.policyDir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	w.load(s1)

	var logs2 bytes.Buffer
	s2 := w.newServer(&logs2, time.Hour)
	w.load(s2)
	if s2.pub.groups["edge"] == nil {
		t.Fatalf("groups %v at the start; want edge served for the linger", groupNames(s2))
	}
	s2.px.linger = 0 // the linger passes with no Envoy of edge
	s2.rebuild()
	if s2.pub.groups["edge"] != nil {
		t.Errorf("groups %v after the linger; want edge withdrawn", groupNames(s2))
	}
	if _, err := s2.cache.GetSnapshot("edge"); err == nil {
		t.Error("edge's snapshot is still in the cache")
	}
	if !strings.Contains(logs2.String(), "no Envoy uses it, so its config is withdrawn") {
		t.Errorf("no withdrawal logged:\n%s", logs2.String())
	}
}

// A saved policy that no longer loads (here: its certificate file is gone)
// is logged with its path and ignored; a corrupt file too. Neither stops
// the start.
func TestUnusableSavedPolicyIgnored(t *testing.T) {
	w := newStateWorld(t)
	var logs1 bytes.Buffer
	s1 := w.newServer(&logs1, time.Hour)
	w.load(s1)
	if err := listenerRequest(s1, 1, &corev3.Node{Id: "edge-1", Cluster: "edge"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.policyDir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	w.load(s1)
	if err := os.Remove(filepath.Join(w.policyDir, "shop.crt")); err != nil {
		t.Fatal(err)
	}

	var logs2 bytes.Buffer
	s2 := w.newServer(&logs2, time.Hour)
	path := filepath.Join(w.stateDir, policyStateFile)
	if !strings.Contains(logs2.String(), "no longer loads") || !strings.Contains(logs2.String(), path) {
		t.Errorf("no error naming %s:\n%s", path, logs2.String())
	}
	w.load(s2)
	if s2.pub.groups["edge"] != nil || s2.pub.groups["other"] == nil {
		t.Errorf("groups %v; want other only", groupNames(s2))
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs3 bytes.Buffer
	s3 := w.newServer(&logs3, time.Hour)
	if !strings.Contains(logs3.String(), "not usable") || !strings.Contains(logs3.String(), path) {
		t.Errorf("no error naming %s:\n%s", path, logs3.String())
	}
	w.load(s3)
	if s3.pub.groups["other"] == nil {
		t.Errorf("groups %v; want other", groupNames(s3))
	}
}

// Files that changed after the load are not kept for it: the copy saved
// is always of the very bytes served.
func TestKeeperRefusesFilesChangedSinceLoad(t *testing.T) {
	w := newStateWorld(t)
	k := newPolicyKeeper(w.stateDir, policy.Options{})
	set, diags := policy.Load(w.policyDir)
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	w.write("other.yaml", strings.Replace(otherPolicy, "port: 8080", "port: 9090", 1))
	if err := k.capture([]string{w.policyDir}, set); err != nil {
		t.Fatal(err)
	}
	if len(k.loaded) != 0 {
		t.Error("the keeper took files that changed since the load")
	}
}

// An Envoy of a restored group that connects and leaves before the first
// build does not cost the group its linger: it is served (restored) until
// that build decides.
func TestRestoredGroupKeepsLingerThroughEarlyDisconnect(t *testing.T) {
	w := newStateWorld(t)
	edge := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	var logs1 bytes.Buffer
	s1 := w.newServer(&logs1, time.Hour)
	w.load(s1)
	if err := listenerRequest(s1, 1, edge); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.policyDir, "edge.yaml")); err != nil {
		t.Fatal(err)
	}
	w.load(s1)

	var logs2 bytes.Buffer
	s2 := w.newServer(&logs2, time.Hour)
	if err := listenerRequest(s2, 1, edge); err != nil {
		t.Fatal(err)
	}
	s2.px.callbacks().OnStreamClosed(1, edge)
	w.load(s2)
	if s2.pub.groups["edge"] == nil {
		t.Errorf("groups %v; want edge served for the linger after its Envoy left\n%s", groupNames(s2), logs2.String())
	}
}

// The first promotion after a start waits for the services of the
// restored groups the new policy does not define, as it waits for the
// policy's own, so that a retained group does not start with no
// endpoints.
func TestFirstPromotionCoversRestoredGroups(t *testing.T) {
	parse := func(doc string) *policy.Set {
		t.Helper()
		set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(doc)})
		if diags.HasErrors() {
			t.Fatal(diags.Err())
		}
		return set
	}
	covering := func(names ...string) *registry.Snapshot {
		t.Helper()
		b, err := json.Marshal(map[string]any{"version": 1, "covers": names, "services": []any{}})
		if err != nil {
			t.Fatal(err)
		}
		snap, _, err := registry.LoadSnapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	toAPI := strings.Replace(strings.Replace(otherPolicy, "name: other", "name: gone", 1), "service: web", "service: api", 1)

	in := &inputs{}
	in.restoreCover(parse(toAPI))
	in.consul = covering("web")
	in.setPending(parse(otherPolicy))
	if _, _, promoted, _ := in.promote(); promoted {
		t.Error("promoted before Consul answered for api, which a restored group routes to")
	}
	in.consul = covering("web", "api")
	if _, _, promoted, _ := in.promote(); !promoted {
		t.Error("not promoted once every service is covered")
	}

	// A restored group the new policy defines takes the new definition:
	// its old services are not waited for.
	in = &inputs{}
	in.restoreCover(parse(strings.Replace(toAPI, "name: gone", "name: other", 1)))
	in.consul = covering("web")
	in.setPending(parse(otherPolicy))
	if _, _, promoted, _ := in.promote(); !promoted {
		t.Error("waited for the services of a restored group the new policy defines")
	}
}

package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// policyRun is a server whose policy watcher runs, without Consul.
type policyRun struct {
	s    *Server
	logs *testenv.SyncBuffer
}

// startPolicyWatch runs watchPolicy on paths until the test ends.
func startPolicyWatch(t *testing.T, paths ...string) *policyRun {
	t.Helper()
	r := &policyRun{logs: &testenv.SyncBuffer{}}
	s, err := New(Config{PolicyPaths: paths}, slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.watchPolicy(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// waitFor waits for cond with a bound generous enough for a loaded
// machine: the conditions here are events, not timings.
func (r *policyRun) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s; log:\n%s", what, r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// routes is the number of routes of group edge in the latest valid policy
// (-1 without one).
func (r *policyRun) routes() int {
	_, latest := r.s.in.policies()
	if latest == nil {
		return -1
	}
	g, ok := latest.Group("edge")
	if !ok {
		return -1
	}
	n := 0
	for _, l := range g.Listeners {
		for _, h := range l.Hosts {
			n += len(h.Routes)
		}
	}
	return n
}

func (r *policyRun) reloads(result string) float64 {
	return testutil.ToFloat64(r.s.metrics.policyReloads.WithLabelValues(result))
}

// policyHead and policyRoute make a group edge with numbered routes; a file
// cut after any route is itself a valid policy with fewer routes.
const policyHead = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
`

func policyRoutes(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "          - name: r%d\n            match: { pathPrefix: /r%d }\n            service: web\n", i, i)
	}
	return b.String()
}

// replaceFile writes path as tools should: a new file renamed over the old.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The periodic re-read parses the policy again only when fingerprint
// changes: it must change on every kind of edit, and only then.
func TestFingerprintSeesEveryEdit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("edge.yaml", "a: 1\n")
	dirs := []string{dir}
	last := fingerprint(dirs)
	if again := fingerprint(dirs); again != last {
		t.Fatalf("fingerprint changed without an edit:\n%s\n%s", last, again)
	}
	step := func(what string, edit func()) {
		t.Helper()
		edit()
		now := fingerprint(dirs)
		if now == last {
			t.Errorf("%s: fingerprint unchanged", what)
		}
		last = now
	}
	step("content of another size", func() { write("edge.yaml", "a: 12\n") })
	step("same size, new modification time", func() {
		write("edge.yaml", "a: 34\n")
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(filepath.Join(dir, "edge.yaml"), later, later); err != nil {
			t.Fatal(err)
		}
	})
	step("a new file", func() { write("more.yaml", "b: 1\n") })
	step("a removed file", func() {
		if err := os.Remove(filepath.Join(dir, "more.yaml")); err != nil {
			t.Fatal(err)
		}
	})
	step("a symlinked file edited where it lives", func() {
		elsewhere := t.TempDir()
		target := filepath.Join(elsewhere, "shared.yaml")
		if err := os.WriteFile(target, []byte("c: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(dir, "shared.yaml")); err != nil {
			t.Fatal(err)
		}
		last = fingerprint(dirs)
		if err := os.WriteFile(target, []byte("c: 12\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	step("a removed directory", func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	})
}

// A policy file rewritten in place is not applied half written, even when
// the half is a valid policy and the writer pauses for much longer than the
// settle time: the watcher waits while the file is open for writing.
func TestHalfWrittenPolicyIsNotApplied(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	replaceFile(t, path, policyHead+policyRoutes(1, 1))
	r := startPolicyWatch(t, dir)
	r.waitFor(t, "first policy loaded", func() bool { return r.routes() == 1 })
	loads := r.reloads("ok")

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(policyHead + policyRoutes(1, 2)); err != nil {
		t.Fatal(err)
	}
	// The writer pauses here. The watcher has seen the half, let it settle
	// (unchanged at two looks policySettle apart), and found its writer
	// still at work.
	r.waitFor(t, "the watcher waits for the writer", func() bool {
		return strings.Contains(r.logs.String(), "policy file is open for writing; waiting for its writer to close it")
	})
	if n := r.routes(); n != 1 {
		t.Fatalf("the half-written policy was applied: %d routes; want still 1", n)
	}
	if _, err := f.WriteString(policyRoutes(3, 4)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "the complete policy loaded", func() bool { return r.routes() == 4 })
	if got := r.reloads("ok") - loads; got != 1 {
		t.Errorf("%v policy loads for one rewrite; want 1 (the half must never be applied); log:\n%s", got, r.logs.String())
	}
	if got := r.reloads("error"); got != 0 {
		t.Errorf("%v policy errors; want 0; log:\n%s", got, r.logs.String())
	}
}

// A policy directory deleted and created again is watched again: edits in
// it are picked up by the watch, not by the periodic re-read (turned off
// here).
func TestRecreatedPolicyDirectoryIsWatched(t *testing.T) {
	defer func(d time.Duration) { policyResync = d }(policyResync)
	policyResync = time.Hour
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "edge.yaml")
	replaceFile(t, path, policyHead+policyRoutes(1, 1))
	r := startPolicyWatch(t, dir)
	r.waitFor(t, "first policy loaded", func() bool { return r.routes() == 1 })

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "the deletion rejected", func() bool { return r.reloads("error") >= 1 })
	if n := r.routes(); n != 1 {
		t.Fatalf("after the deletion the policy has %d routes; want the last good one's 1", n)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, path, policyHead+policyRoutes(1, 2))
	r.waitFor(t, "the recreated directory's policy loaded", func() bool { return r.routes() == 2 })
	for n := 3; n <= 4; n++ {
		replaceFile(t, path, policyHead+policyRoutes(1, n))
		r.waitFor(t, fmt.Sprintf("edit %d in the recreated directory loaded", n), func() bool { return r.routes() == n })
	}
}

// serve logs an empty policy with the very line validate prints
// (cmd/switchyard's TestValidateRefusesEmptyPolicy).
func TestEmptyPolicyLogLine(t *testing.T) {
	dir := t.TempDir()
	r := startPolicyWatch(t, dir)
	want := `msg="invalid policy" error="` + dir + `: no proxy group is defined; Switchyard will not serve an empty config"`
	r.waitFor(t, "the empty policy rejected", func() bool { return strings.Contains(r.logs.String(), want) })
	if _, latest := r.s.in.policies(); latest != nil {
		t.Errorf("an empty policy was accepted: %v", latest)
	}
}

// settled, the check before every reload, passes only when the files are
// unchanged since its previous look and no file is open for writing (or,
// where the kernel cannot tell, when they are unchanged).
func TestSettled(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	replaceFile(t, path, policyHead+policyRoutes(1, 1))
	s, err := New(Config{PolicyPaths: []string{dir}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w := &policyWatcher{s: s, paths: []string{dir}, dirs: []string{dir}}
	w.gatePrint = fingerprint(w.dirs)
	step := func(what string, want bool) {
		t.Helper()
		if got := w.settled(); got != want {
			t.Fatalf("%s: settled() = %v; want %v", what, got, want)
		}
	}
	step("files as last seen", true)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(policyRoutes(2, 2)); err != nil {
		t.Fatal(err)
	}
	step("a file grew since the last look", false)
	step("unchanged, but open for writing", false)
	step("still open for writing", false)
	if _, err := f.WriteString(policyRoutes(3, 3)); err != nil {
		t.Fatal(err)
	}
	step("grew again", false)
	w.leaseOff = true
	step("unchanged, and the kernel cannot tell about writers", true)
	w.leaseOff = false
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	step("closed", true)
}

// Reload (SIGHUP) re-reads the policy at once: an invalid policy's errors
// are reported again, and a valid unchanged one says so.
func TestReloadRereadsPolicy(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startPolicyWatch(t, dir)
	count := func(s string) int { return strings.Count(r.logs.String(), s) }
	r.waitFor(t, "the invalid policy reported", func() bool { return count("no valid policy yet") == 1 })
	r.s.Reload()
	r.waitFor(t, "the invalid policy reported again after Reload", func() bool { return count("no valid policy yet") == 2 })

	if err := os.WriteFile(file, []byte(strings.Replace(twoGroups, "name: other", "name: other2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "the valid policy loaded", func() bool { return count("policy loaded") == 1 })
	r.s.Reload()
	r.waitFor(t, "an unchanged policy re-read on Reload", func() bool { return count("policy re-read on request: unchanged") == 1 })
}

// A rejected policy that becomes valid again says so: "policy accepted",
// whether the fix changes the policy or reverts to the last valid one
// (which would otherwise log nothing).
func TestFixedPolicyIsAccepted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	replaceFile(t, path, policyHead+policyRoutes(1, 1))
	r := startPolicyWatch(t, dir)
	count := func(s string) int { return strings.Count(r.logs.String(), s) }
	r.waitFor(t, "the first policy loaded", func() bool { return r.routes() == 1 })
	if n := count("policy accepted"); n != 0 {
		t.Fatalf("%d \"policy accepted\" lines before any error:\n%s", n, r.logs.String())
	}

	typo := policyHead + "          - name: r1\n            match: { pathPrefx: /r1 }\n            service: web\n"
	replaceFile(t, path, typo)
	r.waitFor(t, "the typo rejected", func() bool { return count("invalid policy") == 1 })
	replaceFile(t, path, policyHead+policyRoutes(1, 1)) // reverted to the last valid policy
	r.waitFor(t, "the revert accepted", func() bool {
		return count("policy accepted: the errors are fixed; unchanged from the last valid policy") == 1
	})

	replaceFile(t, path, typo)
	r.waitFor(t, "the typo rejected again", func() bool { return count("invalid policy") == 2 })
	replaceFile(t, path, policyHead+policyRoutes(1, 2)) // fixed, and a route more
	r.waitFor(t, "the fix accepted and applied", func() bool {
		return count("policy accepted: the errors are fixed; policy") == 1 && r.routes() == 2
	})
}

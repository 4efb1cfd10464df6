package registry

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"
)

func src(name string, action consulapi.IntentionAction) *consulapi.SourceIntention {
	return &consulapi.SourceIntention{Name: name, Action: action, Type: consulapi.IntentionSourceConsul}
}

func l7(name string, perms ...*consulapi.IntentionPermission) *consulapi.SourceIntention {
	return &consulapi.SourceIntention{Name: name, Permissions: perms, Type: consulapi.IntentionSourceConsul}
}

// intentionsOfSnap is Intentions(dest) on one line ("absent" without any).
func intentionsOfSnap(s *MeshSnapshot, dest string) string {
	in, ok := s.Intentions(dest)
	if !ok {
		return "absent"
	}
	return in.String()
}

func TestMeshIntentionsWatched(t *testing.T) {
	f, _ := meshFake(t)
	f.SetIntentions("api", src("web", consulapi.IntentionActionDeny), src("*", consulapi.IntentionActionAllow))
	h := startMesh(t, f, nil)
	s := h.next()

	want := Intentions{Destination: "api", Sources: []IntentionSource{
		{Name: "web", Action: "deny", Precedence: 9},
		{Name: "*", Action: "allow", Precedence: 8},
	}}
	got, ok := s.Intentions("api")
	if diff := cmp.Diff(want, got); !ok || diff != "" {
		t.Errorf("api's intentions (present %t) (-want +got):\n%s", ok, diff)
	}
	if _, ok := s.Intentions("web"); ok {
		t.Errorf("web has intentions; none were written for it")
	}
	if d := s.IntentionDefault(); d != IntentionAllow {
		t.Errorf("IntentionDefault %q; want allow (the fake's ACLs are off, as on a dev agent)", d)
	}
	if names := s.IntentionNames(); !slices.Equal(names, []string{"api"}) {
		t.Errorf("IntentionNames %v", names)
	}

	// One blocking query for every entry: unrelated writes and waits do not
	// republish, and the query is not repeated in a loop.
	f.ResetRequests()
	h.none(300 * time.Millisecond)
	if n := f.Requests("/v1/config/service-intentions"); n > 4 {
		t.Errorf("%d intentions queries in 300 ms with a 200 ms wait; want a blocking query, not a poll", n)
	}

	// An L7 intention: permissions kept in order.
	f.SetIntentions("api", l7("web",
		&consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{
			PathPrefix: "/public", Methods: []string{"GET"},
			Header: []consulapi.IntentionHTTPHeaderPermission{{Name: "x-debug", Present: true, Invert: true}},
		}},
		&consulapi.IntentionPermission{Action: consulapi.IntentionActionDeny, HTTP: &consulapi.IntentionHTTPPermission{PathRegex: "/admin/.*"}},
		&consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow},
	))
	s = h.until("L7 intentions", func(s *MeshSnapshot) error {
		if in, _ := s.Intentions("api"); len(in.Sources) != 1 || len(in.Sources[0].Permissions) != 3 {
			return errors.New(intentionsOfSnap(s, "api"))
		}
		return nil
	})
	in, _ := s.Intentions("api")
	wantSrc := IntentionSource{Name: "web", Precedence: 9, Permissions: []IntentionPermission{
		{Action: "allow", HTTP: &IntentionHTTP{PathPrefix: "/public", Methods: []string{"GET"}, Header: []IntentionHeader{{Name: "x-debug", Present: true, Invert: true}}}},
		{Action: "deny", HTTP: &IntentionHTTP{PathRegex: "/admin/.*"}},
		{Action: "allow"},
	}}
	if diff := cmp.Diff(wantSrc, in.Sources[0]); diff != "" {
		t.Errorf("web's L7 intention (-want +got):\n%s", diff)
	}

	// Deleted: gone from the next snapshot, and not a fail-static case.
	f.DeleteIntentions("api")
	h.until("api's intentions deleted", func(s *MeshSnapshot) error {
		if got := intentionsOfSnap(s, "api"); got != "absent" {
			return errors.New(got)
		}
		return nil
	})
	if _, fs, _ := h.recorded(); len(fs) != 0 {
		t.Errorf("FailStatic for a real deletion: %v", fs)
	}
}

// TestMeshIntentionsWildcardDestination: an entry named "*" applies to
// every destination below the destination's own intentions, as Consul's
// precedence says (web->api 9, *->api 8, web->* 6, *->* 5).
func TestMeshIntentionsWildcardDestination(t *testing.T) {
	conv := func(name string, sources ...*consulapi.SourceIntention) *Intentions {
		in, ok := intentionsOf(&consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: name, Sources: sources})
		if !ok {
			t.Fatalf("%s: %v", name, in.Problems)
		}
		return in
	}
	wild := conv("*", src("web", consulapi.IntentionActionAllow), src("*", consulapi.IntentionActionDeny), src("billing", consulapi.IntentionActionAllow))
	s := &MeshSnapshot{intentions: map[string]*Intentions{
		"*":   wild,
		"api": conv("api", src("billing", consulapi.IntentionActionDeny)),
		"pay": conv("pay", src("*", consulapi.IntentionActionAllow), src("web", consulapi.IntentionActionDeny)),
	}}
	for _, c := range []struct{ dest, want string }{
		// billing's own rule for api wins over the "*" entry's; web and
		// everyone else come from the "*" entry.
		{"api", "api: billing=deny(9) web=allow(6) *=deny(5)"},
		// pay's "*" source (8) matches every caller before any rule of the
		// "*" entry (6, 5): those do not apply to pay.
		{"pay", "pay: web=deny(9) *=allow(8)"},
		// No entry of its own: the "*" entry.
		{"web", "web: billing=allow(6) web=allow(6) *=deny(5)"},
		{"*", "*: billing=allow(6) web=allow(6) *=deny(5)"},
	} {
		if got := intentionsOfSnap(s, c.dest); got != c.want {
			t.Errorf("Intentions(%s) = %s;\nwant %s", c.dest, got, c.want)
		}
	}
	// Merging never modifies what the snapshot holds.
	if got := wild.String(); got != "*: billing=allow(6) web=allow(6) *=deny(5)" {
		t.Errorf("the \"*\" entry changed: %s", got)
	}
	if _, ok := (&MeshSnapshot{}).Intentions("api"); ok {
		t.Errorf("intentions without any entry")
	}
}

func TestMeshIntentionDefault(t *testing.T) {
	for _, c := range []struct {
		name                  string
		acls                  bool
		policy, header, raw   string
		status                int
		want                  string
		wantLog               string
		wantWarn, wantWatchEr bool
	}{
		{name: "acls off", policy: "deny", header: "deny", want: "allow", wantLog: "ACLs are disabled"},
		{name: "acls on, default deny", acls: true, policy: "deny", header: "deny", want: "deny", wantLog: "acl.default_policy"},
		{name: "acls on, default allow", acls: true, policy: "allow", header: "allow", want: "allow", wantLog: "acl.default_policy"},
		{name: "no agent:read, header deny", status: http.StatusForbidden, header: "deny", want: "deny", wantLog: "X-Consul-Default-ACL-Policy header"},
		{name: "no agent:read, header allow", status: http.StatusForbidden, header: "allow", want: "allow", wantLog: "X-Consul-Default-ACL-Policy header"},
		{name: "no agent:read, no header", status: http.StatusForbidden, want: "deny", wantLog: "sent no X-Consul-Default-ACL-Policy", wantWarn: true},
		{name: "not found", status: http.StatusNotFound, header: "allow", want: "deny", wantLog: "answered HTTP 404", wantWarn: true},
		{name: "not json", raw: "<html>", header: "allow", want: "deny", wantLog: "not the JSON", wantWarn: true},
		{name: "no debug config", raw: `{"Config":{}}`, header: "allow", want: "deny", wantLog: "no DebugConfig", wantWarn: true},
		{name: "odd policy", acls: true, policy: "extend-cache", header: "allow", want: "deny", wantLog: `extend-cache`, wantWarn: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, _ := meshFake(t)
			f.SetACLs(c.acls, c.policy, c.header, c.status)
			f.SetSelfRaw(c.raw)
			h := startMesh(t, f, nil)
			if got := h.next().IntentionDefault(); got != c.want {
				t.Errorf("IntentionDefault %q; want %q", got, c.want)
			}
			// Another snapshot: the default is not logged again.
			f.SetIntentions("api", src("web", consulapi.IntentionActionDeny))
			h.until("intentions", func(s *MeshSnapshot) error {
				if got := intentionsOfSnap(s, "api"); got != "api: web=deny(9)" {
					return errors.New(got)
				}
				return nil
			})
			logs := h.logs.String()
			if n := strings.Count(logs, "intention default"); n != 1 {
				t.Errorf("the intention default was logged %d times; want once:\n%s", n, logs)
			}
			line := logs[strings.Index(logs, "intention default"):]
			line = line[:strings.IndexByte(line, '\n')]
			if !strings.Contains(line, c.wantLog) {
				t.Errorf("the log says %q; want it to say why (%q)", line, c.wantLog)
			}
			if warned := strings.Contains(logs, "level=WARN msg=\"intention default"); warned != c.wantWarn {
				t.Errorf("logged as a warning: %t; want %t", warned, c.wantWarn)
			}
		})
	}
}

// TestMeshIntentionDefaultWaitsForConsul: while /v1/agent/self cannot be
// reached nothing is published (the default is not guessed), and the
// failures are reported.
func TestMeshIntentionDefaultWaitsForConsul(t *testing.T) {
	f, _ := meshFake(t)
	release := f.Stall("/v1/agent/self")
	h := startMesh(t, f, nil)
	h.none(300 * time.Millisecond)
	release()
	if got := h.next().IntentionDefault(); got != IntentionAllow {
		t.Errorf("IntentionDefault %q; want allow", got)
	}
}

func TestMeshIntentionsOddData(t *testing.T) {
	f, _ := meshFake(t)
	allowGET := &consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{PathExact: "/x", Methods: []string{"GET"}}}
	f.SetIntentionsEntry(&consulapi.ServiceIntentionsConfigEntry{Name: "web", Sources: []*consulapi.SourceIntention{
		src("billing", consulapi.IntentionActionAllow),
		{Name: "api", Peer: "other-cluster", Action: consulapi.IntentionActionAllow},
		{Name: "pay", Namespace: "team-b", Action: consulapi.IntentionActionAllow},
		{Name: "", Action: consulapi.IntentionActionDeny},
		src("billing", consulapi.IntentionActionDeny), // a second billing
		{Name: "batch", Action: "audit"},
		{Name: "cron", Action: consulapi.IntentionActionAllow, Permissions: []*consulapi.IntentionPermission{allowGET}},
		l7("ui", &consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{PathRegex: "(unclosed"}}),
		l7("docs", &consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{
			Header: []consulapi.IntentionHTTPHeaderPermission{{Name: "x-team", Contains: "core"}}}}),
		l7("auth", &consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{PathPrefix: "v1"}}),
		l7("mail", allowGET),
	}})
	f.SetIntentionsEntry(&consulapi.ServiceIntentionsConfigEntry{Name: "api", Namespace: "team-b", Sources: []*consulapi.SourceIntention{src("web", consulapi.IntentionActionDeny)}})
	h := startMesh(t, f, nil)
	s := h.next()

	in, ok := s.Intentions("web")
	if !ok {
		t.Fatalf("web's intentions are absent; want what could be kept")
	}
	var sources []string
	for _, src := range in.Sources {
		a := src.Action
		if a == "" {
			a = fmt.Sprintf("%d permissions", len(src.Permissions))
		}
		sources = append(sources, src.Name+"="+a)
	}
	// Kept: billing (the first), mail; denied because they cannot be kept
	// faithfully: batch, cron, ui, docs, auth. Dropped: the peer's api,
	// team-b's pay, the nameless one.
	want := []string{"auth=deny", "batch=deny", "billing=allow", "cron=deny", "docs=deny", "mail=1 permissions", "ui=deny"}
	if diff := cmp.Diff(want, sources); diff != "" {
		t.Errorf("web's sources (-want +got):\n%s", diff)
	}
	for _, p := range []string{`peer "other-cluster"`, `namespace "team-b"`, "has no Name", "appears twice", `action "audit"`,
		"both an action and permissions", "PathRegex", "Contains", `path "v1"`} {
		if !slices.ContainsFunc(in.Problems, func(s string) bool { return strings.Contains(s, p) }) {
			t.Errorf("no problem mentions %s: %q", p, in.Problems)
		}
	}
	if _, ok := s.Intentions("api"); ok {
		t.Errorf("api has intentions: the only entry for api is in namespace team-b")
	}

	// Reported through the hook once per problem, logged once per entry;
	// an unrelated change reports nothing again.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, nil, nil))
	h.until("api moved", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21005") {
			return errors.New(got)
		}
		return nil
	})
	_, _, problems := h.recorded()
	var web, api int
	for _, p := range problems {
		switch {
		case strings.HasPrefix(p, "intentions:web: "):
			web++
		case strings.HasPrefix(p, "intentions:api (entry"):
			api++
		default:
			t.Errorf("unexpected problem %q", p)
		}
	}
	if web != len(in.Problems) || api != 1 {
		t.Errorf("problems reported: %d for web, %d for api's entry; want %d and 1:\n%s", web, api, len(in.Problems), strings.Join(problems, "\n"))
	}
	if n := strings.Count(h.logs.String(), "destination=web"); n != 1 {
		t.Errorf("web's problems logged %d times; want once", n)
	}
}

// TestMeshIntentionsL7OnTCPSidecar: L7 permissions for a service whose
// sidecar speaks tcp are kept (the translator denies them, as Consul does)
// and reported once.
func TestMeshIntentionsL7OnTCPSidecar(t *testing.T) {
	f, _ := meshFake(t) // api's sidecar has no protocol: tcp
	f.SetIntentions("api", l7("web", &consulapi.IntentionPermission{Action: consulapi.IntentionActionAllow,
		HTTP: &consulapi.IntentionHTTPPermission{PathPrefix: "/public"}}))
	h := startMesh(t, f, nil)
	s := h.next()
	if in, _ := s.Intentions("api"); len(in.Sources) != 1 || len(in.Sources[0].Permissions) != 1 {
		t.Errorf("api's intentions %s; want web's L7 permission kept", intentionsOfSnap(s, "api"))
	}
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, nil, nil))
	h.until("api moved", func(s *MeshSnapshot) error {
		if got := endpoints(s, "api"); !strings.Contains(got, ":21005") {
			return errors.New(got)
		}
		return nil
	})
	_, _, problems := h.recorded()
	if len(problems) != 1 || !strings.Contains(problems[0], "intentions:api: ") || !strings.Contains(problems[0], "api-1-sidecar-proxy speaks tcp") {
		t.Errorf("problems %q; want one naming api-1-sidecar-proxy speaking tcp", problems)
	}
	// Once api's sidecar speaks http, nothing more is reported.
	f.Set("api-sidecar-proxy", sidecarEntry("n2", "api-1", 21005, 8081, map[string]any{"protocol": "http"}, nil))
	h.until("api http", func(s *MeshSnapshot) error {
		if sc, _ := s.Sidecar("api-1-sidecar-proxy"); sc.Protocol != ProtocolHTTP {
			return errors.New(sc.Protocol)
		}
		return nil
	})
	if _, _, again := h.recorded(); len(again) != 1 {
		t.Errorf("problems %q; want still one", again)
	}
}

// TestMeshIntentionsFailStatic: an agent that lost its state answers no
// intentions; the last known ones stay for StaleHold.
func TestMeshIntentionsFailStatic(t *testing.T) {
	f, ca := meshFake(t)
	f.SetIntentions("api", src("web", consulapi.IntentionActionDeny))
	h := startMesh(t, f, func(m *MeshWatcher) { m.w.cfg.StaleHold = 3 * time.Second })
	h.next()

	f.Restart(3)
	f.SetRoots(fakeTrustDomain, ca)
	eventually(t, "FailStatic for the intentions", func() bool {
		_, fs, _ := h.recorded()
		return slices.ContainsFunc(fs, func(s string) bool { return strings.HasPrefix(s, "service-intentions: empty answer") })
	})
	// Every snapshot during the hold keeps web's deny.
	deadline := time.After(1 * time.Second)
drain:
	for {
		select {
		case s := <-h.snaps:
			if got := intentionsOfSnap(s, "api"); got != "api: web=deny(9)" {
				t.Fatalf("a snapshot during the hold has api's intentions %s; want the last known", got)
			}
		case <-deadline:
			break drain
		}
	}
	// The hold expires: Consul is believed.
	h.until("hold expired", func(s *MeshSnapshot) error {
		if got := intentionsOfSnap(s, "api"); got != "absent" {
			return errors.New(got)
		}
		return nil
	})
	if !strings.Contains(h.logs.String(), "stale hold expired") {
		t.Errorf("the expiry was not logged")
	}

	// A later non-empty answer is taken at once.
	f.SetIntentions("api", src("web", consulapi.IntentionActionAllow))
	h.until("new intentions", func(s *MeshSnapshot) error {
		if got := intentionsOfSnap(s, "api"); got != "api: web=allow(9)" {
			return errors.New(got)
		}
		return nil
	})
}

// TestMeshIntentionsFailStaticRecovers: intentions written again after a
// restart end the hold at once.
func TestMeshIntentionsFailStaticRecovers(t *testing.T) {
	f, ca := meshFake(t)
	f.SetIntentions("api", src("web", consulapi.IntentionActionDeny))
	h := startMesh(t, f, nil)
	h.next()
	f.ResetIndex()
	f.SetRoots(fakeTrustDomain, ca)
	eventually(t, "FailStatic for the intentions", func() bool {
		_, fs, _ := h.recorded()
		return slices.ContainsFunc(fs, func(s string) bool { return strings.HasPrefix(s, "service-intentions: ") })
	})
	f.SetIntentions("api", src("web", consulapi.IntentionActionDeny), src("*", consulapi.IntentionActionDeny))
	h.until("intentions again", func(s *MeshSnapshot) error {
		if got := intentionsOfSnap(s, "api"); got != "api: web=deny(9) *=deny(8)" {
			return errors.New(got)
		}
		return nil
	})
	if !strings.Contains(h.logs.String(), "mesh entries recovered") {
		t.Errorf("the recovery was not logged")
	}
}

// TestMeshIntentionDefaultRereadAfterRestart: an agent that restarts with
// ACLs turned on (default deny) changes the default without a restart of
// the watcher.
func TestMeshIntentionDefaultRereadAfterRestart(t *testing.T) {
	f, ca := meshFake(t)
	h := startMesh(t, f, nil)
	if d := h.next().IntentionDefault(); d != IntentionAllow {
		t.Fatalf("IntentionDefault %q; want allow", d)
	}
	n := f.Requests("/v1/agent/self")
	f.SetACLs(true, "deny", "deny", 0)
	h.none(300 * time.Millisecond) // no restart, no new read
	if got := f.Requests("/v1/agent/self"); got != n {
		t.Errorf("/v1/agent/self read %d times more without a restart; want once in all", got-n)
	}
	f.Restart(3)
	f.SetRoots(fakeTrustDomain, ca)
	h.until("default deny after the restart", func(s *MeshSnapshot) error {
		if d := s.IntentionDefault(); d != IntentionDeny {
			return errors.New(d)
		}
		return nil
	})
}

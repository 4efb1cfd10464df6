package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Scenario: Switchyard restarts while Consul is down. With state.dir it
// serves the view of Consul it saved, so an Envoy that starts now gets its
// routes and endpoints (the instances still run) instead of nothing; the
// view is marked stale in the metrics until Consul answers again.
func TestSavedConsulViewServedWhileConsulIsDown(t *testing.T) {
	state := t.TempDir()
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy},
		Options{ServeArgs: []string{"--state-dir", state, "--state-restore-after", "2s"}})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	e.waitAllServe("web-1 serves", settle, web)
	saved := filepath.Join(state, "consul-snapshot.json")
	testenv.Eventually(t, settle, "Consul's view saved with web-1", func() error {
		b, err := os.ReadFile(saved)
		if err == nil && !strings.Contains(string(b), `"id":"web-1"`) {
			err = fmt.Errorf("saved view: %s", b)
		}
		return err
	})
	if fi, err := os.Stat(saved); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v (%v); want 0600", fi.Mode().Perm(), err)
	}

	e.Switchyard.Stop()
	e.Consul.Stop(t)
	e.StartSwitchyard()
	e.WaitReady() // after --state-restore-after, from the saved view
	if !e.SwitchyardLogContains("serving its last view from state.dir") {
		t.Errorf("the log does not say the saved view is served:\n%s", e.Switchyard.Output())
	}
	if n := e.Metric("switchyard_consul_saved_view", ""); n != 1 {
		t.Errorf("switchyard_consul_saved_view = %v; want 1 while Consul is down", n)
	}
	e.StartEnvoy("edge") // a fresh Envoy: all it knows comes from the saved view
	e.waitAllServe("a new Envoy reaches web-1 through the saved view", settle, web)

	// Consul is back (a dev agent: empty), web-1 registers again.
	e.Consul.Restart(t)
	e.Register(web)
	testenv.Eventually(t, settle, "Consul's answers replace the saved view", func() error {
		if n, err := e.MetricErr("switchyard_consul_saved_view", ""); err != nil || n != 0 {
			return fmt.Errorf("switchyard_consul_saved_view %v (%v)", n, err)
		}
		return nil
	})
	e.waitAllServe("web-1 serves after Consul is back", settle, web)
}

// otherGroupPolicy is a second proxy group, so that the policy stays valid
// when edge's file is removed.
const otherGroupPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: other
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port2}}
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`

// Scenario: a proxy group's file is removed while its Envoy runs, then
// Switchyard restarts. With state.dir the restarted Switchyard serves the
// group again from the policy it saved, so the Envoy that reconnects keeps
// its routes and its endpoints keep following Consul; after a restart that
// none of the group's Envoys comes back to, the group is withdrawn once the
// linger has passed.
func TestRemovedGroupSurvivesRestart(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		state := t.TempDir()
		e := NewEnvWith(t, delta, map[string]string{"edge.yaml": webPolicy, "other.yaml": otherGroupPolicy},
			Options{ServeArgs: []string{"--state-dir", state}})
		web1 := e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)
		e.WaitFor("web-1 serves", settle, "/", nil, func(code int, body string) bool { return code == 200 && body == web1.ID })

		if err := os.Remove(filepath.Join(e.PolicyDir, "edge.yaml")); err != nil {
			t.Fatal(err)
		}
		saved := filepath.Join(state, "policy-snapshot.json")
		testenv.Eventually(t, settle, "edge retained and saved", func() error {
			if !e.SwitchyardLogContains("removed from policy while Envoys use it") {
				return errorf("no warning yet")
			}
			return savedGroupsAre(saved, "edge", "other")
		})
		if fi, err := os.Stat(saved); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("saved policy mode %v (%v); want 0600", fi.Mode().Perm(), err)
		}

		// The restart: edge is in no policy file, only in state.dir.
		e.Switchyard.Stop()
		e.StartSwitchyard()
		e.WaitReady()
		testenv.Eventually(t, settle, "edge served again and its Envoy back", func() error {
			if !e.SwitchyardLogContains("removed from policy before the restart is served again from state.dir") {
				return errorf("no warning yet")
			}
			if !e.SwitchyardLogContains(`msg="envoy connected" node=edge-`) {
				return errorf("the Envoy has not reconnected yet")
			}
			return nil
		})
		// Served, not just remembered by Envoy: Consul's changes reach it.
		web2 := e.StartBackend("web", "web-2")
		e.WaitHosts("web", 2, 2)
		e.Deregister(web1)
		e.WaitHosts("web", 1, 1)
		e.WaitFor("only web-2 serves", settle, "/", nil, func(code int, body string) bool { return code == 200 && body == web2.ID })
		if got := e.Tally(20, "/"); got[web2.ID] != 20 {
			t.Errorf("after the restart, 20 requests to edge: %v; want all to web-2 (web-1 left Consul)", got)
		}
		e.requireNoNACKs()

		// A restart that no Envoy of edge comes back to: withdrawn after
		// the linger.
		e.Envoy.Stop()
		e.Switchyard.Stop()
		e.serveArgs = append(e.serveArgs, "--xds-linger", "5s")
		e.StartSwitchyard()
		e.WaitReady()
		testenv.Eventually(t, settle, "edge withdrawn after the linger", func() error {
			if !e.SwitchyardLogContains("no Envoy uses it, so its config is withdrawn") {
				return errorf("not withdrawn yet")
			}
			return savedGroupsAre(saved, "other")
		})
		out := e.Switchyard.Output()
		if kept, gone := strings.Index(out, "served again from state.dir"), strings.Index(out, "no Envoy uses it"); kept < 0 || kept > gone {
			t.Errorf("edge was not served for the linger before it was withdrawn:\n%s", out)
		}
	})
}

// savedGroupsAre checks the groups the saved policy keeps.
func savedGroupsAre(path string, want ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var saved struct {
		Sets []struct {
			Groups []string `json:"groups"`
		} `json:"sets"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return err
	}
	var got []string
	for _, s := range saved.Sets {
		got = append(got, s.Groups...)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("saved groups %v; want %v", got, want)
	}
	return nil
}

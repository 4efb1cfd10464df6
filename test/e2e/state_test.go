package e2e

import (
	"fmt"
	"os"
	"path/filepath"
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

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Restarts in a mesh lose no call between healthy services: web's app
// calls api through the sidecars without pause while Switchyard stops and
// starts again (the sidecars keep their config, then reconnect and are
// served), and while api-2's sidecar is restarted the way a deploy does it
// (its instance taken out of rotation first, then a new Envoy, served its
// listener and certificate by Switchyard, put back).
func TestMeshRestartsLoseNoCall(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnvWith(t, delta, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
		pair := startMeshPair(t, e, startAPIApp(t, "api-1"))
		url := fmt.Sprintf("http://127.0.0.1:%d/", pair.bind)
		api2Sidecar := testenv.FreePort(t)
		registerWithSidecar(t, e, "api", "api-2", "http", startAPIApp(t, "api-2"), api2Sidecar)
		api2 := startSidecar(t, e, "api-2")
		waitBothAPIs := func(what string) {
			t.Helper()
			testenv.Eventually(t, 60*time.Second, what, func() error {
				seen := map[string]bool{}
				for range 20 {
					code, b, err := httpGet(url, nil)
					if err != nil {
						return err
					}
					if code != http.StatusOK {
						return fmt.Errorf("got %d %q", code, b)
					}
					seen[strings.Fields(b)[0]] = true
				}
				if !seen["api-1"] || !seen["api-2"] {
					return fmt.Errorf("saw %v", seen)
				}
				return nil
			})
		}
		waitBothAPIs("web reaches both api instances")
		connected := func(envoy *testenv.Envoy, want int) func() error {
			return func() error {
				n, err := envoy.Stat("control_plane.connected_state")
				if err == nil && n != want {
					err = fmt.Errorf("control_plane.connected_state %d, want %d", n, want)
				}
				return err
			}
		}

		p := e.startProberAt(url)
		p.waitProbes(10)
		e.Switchyard.Stop()
		testenv.Eventually(t, settle, "web's sidecar sees the control plane gone", connected(pair.web, 0))
		p.waitProbes(50) // the sidecars serve on their own while Switchyard is down
		e.StartSwitchyard()
		e.WaitReady()
		testenv.Eventually(t, settle, "web's sidecar reconnected", connected(pair.web, 1))
		testenv.Eventually(t, settle, "api-2's sidecar reconnected", connected(api2, 1))
		p.waitProbes(20)

		// Restart api-2's sidecar as a deploy would: out of rotation, stop,
		// start a new Envoy, back in rotation.
		if err := e.consul.Agent().UpdateTTL("check-api-2", "deploying", consulapi.HealthCritical); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 60*time.Second, "api-2 out of rotation", func() error {
			for range 20 {
				_, b, err := httpGet(url, nil)
				if err != nil {
					return err
				}
				if strings.HasPrefix(b, "api-2") {
					return fmt.Errorf("api-2 still answers")
				}
			}
			return nil
		})
		api2.Stop()
		p.waitProbes(20)
		api2 = startSidecar(t, e, "api-2")
		testenv.Eventually(t, settle, "the new api-2 sidecar is served", connected(api2, 1))
		// Back in rotation only once its public listener (with its
		// certificate) is active: as a deploy's health check would wait.
		testenv.Eventually(t, settle, "the new api-2 sidecar's listener is active", func() error {
			n, err := api2.Stat("listener_manager.total_listeners_active")
			if err == nil && n < 1 {
				err = fmt.Errorf("%d listeners active", n)
			}
			return err
		})
		if err := e.consul.Agent().UpdateTTL("check-api-2", "back", consulapi.HealthPassing); err != nil {
			t.Fatal(err)
		}
		waitBothAPIs("api-2 back in rotation through its new sidecar")
		p.waitProbes(20)

		tally, n := p.Stop()
		if tally["200 api-1"]+tally["200 api-2"] != n || n < 120 {
			t.Fatalf("calls through the restarts: %v over %d; want every one answered 200 by api-1 or api-2 (at least 120)", tally, n)
		}
		t.Logf("calls through a Switchyard restart and a sidecar restart: %v", tally)
		if tally["200 api-2"] == 0 {
			t.Errorf("api-2 answered none of %d calls: %v", n, tally)
		}
		e.requireNoNACKs()
	})
}

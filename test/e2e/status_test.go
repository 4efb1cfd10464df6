package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// switchyard status shows a real Envoy in sync with what it is served, and
// a health flip's convergence (Consul's change reaching Switchyard to the
// Envoy's ACK) is measured per type.
func TestStatusAndConvergence(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, _ := newWebPair(t, delta)
		status := func() string {
			t.Helper()
			cmd := exec.Command(switchyardBin, "status", "--admin-address", e.AdminAddr)
			cmd.Env = append(os.Environ(), raceEnv...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("switchyard status: %v\n%s", err, out)
			}
			return string(out)
		}
		protocol := "sotw"
		if delta {
			protocol = "delta"
		}
		testenv.Eventually(t, settle, "status shows the Envoy in sync", func() error {
			out := status()
			if !strings.Contains(out, "edge: 1 connected, 1 in sync, 0 behind, 0 rejecting, 0 without config") ||
				!strings.Contains(out, "edge-"+protocol) || !strings.Contains(out, " 1.40.") {
				return fmt.Errorf("status:\n%s", out)
			}
			return nil
		})

		before := e.Metric("switchyard_xds_convergence_seconds_count", `type="ClusterLoadAssignment"`)
		e.SetHealth(a, "critical")
		testenv.Eventually(t, settle, "the flip's convergence measured", func() error {
			n, err := e.MetricErr("switchyard_xds_convergence_seconds_count", `type="ClusterLoadAssignment"`)
			if err == nil && n <= before {
				err = fmt.Errorf("convergence count %v, was %v", n, before)
			}
			return err
		})
		sum := e.Metric("switchyard_xds_convergence_seconds_sum", `type="ClusterLoadAssignment"`)
		if sum <= 0 || sum > 30*(before+1) {
			t.Errorf("convergence sum %v s over %v observations; want a positive time, seconds at most", sum, before+1)
		}
		testenv.Eventually(t, settle, "status in sync after the flip", func() error {
			if out := status(); !strings.Contains(out, "1 in sync") {
				return fmt.Errorf("status:\n%s", out)
			}
			return nil
		})
	})
}

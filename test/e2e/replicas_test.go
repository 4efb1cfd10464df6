package e2e

import (
	"fmt"
	"maps"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Two Switchyard replicas on the same Consul and policy serve identical
// versions; Envoy, bootstrapped with both xDS addresses, holds one stream
// and, when that replica dies under load, moves to the other with no
// failed request and nothing to apply (same versions), and the survivor
// goes on pushing changes.
func TestReplicasFailOver(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnvWith(t, delta, map[string]string{"edge.yaml": webPolicy}, Options{Replica: true})
		a, b := e.StartBackend("web", "web-1"), e.StartBackend("web", "web-2")
		e.WaitHosts("web", 2, 2)
		e.waitAllServe("both instances serve", settle, a, b)

		first, second := e.switchyardVersions("edge"), e.switchyardVersionsAt(e.ReplicaAdminAddr, "edge")
		if !maps.Equal(first, second) {
			t.Fatalf("two replicas on the same inputs serve different versions:\nfirst   %v\nreplica %v", first, second)
		}

		// Which replica holds Envoy's stream?
		connectedTo := func() (string, error) {
			n1, err1 := metricAt(e.AdminAddr, "switchyard_connected_proxies", "")
			n2, err2 := metricAt(e.ReplicaAdminAddr, "switchyard_connected_proxies", "")
			switch {
			case err1 != nil || err2 != nil:
				return "", fmt.Errorf("connected proxies: %v %v", err1, err2)
			case n1 == 1 && n2 == 0:
				return e.AdminAddr, nil
			case n1 == 0 && n2 == 1:
				return e.ReplicaAdminAddr, nil
			}
			return "", fmt.Errorf("connected proxies: first %v, replica %v; want 1 in all", n1, n2)
		}
		var holder string
		testenv.Eventually(t, settle, "envoy holds one stream", func() (err error) {
			holder, err = connectedTo()
			return err
		})
		victim, survivor, survivorAdmin := e.Switchyard, e.Replica, e.ReplicaAdminAddr
		if holder == e.ReplicaAdminAddr {
			victim, survivor, survivorAdmin = e.Replica, e.Switchyard, e.AdminAddr
		}
		envoyBefore, _ := e.envoyVersions()

		p := e.startProber()
		p.waitProbes(20)
		victim.Stop()
		testenv.Eventually(t, settle, "envoy moved to the surviving replica", func() error {
			if survivor.Exited() {
				t.Fatalf("the surviving replica exited:\n%s", survivor.Output())
			}
			n, err := metricAt(survivorAdmin, "switchyard_connected_proxies", "")
			if err == nil && n != 1 {
				err = fmt.Errorf("surviving replica has %v proxies", n)
			}
			if err == nil {
				var state int
				state, err = e.Envoy.Stat("control_plane.connected_state")
				if err == nil && state != 1 {
					err = fmt.Errorf("envoy control_plane.connected_state %d", state)
				}
			}
			return err
		})
		testenv.Eventually(t, settle, "envoy's versions after the failover equal those before", func() error {
			if after, _ := e.envoyVersions(); !maps.Equal(envoyBefore, after) {
				return fmt.Errorf("\nbefore %v\nafter  %v", envoyBefore, after)
			}
			return nil
		})
		p.waitProbes(20)

		// The survivor follows Consul: web-1 failing leaves web-2 alone.
		e.SetHealth(a, "critical")
		e.WaitFor("web-1 out of rotation through the survivor", settle, "/", nil, func(code int, body string) bool {
			return code == 200 && body == b.ID && e.Tally(20, "/")[b.ID] == 20
		})
		p.waitProbes(20)
		tally, n := p.Stop()
		requireOnly200(t, "requests through the failover", tally, n, 60, a, b)
		if n, err := metricAt(survivorAdmin, "switchyard_xds_nacks_total", ""); err != nil || n != 0 {
			t.Errorf("the surviving replica counted %v NACKs (%v); want none", n, err)
		}
	})
}

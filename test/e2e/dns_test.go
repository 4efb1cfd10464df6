package e2e

import (
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// An instance registered by host name (as external services often are)
// gets traffic: its service becomes a cluster whose names Envoy resolves,
// alongside instances registered by IP. Consul's health still decides: a
// critical named instance leaves rotation, and comes back.
func TestHostNameInstances(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)

		b.Address = "localhost"
		e.Register(b)
		testenv.Eventually(t, settle, "web becomes a DNS cluster", func() error {
			out, err := e.Envoy.Admin("/config_dump?resource=dynamic_active_clusters")
			if err != nil {
				return err
			}
			if !strings.Contains(out, `"STRICT_DNS"`) || !strings.Contains(out, `"localhost"`) {
				return errorf("the web cluster is not STRICT_DNS with localhost yet")
			}
			return nil
		})
		e.waitAllServe("the IP and the named instance both serve", settle, a, b)
		if e.SwitchyardLogContains("no usable address") {
			t.Errorf("a host name was refused:\n%s", e.Switchyard.Output())
		}

		start := time.Now()
		e.SetHealth(b, consulapi.HealthCritical)
		took := e.waitOnlyServed(start, a.ID, 20)
		t.Logf("critical named instance out of rotation after %s", took.Round(time.Millisecond))
		e.assertOnlyServes(50, a, b)

		e.SetHealth(b, consulapi.HealthPassing)
		e.waitAllServe("the named instance back in rotation", settle, a, b)
	})
}

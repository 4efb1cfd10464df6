package e2e

import (
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Switchyard reaches Consul over HTTPS with a client certificate (the agent
// verifies incoming connections), configured by the serve flags an
// operator uses: traffic flows, and a health flip still takes an instance
// out of rotation.
func TestConsulOverTLS(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{ConsulHTTPS: true})
	a := e.StartBackend("web", "web-1")
	b := e.StartBackend("web", "web-2")
	e.WaitHosts("web", 2, 2)
	e.waitAllServe("both instances serve", settle, a, b)

	start := time.Now()
	e.SetHealth(b, consulapi.HealthCritical)
	took := e.waitOnlyServed(start, a.ID, 20)
	t.Logf("critical instance out of rotation after %s, over TLS", took.Round(time.Millisecond))

	if n := e.Metric("switchyard_consul_watch_errors_total", ""); n != 0 {
		t.Errorf("switchyard_consul_watch_errors_total = %v over TLS; want 0", n)
	}
	out := e.Switchyard.Output()
	if !strings.Contains(out, "consul=https://"+e.Consul.TLS.HTTPSAddr) {
		t.Errorf("the startup log does not say Consul is reached over https:\n%s", out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("the log shows private key material:\n%s", out)
	}
}

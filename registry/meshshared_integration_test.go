package registry

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// TestConsulIntegrationMeshBeyondTheConnectionCap runs a mesh that needs
// more blocking queries than a real agent allows connections from one
// client address over plain HTTP (limits.http_max_conns_per_client,
// lowered to keep the test small): 40 services with a sidecar each, whose
// upstream is the next service, need 3 + 40 + 80 + 40 queries. With a pool
// of 10 every sidecar gets its complete snapshot, nothing is throttled,
// and a health change of a multiplexed destination and a re-registration
// of a multiplexed proxy service reach the snapshots.
func TestConsulIntegrationMeshBeyondTheConnectionCap(t *testing.T) {
	const (
		connCap  = 30
		services = 40
		pool     = 10
	)
	c := testenv.Consul(t, testenv.WithHCL(fmt.Sprintf("limits { http_max_conns_per_client = %d }", connCap)))
	client := c.Client(t)
	capInForce(t, c.HTTPAddr, connCap)

	name := func(i int) string { return fmt.Sprintf("m%02d", i) }
	register := func(i, proxyPort int) {
		t.Helper()
		err := client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			Name: name(i), ID: name(i) + "-1", Port: 8000 + i,
			Check: &consulapi.AgentServiceCheck{CheckID: name(i) + "-ttl", TTL: "10m", Status: consulapi.HealthPassing},
			Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
				Port: proxyPort,
				Proxy: &consulapi.AgentServiceConnectProxyConfig{Upstreams: []consulapi.Upstream{
					{DestinationName: name((i + 1) % services), LocalBindPort: 9000},
				}},
				// A passing check of its own instead of Consul's TCP check,
				// which would take up to 10 s to pass.
				Checks: consulapi.AgentServiceChecks{{CheckID: name(i) + "-sidecar-ttl", TTL: "10m", Status: consulapi.HealthPassing}},
			}},
		})
		if err != nil {
			t.Fatalf("register %s: %v", name(i), err)
		}
	}
	for i := range services {
		register(i, 21000+i)
	}

	var h meshHooks
	m, until, _ := runMesh(t, Config{
		Address:        c.HTTPAddr,
		AllowStale:     true,
		WaitTime:       10 * time.Second,
		BackoffMin:     50 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
		MaxMeshWatches: pool,
	}, h.hooks())
	// unusable names the destination whose endpoint must not be usable;
	// port, service 39's sidecar port.
	sidecarsComplete := func(unusable string, port int) func(*MeshSnapshot) error {
		return func(s *MeshSnapshot) error {
			if got := len(s.SidecarIDs()); got != services {
				return fmt.Errorf("%d sidecars; want %d", got, services)
			}
			for i := range services {
				sc, ok := s.Sidecar(name(i) + "-1-sidecar-proxy")
				if !ok || len(sc.Upstreams) != 1 {
					return fmt.Errorf("sidecar of %s: %+v", name(i), sc)
				}
				up := sc.Upstreams[0].DestinationName
				d, ok := s.Destination(up)
				if want := up != unusable; !ok || len(d.Endpoints) != 1 || d.Endpoints[0].Usable() != want {
					return fmt.Errorf("destination %s: %s; want one endpoint, usable %t", up, endpoints(s, up), want)
				}
				if l, ok := s.Leaf(name(i)); !ok || !strings.HasSuffix(l.SPIFFE, "/svc/"+name(i)) {
					return fmt.Errorf("leaf of %s: %v (present %t)", name(i), l.SPIFFE, ok)
				}
			}
			if sc, _ := s.Sidecar(name(services-1) + "-1-sidecar-proxy"); sc.Port != port {
				return fmt.Errorf("%s's sidecar on port %d; want %d", name(services-1), sc.Port, port)
			}
			return nil
		}
	}
	until("every sidecar complete", sidecarsComplete("", 21000+services-1))
	proxies, dests, _ := m.multiplexed()
	if len(proxies) != services-pool || len(dests) != services {
		t.Fatalf("multiplexed %d proxy services and %d destinations; want %d and %d", len(proxies), len(dests), services-pool, services)
	}

	// A multiplexed destination's instance fails its check, and passes again.
	dest := name(20)
	if err := client.Agent().UpdateTTL(dest+"-ttl", "", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	until("a multiplexed destination's check critical", sidecarsComplete(dest, 21000+services-1))
	if err := client.Agent().UpdateTTL(dest+"-ttl", "", consulapi.HealthPassing); err != nil {
		t.Fatal(err)
	}
	until("the destination passing again", sidecarsComplete("", 21000+services-1))

	// A multiplexed proxy service registered again on another port: only
	// the proxy list's index tells.
	register(services-1, 31000)
	until("a multiplexed proxy's new port", sidecarsComplete("", 31000))

	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("peak mesh blocking queries %d, requests %v", h.peak[KindMesh], h.requests)
	if got, want := h.peak[KindMesh], pool+3+len(watchedStates); got > want {
		t.Errorf("%d mesh blocking queries at once; want at most %d", got, want)
	}
	// Signing 40 leaves at once can meet the CA's own rate limit
	// (csr_max_per_second): those reads are retried. Anything else, and
	// above all the agent's connection cap, is a failure.
	for _, e := range h.errs {
		if !strings.Contains(e, "Rate limit reached, try again later") {
			t.Errorf("watch error: %s", e)
		}
	}
}

// capInForce checks that the agent refuses a connection past connCap
// from this address, so that the test above proves something.
func capInForce(t *testing.T, addr string, connCap int) {
	t.Helper()
	var conns []net.Conn
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	get := func() (int, error) {
		resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Get("http://" + addr + "/v1/status/leader")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		// The agent notices the closes a moment later.
		testenv.Eventually(t, 5*time.Second, "the agent accepts connections again", func() error {
			if status, err := get(); err != nil || status != http.StatusOK {
				return fmt.Errorf("HTTP %d, %v", status, err)
			}
			return nil
		})
	}()
	for range connCap {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testenv.Eventually(t, 5*time.Second, "the agent refuses a connection past the cap", func() error {
		status, err := get()
		if err == nil && status != http.StatusTooManyRequests {
			return fmt.Errorf("HTTP %d past the cap; want 429", status)
		}
		tr.CloseIdleConnections()
		return nil
	})
}

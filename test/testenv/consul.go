package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// ConsulAgent is a real `consul agent -dev` on loopback. A dev agent keeps
// everything in memory: Restart loses every registration, as an agent
// restart with a wiped data dir does in production.
type ConsulAgent struct {
	HTTPAddr string // 127.0.0.1:port
	ports    map[string]int
	proc     *Process
}

// Consul starts a dev agent on free loopback ports and waits for a leader.
// A free port can be taken by another test between the check and Consul's
// bind, so an agent that exits while starting is retried on fresh ports.
func Consul(t testing.TB) *ConsulAgent {
	t.Helper()
	var err error
	for range 3 {
		c := &ConsulAgent{ports: map[string]int{}}
		// Every port is chosen, grpc-tls too: a dev agent's defaults would
		// collide with the agents of tests running in parallel.
		for _, name := range []string{"http", "grpc", "grpc-tls", "dns", "serf-lan", "serf-wan", "server"} {
			c.ports[name] = FreePort(t)
		}
		c.HTTPAddr = Addr(c.ports["http"])
		if err = c.start(t); err == nil {
			return c
		}
		t.Logf("consul agent did not start, retrying on fresh ports: %v", err)
	}
	t.Fatalf("consul agent: %v", err)
	return nil
}

func (c *ConsulAgent) start(t testing.TB) error {
	t.Helper()
	args := []string{"agent", "-dev", "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-log-level", "warn", "-node", "switchyard-test",
		"-http-port", strconv.Itoa(c.ports["http"]),
		"-grpc-port", strconv.Itoa(c.ports["grpc"]),
		"-grpc-tls-port", strconv.Itoa(c.ports["grpc-tls"]),
		"-dns-port", strconv.Itoa(c.ports["dns"]),
		"-serf-lan-port", strconv.Itoa(c.ports["serf-lan"]),
		"-serf-wan-port", strconv.Itoa(c.ports["serf-wan"]),
		"-server-port", strconv.Itoa(c.ports["server"]),
	}
	c.proc = Start(t, "consul", nil, Bin(t, "consul"), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.waitLeader(ctx); err != nil {
		c.proc.Stop()
		return fmt.Errorf("on %s: %w", c.HTTPAddr, err)
	}
	return nil
}

func (c *ConsulAgent) waitLeader(ctx context.Context) error {
	url := "http://" + c.HTTPAddr + "/v1/status/leader"
	for {
		if c.proc.Exited() {
			return fmt.Errorf("exited early:\n%s", tail(c.proc.Output(), 30))
		}
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// A leader is `"127.0.0.1:port"`; none yet is `""`.
			if resp.StatusCode == http.StatusOK && strings.Trim(strings.TrimSpace(string(body)), `"`) != "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader within 30s (last error: %v)", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Client returns an API client for the agent.
func (c *ConsulAgent) Client(t testing.TB) *consulapi.Client {
	t.Helper()
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.HTTPAddr
	client, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatalf("consul client: %v", err)
	}
	return client
}

// Stop stops the agent (SIGTERM).
func (c *ConsulAgent) Stop(t testing.TB) {
	t.Helper()
	c.proc.Stop()
}

// Restart stops the agent and starts a new one on the same ports.
func (c *ConsulAgent) Restart(t testing.TB) {
	t.Helper()
	c.proc.Stop()
	if err := c.start(t); err != nil {
		t.Fatalf("restart consul agent: %v", err)
	}
}

// Output is what the agent logged.
func (c *ConsulAgent) Output() string { return c.proc.Output() }

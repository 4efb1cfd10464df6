package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
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
	// TLS is set when the agent was started WithHTTPS: its HTTPS API also
	// listens, and requires a client certificate.
	TLS   *ConsulTLS
	ports map[string]int
	https bool
	hcl   []string
	proc  *Process
}

// ConsulTLS is what a client needs to reach an agent's HTTPS API.
type ConsulTLS struct {
	HTTPSAddr string // 127.0.0.1:port
	// ServerName is the name in the agent's certificate (besides the IP
	// 127.0.0.1).
	ServerName string
	CAFile     string // verifies the agent's certificate
	// CertFile and KeyFile are a client certificate the agent accepts.
	CertFile, KeyFile string
	CA                *CA
}

// ConsulOption changes how Consul starts the agent.
type ConsulOption func(*ConsulAgent)

// WithHTTPS also serves the HTTP API over TLS, on its own port, with
// verify_incoming: a client must present a certificate from the same CA.
// The plain HTTP API keeps listening, for the test's own client.
func WithHTTPS() ConsulOption {
	return func(c *ConsulAgent) { c.https = true }
}

// WithHCL adds agent configuration, e.g. `connect { enabled = false }`
// (passed with -hcl; later settings win over the dev defaults).
func WithHCL(hcl string) ConsulOption {
	return func(c *ConsulAgent) { c.hcl = append(c.hcl, hcl) }
}

// Consul starts a dev agent on free loopback ports and waits for a leader.
// A free port can be taken by another test between the check and Consul's
// bind, so an agent that exits while starting is retried on fresh ports.
func Consul(t testing.TB, opts ...ConsulOption) *ConsulAgent {
	t.Helper()
	var err error
	for range 3 {
		c := &ConsulAgent{ports: map[string]int{}}
		for _, o := range opts {
			o(c)
		}
		// Every port is chosen, grpc-tls too: a dev agent's defaults would
		// collide with the agents of tests running in parallel.
		names := []string{"http", "grpc", "grpc-tls", "dns", "serf-lan", "serf-wan", "server"}
		if c.https {
			names = append(names, "https")
		}
		for _, name := range names {
			c.ports[name] = FreePort(t)
		}
		c.HTTPAddr = Addr(c.ports["http"])
		if c.https {
			c.TLS = newConsulTLS(t, c.ports["https"])
		}
		if err = c.start(t); err == nil {
			return c
		}
		t.Logf("consul agent did not start, retrying on fresh ports: %v", err)
	}
	t.Fatalf("consul agent: %v", err)
	return nil
}

// newConsulTLS makes a CA, the agent's certificate and a client's.
func newConsulTLS(t testing.TB, port int) *ConsulTLS {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "switchyard test consul CA")
	const name = "server.dc1.consul"
	server := ca.Issue(t, LeafOptions{Name: name, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	client := ca.Issue(t, LeafOptions{Name: "switchyard", Serial: 3, Client: true})
	WriteFile(t, dir, "server.crt", server.CertPEM)
	WriteFile(t, dir, "server.key", server.KeyPEM)
	return &ConsulTLS{
		HTTPSAddr:  Addr(port),
		ServerName: name,
		CAFile:     WriteFile(t, dir, "ca.crt", ca.PEM),
		CertFile:   WriteFile(t, dir, "client.crt", client.CertPEM),
		KeyFile:    WriteFile(t, dir, "client.key", client.KeyPEM),
		CA:         ca,
	}
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
	if c.TLS != nil {
		dir := filepath.Dir(c.TLS.CAFile)
		args = append(args, "-https-port", strconv.Itoa(c.ports["https"]),
			"-hcl", fmt.Sprintf(`tls { https { ca_file = %q cert_file = %q key_file = %q verify_incoming = true } }`,
				c.TLS.CAFile, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")))
	}
	for _, h := range c.hcl {
		args = append(args, "-hcl", h)
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

// GRPCAddr is the agent's plaintext gRPC address, where Consul's own xDS
// server serves Connect sidecars.
func (c *ConsulAgent) GRPCAddr() string { return Addr(c.ports["grpc"]) }

// Pid is the agent's process id.
func (c *ConsulAgent) Pid() int { return c.proc.Pid() }

// Output is what the agent logged.
func (c *ConsulAgent) Output() string { return c.proc.Output() }

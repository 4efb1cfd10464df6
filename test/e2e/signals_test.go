package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

const signalsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 18999
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`

// serveProcess starts `switchyard serve` against a real Consul with its
// stderr going to stderr (nil: the process's own pipe, returned) and waits
// for /readyz.
type serveProcess struct {
	cmd    *exec.Cmd
	admin  string
	done   chan error
	stderr *os.File // read end of the stderr pipe
	consul *consulapi.Client
}

func startServe(t *testing.T) *serveProcess {
	t.Helper()
	consul := testenv.Consul(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(signalsPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &serveProcess{admin: testenv.Addr(testenv.FreePort(t)), done: make(chan error, 1), stderr: r, consul: consul.Client(t)}
	p.cmd = exec.Command(switchyardBin, "serve", "--consul-address", consul.HTTPAddr, "--policy", dir,
		"--xds-address", testenv.Addr(testenv.FreePort(t)), "--admin-address", p.admin, "--log-level", "debug")
	p.cmd.Env = append(os.Environ(), raceEnv...)
	p.cmd.Stderr = w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
		}
		r.Close()
	})
	return p
}

func (p *serveProcess) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

func (p *serveProcess) get(t *testing.T, path string) (int, string) {
	t.Helper()
	code, body, err := httpGet("http://"+p.admin+path, nil)
	if err != nil {
		return 0, err.Error()
	}
	return code, body
}

func (p *serveProcess) waitReady(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, "switchyard ready", func() error {
		if gone, err := p.exited(); gone {
			t.Fatalf("switchyard exited: %v", err)
		}
		if code, body := p.get(t, "/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
}

// metricValue reads one unlabelled series; a missing series fails.
func (p *serveProcess) metricValue(t *testing.T, name string) float64 {
	t.Helper()
	code, body := p.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in /metrics", name)
	return 0
}

// A reader of Switchyard's stderr that goes away must not kill it: log
// lines are dropped (and counted) while it goes on serving.
func TestClosedStderrDoesNotKillServe(t *testing.T) {
	p := startServe(t)
	p.stderr.Close() // the reader exits
	p.waitReady(t)
	testenv.Eventually(t, 30*time.Second, "log lines dropped on the closed stderr", func() error {
		if gone, err := p.exited(); gone {
			t.Fatalf("switchyard died when its stderr reader went away: %v", err)
		}
		if d := p.metricValue(t, "switchyard_log_dropped_lines_total"); d == 0 {
			return fmt.Errorf("none dropped yet")
		}
		return nil
	})
}

// A stderr nobody reads must not stall Switchyard: the pipe fills, lines
// are dropped, and admin requests and Consul changes are still served.
func TestUnreadStderrDoesNotBlockServe(t *testing.T) {
	p := startServe(t) // the read end stays open and unread
	p.waitReady(t)
	// Fill the pipe (64 KiB) and the log queue: every debug request to
	// the admin API is cheap, but "envoy connected" lines need streams;
	// the simplest steady source is SIGHUP, one line per signal.
	for i := 0; i < 20000 && p.metricValue(t, "switchyard_log_dropped_lines_total") == 0; i++ {
		for range 50 {
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
		}
		time.Sleep(time.Millisecond)
	}
	if d := p.metricValue(t, "switchyard_log_dropped_lines_total"); d == 0 {
		t.Fatal("no line dropped after a million SIGHUPs; the test did not fill stderr")
	}
	if code, body := p.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz %d after stderr filled: %s", code, body)
	}
	// Two Consul changes in a row reach the served config: a rebuild that
	// blocked on its "config updated" line would let the first through
	// and stop the second.
	for i, addr := range []string{"127.0.0.51", "127.0.0.52"} {
		reg := &consulapi.AgentServiceRegistration{ID: fmt.Sprintf("web-%d", i), Name: "web", Address: addr, Port: 8080}
		if err := p.consul.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 60*time.Second, "instance "+addr+" in /debug/config", func() error {
			if _, body := p.get(t, "/debug/config?group=edge"); !strings.Contains(body, addr) {
				return fmt.Errorf("not served yet")
			}
			return nil
		})
	}
}

// SIGHUP asks for a reload; it does not end Switchyard.
func TestSIGHUPReloadsInsteadOfKilling(t *testing.T) {
	p := startServe(t)
	var lines testenv.SyncBuffer
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := p.stderr.Read(buf)
			lines.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	p.waitReady(t)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "SIGHUP logged and the policy re-read", func() error {
		if gone, err := p.exited(); gone {
			t.Fatalf("switchyard exited on SIGHUP: %v\n%s", err, lines.String())
		}
		if !strings.Contains(lines.String(), "SIGHUP: reloading") || !strings.Contains(lines.String(), "policy re-read on request: unchanged") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	p.waitReady(t)
}

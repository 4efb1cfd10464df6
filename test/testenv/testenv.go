// Package testenv starts the real components Switchyard's tests run against:
// a Consul dev agent, Envoy, and for global rate limits envoyproxy/ratelimit
// with Redis, installed by hack/tools.sh (make tools).
//
// A missing component fails the test; it never skips it. Every process is
// bound to loopback on free ports and stopped at t.Cleanup, and its output is
// printed when the test fails.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// CacheDir is where hack/tools.sh installs the components.
func CacheDir() string {
	if d := os.Getenv("SWITCHYARD_CACHE"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "switchyard")
}

// Bin returns the path of an installed component ("consul", "envoy",
// "ratelimit" or "redis-server"),
// failing the test with the fix when it is missing.
func Bin(t testing.TB, name string) string {
	t.Helper()
	if name == "envoy" && os.Getenv(EnvoyEnv) != "" {
		// Another supported Envoy release (hack/compat.sh): a file in the
		// cache's bin folder, such as envoy-1.36, or a path.
		name = os.Getenv(EnvoyEnv)
		if filepath.IsAbs(name) {
			return name
		}
	}
	p := filepath.Join(CacheDir(), "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not installed at %s: run `make tools` (hack/tools.sh) first", name, p)
	}
	return p
}

// EnvoyEnv names the Envoy the tests run instead of the main release:
// envoy-1.NN (installed by `hack/tools.sh --compat`) or a path.
const EnvoyEnv = "SWITCHYARD_TEST_ENVOY"

// Process is a child process whose output is kept for failure reports.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// process's output, or a log that goroutines write while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs a command, stops it at cleanup and prints its output if the
// test failed.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, out: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("--- output of %s ---\n%s", name, tail(p.Output(), 200))
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Pid is the process's id, e.g. to read its memory from /proc.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for exit status 0); call it after it
// has exited.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM, waits up to 10 s, then kills the process group.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process group at once (SIGKILL), as a crash would: no
// shutdown runs, and its ports close when the kernel reaps it.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n > lines {
				return "...\n" + s[i+1:]
			}
		}
	}
	return s
}

// Eventually polls cond every 50 ms until it returns nil or the timeout
// passes, then fails the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitTCP waits until addr accepts TCP connections.
func WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never accepted connections: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addr joins a loopback host and port.
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a real redis-server on a free loopback port, keeping nothing on
// disk: the store of envoyproxy/ratelimit's counters.
type Redis struct {
	Addr string // 127.0.0.1:port
	proc *Process
}

// StartRedis starts redis-server (installed by hack/tools.sh) without
// persistence and waits until it answers PING. A free port can be taken
// between the check and Redis's bind, so a server that does not come up is
// retried on a fresh port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := Bin(t, "redis-server")
	var err error
	for range 3 {
		r := &Redis{Addr: Addr(FreePort(t))}
		_, port, _ := net.SplitHostPort(r.Addr)
		// --dir: a dump Redis writes anyway (on SHUTDOWN with save points
		// cleared it does not, but a stray BGSAVE would) stays in the test's
		// temporary directory.
		r.proc = Start(t, "redis", nil, bin,
			"--port", port, "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no",
			"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning")
		if err = r.waitPing(30 * time.Second); err == nil {
			return r
		}
		r.proc.Stop()
		t.Logf("redis did not start, retrying on a fresh port: %v", err)
	}
	t.Fatalf("redis: %v", err)
	return nil
}

// waitPing waits until Redis answers PING with PONG.
func (r *Redis) waitPing(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if r.proc.Exited() {
			return fmt.Errorf("exited early:\n%s", tail(r.proc.Output(), 30))
		}
		err := r.Ping()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered PING: %w", r.Addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Ping sends PING and expects +PONG.
func (r *Redis) Ping() error {
	reply, err := r.Do("PING")
	if err != nil {
		return err
	}
	if reply != "+PONG" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// Do sends one command and returns the first line of the reply as Redis
// wrote it ("+OK", ":3", "$5", "-ERR ..."): enough for a test to check or
// clear the store (e.g. Do("FLUSHALL")) without a Redis client library.
func (r *Redis) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var cmd strings.Builder
	cmd.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		cmd.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	if _, err := c.Write([]byte(cmd.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Stop stops Redis (SIGTERM).
func (r *Redis) Stop() { r.proc.Stop() }

// Output is what Redis logged.
func (r *Redis) Output() string { return r.proc.Output() }

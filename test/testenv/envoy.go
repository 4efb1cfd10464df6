package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Envoy is a real Envoy started from a bootstrap file.
type Envoy struct {
	AdminAddr string // 127.0.0.1:port
	proc      *Process
}

// StartEnvoy runs Envoy with the bootstrap (YAML) and waits until its admin
// API answers. Each Envoy gets a dynamic base id, so several can run on one
// host without sharing hot-restart state.
func StartEnvoy(t testing.TB, name, bootstrap, adminAddr string) *Envoy {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &Envoy{AdminAddr: adminAddr}
	e.proc = Start(t, name, nil, Bin(t, "envoy"), "-c", path,
		"--use-dynamic-base-id", "--log-level", "warn",
		"--component-log-level", "config:info,upstream:info",
		"--drain-time-s", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if e.proc.Exited() {
			t.Fatalf("%s exited early:\n%s", name, tail(e.proc.Output(), 50))
		}
		if _, err := e.Admin("/ready"); err == nil || strings.Contains(fmt.Sprint(err), "status 503") {
			return e
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s admin %s never answered:\n%s", name, adminAddr, tail(e.proc.Output(), 50))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends Envoy (SIGTERM, then a kill after 10 s).
func (e *Envoy) Stop() { e.proc.Stop() }

// Admin GETs a path of Envoy's admin API.
func (e *Envoy) Admin(path string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.AdminAddr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("envoy admin %s: status %d: %s", path, resp.StatusCode, b)
	}
	return string(b), nil
}

// ErrNoStat is Stat's error for a name Envoy does not have: a renamed or
// not yet created stat must never read as 0.
var ErrNoStat = errors.New("no such stat")

// Stat reads one counter or gauge from /stats. A name Envoy does not have
// is an error wrapping ErrNoStat.
func (e *Envoy) Stat(name string) (int, error) {
	out, err := e.Admin("/stats?filter=^" + strings.ReplaceAll(name, ".", `\.`) + "$")
	if err != nil {
		return 0, err
	}
	return parseStat(out, name)
}

// parseStat finds name in the text of Envoy's /stats.
func parseStat(out, name string) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && k == name {
			var n int
			if _, err := fmt.Sscan(v, &n); err != nil {
				return 0, fmt.Errorf("envoy stat %s: %q: %w", name, v, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("envoy stat %s: %w", name, ErrNoStat)
}

// Output is what Envoy logged.
func (e *Envoy) Output() string { return e.proc.Output() }

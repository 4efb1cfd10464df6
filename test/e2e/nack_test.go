package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// A listener on a port another process holds passes every check Switchyard
// can make, and real Envoy rejects it. The NACK must be logged with Envoy's
// own reason and counted, the routes Envoy already had must keep serving,
// and moving the listener to a free port must be accepted.
func TestEnvoyNACKIsLoggedAndCounted(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
		e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)

		busy, err := net.Listen("tcp", testenv.Addr(e.Port2))
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		e.WritePolicy("edge.yaml", webPolicy+`  - name: admin
    address: 127.0.0.1
    port: {{port2}}
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`)
		testenv.Eventually(t, settle, "NACK counted", func() error {
			if n, err := e.MetricErr("switchyard_xds_nacks_total", `type="Listener"`); err != nil || n < 1 {
				return fmt.Errorf("switchyard_xds_nacks_total{type=\"Listener\"} = %v (%v)", n, err)
			}
			return nil
		})
		// A NACK must not become a push loop (state of the world re-sent the
		// rejected config at once, thousands of times a second): give it
		// time to loop, then count.
		time.Sleep(1500 * time.Millisecond)
		if n := e.Metric("switchyard_xds_nacks_total", `type="Listener"`); n > 2 {
			t.Fatalf("got %v NACKs for one rejected listener; want 1 (a push loop?)", n)
		}
		if !e.SwitchyardLogContains("envoy rejected config (NACK)") || !e.SwitchyardLogContains("Address already in use") {
			t.Fatalf("the NACK log line lacks Envoy's reason:\n%s", e.Switchyard.Output())
		}
		// The line names the Envoy, its group, and the policy line to fix:
		// the listener's name, after the 13 lines of webPolicy. (Delta
		// Envoys send their node on a stream's first request only.)
		nackLine := logLine(e.Switchyard.Output(), "envoy rejected config (NACK)")
		for _, want := range []string{"node=edge-", "group=edge ", "edge.yaml:14 (admin)"} {
			if !strings.Contains(nackLine, want) {
				t.Errorf("the NACK log line lacks %q:\n%s", want, nackLine)
			}
		}
		if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != "web-1" {
			t.Fatalf("after the NACK: got %d %q %v; want the old listener still serving web-1", code, body, err)
		}
		// The operator can see which Envoy runs older config, and why.
		if n := e.Metric("switchyard_xds_rejecting_proxies", ""); n != 1 {
			t.Errorf("switchyard_xds_rejecting_proxies = %v; want 1", n)
		}
		_, proxies, err := httpGet("http://"+e.AdminAddr+"/debug/proxies", nil)
		if err != nil || !strings.Contains(proxies, `"rejecting": true`) || !strings.Contains(proxies, `edge.yaml:14 (admin)`) {
			t.Errorf("/debug/proxies (%v) does not show the rejected listener and its policy line:\n%s", err, proxies)
		}

		// Envoy is only sent a listener again when it changes, so the fix
		// is to move it: to a free port.
		free := testenv.FreePort(t)
		e.WritePolicy("edge.yaml", webPolicy+`  - name: admin
    address: 127.0.0.1
    port: `+strconv.Itoa(free)+`
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`)
		testenv.Eventually(t, settle, "the moved listener serves", func() error {
			code, body, err := httpGet("http://"+testenv.Addr(free)+"/", nil)
			if err != nil || code != 200 || body != "web-1" {
				return errorf("got %d %q %v", code, body, err)
			}
			return nil
		})
		testenv.Eventually(t, settle, "the rejection cleared by Envoy's ACK", func() error {
			if n := e.Metric("switchyard_xds_rejecting_proxies", ""); n != 0 {
				return errorf("switchyard_xds_rejecting_proxies = %v", n)
			}
			return nil
		})
	})
}

// Switchyard stops cleanly on SIGTERM: exit status 0, and Envoy keeps
// serving what it has.
func TestGracefulShutdown(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	e.Switchyard.Stop()
	if err := e.Switchyard.Err(); err != nil {
		t.Fatalf("switchyard exited with %v on SIGTERM; want status 0\n%s", err, e.Switchyard.Output())
	}
	if out := e.Switchyard.Output(); !strings.Contains(out, "switchyard stopped") {
		t.Fatalf("no clean stop in the log:\n%s", out)
	}
	if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != "web-1" {
		t.Fatalf("with switchyard stopped: got %d %q %v; want Envoy still serving web-1", code, body, err)
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// logLine returns the first line of a log that contains s, or "".
func logLine(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// editPolicyWithAPI is webPolicy plus a route sending /api to service api.
const editPolicyWithAPI = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: web
            match: { pathPrefix: / }
            service: web
`

// editPolicyBadRegex adds an items route whose regular expression does not
// compile (an unclosed character class).
const editPolicyBadRegex = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: items
            match: { pathRegex: "^/items/[0-9+$" }
            service: api
          - name: web
            match: { pathPrefix: / }
            service: web
`

// editPolicyUnknownField misspells pathRegex.
const editPolicyUnknownField = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: items
            match:
              pathregex: "^/items/[0-9]+$"
            service: api
          - name: web
            match: { pathPrefix: / }
            service: web
`

// editPolicyFixed is the items route done right.
const editPolicyFixed = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
          - name: items
            match: { pathRegex: "^/items/[0-9]+$" }
            service: api
          - name: web
            match: { pathPrefix: / }
            service: web
`

// Scenario 4: policy edits go live without restarting anything; an invalid
// edit is reported with its file and line and changes nothing; fixing it
// goes live.
func TestPolicyEditGoesLive(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
		e.StartBackend("web", "web-1")
		e.StartBackend("api", "api-1") // registered, but no route uses it yet
		e.WaitHosts("web", 1, 1)

		// Before the edit, /api falls through to the catch-all route.
		e.requireRoutesServe(map[string]string{"/": "web-1", "/api": "web-1", "/api/users": "web-1", "/items/42": "web-1"})

		procs := e.markProcesses()
		okBefore := e.Metric("switchyard_policy_reloads_total", `result="ok"`)
		errBefore := e.Metric("switchyard_policy_reloads_total", `result="error"`)

		// 1. A valid edit adding /api -> api goes live.
		start := time.Now()
		e.WritePolicy("edge.yaml", editPolicyWithAPI)
		e.WaitFor("/api routed to service api after the edit", settle, "/api", nil,
			func(code int, body string) bool { return code == http.StatusOK && body == "api-1" })
		t.Logf("route edit live after %s", time.Since(start).Round(time.Millisecond))
		e.requireRoutesServe(map[string]string{"/": "web-1", "/api": "api-1", "/api/users": "api-1", "/items/42": "web-1"})
		if got := e.Metric("switchyard_policy_reloads_total", `result="ok"`); got != okBefore+1 {
			t.Errorf("switchyard_policy_reloads_total{result=\"ok\"} = %v after one valid edit; want %v", got, okBefore+1)
		}
		e.requireSameProcesses(procs)
		live := map[string]string{"/": "web-1", "/api": "api-1", "/api/users": "api-1", "/items/42": "web-1", "/items/abc": "web-1"}

		// 2. An invalid edit (a regex that does not compile) is rejected:
		// it is logged with file and line and counted, the old routes keep
		// serving exactly as before, and Switchyard stays ready.
		e.WritePolicy("edge.yaml", editPolicyBadRegex)
		badLine := policyLineOf(t, editPolicyBadRegex, "[0-9+$")
		e.awaitSwitchyardMetric("switchyard_policy_reloads_total", `result="error"`, errBefore+1, settle)
		e.requireRoutesHold(2*time.Second, live)
		want := fmt.Sprintf("edge.yaml:%d: invalid pathRegex", badLine)
		if !e.SwitchyardLogContains(want) {
			t.Errorf("switchyard log does not contain %q:\n%s", want, e.Switchyard.Output())
		}

		// 3. A second, different mistake (a misspelt field) is reported too.
		e.WritePolicy("edge.yaml", editPolicyUnknownField)
		badLine = policyLineOf(t, editPolicyUnknownField, "pathregex:")
		e.awaitSwitchyardMetric("switchyard_policy_reloads_total", `result="error"`, errBefore+2, settle)
		e.requireRoutesHold(1*time.Second, live)
		want = fmt.Sprintf(`edge.yaml:%d: unknown field \"pathregex\"`, badLine)
		if !e.SwitchyardLogContains(want) {
			t.Errorf("switchyard log does not contain %q:\n%s", want, e.Switchyard.Output())
		}
		if got := e.Metric("switchyard_policy_reloads_total", `result="ok"`); got != okBefore+1 {
			t.Errorf("switchyard_policy_reloads_total{result=\"ok\"} = %v after two invalid edits; want it unchanged at %v", got, okBefore+1)
		}

		// 4. Fixing the file makes the new version go live.
		start = time.Now()
		e.WritePolicy("edge.yaml", editPolicyFixed)
		e.WaitFor("/items/42 routed to service api after the fix", settle, "/items/42", nil,
			func(code int, body string) bool { return code == http.StatusOK && body == "api-1" })
		t.Logf("fixed policy live after %s", time.Since(start).Round(time.Millisecond))
		e.requireRoutesServe(map[string]string{"/": "web-1", "/api": "api-1", "/items/42": "api-1", "/items/abc": "web-1", "/items/42/x": "web-1"})
		if got := e.Metric("switchyard_policy_reloads_total", `result="ok"`); got != okBefore+2 {
			t.Errorf("switchyard_policy_reloads_total{result=\"ok\"} = %v after the fix; want %v", got, okBefore+2)
		}
		if got := e.Metric("switchyard_policy_reloads_total", `result="error"`); got != errBefore+2 {
			t.Errorf("switchyard_policy_reloads_total{result=\"error\"} = %v after the fix; want %v", got, errBefore+2)
		}
		e.requireSameProcesses(procs)
	})
}

// requireRoutesServe sends one request per path and fails unless each is a
// 200 from the expected backend.
func (e *Env) requireRoutesServe(want map[string]string) {
	e.t.Helper()
	for path, id := range want {
		code, body, err := e.Get(path, nil)
		if err != nil || code != http.StatusOK || body != id {
			e.t.Fatalf("GET %s: got %d %q (err %v); want 200 from %s", path, code, body, err, id)
		}
	}
}

// requireRoutesHold checks, for at least d and at least five rounds of
// requests however slow the machine is, that every path keeps answering 200
// from the expected backend and that Switchyard stays ready.
func (e *Env) requireRoutesHold(d time.Duration, want map[string]string) {
	e.t.Helper()
	end := time.Now().Add(d)
	for n := 0; n < 5 || time.Now().Before(end); n++ {
		e.requireRoutesServe(want)
		e.requireSwitchyardReady()
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitSwitchyardMetric waits until a Switchyard metric series reaches want.
func (e *Env) awaitSwitchyardMetric(name, labels string, want float64, timeout time.Duration) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, fmt.Sprintf("%s{%s} = %v", name, labels, want), func() error {
		got, err := e.MetricErr(name, labels)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

// requireSwitchyardReady fails unless Switchyard's /readyz answers 200.
func (e *Env) requireSwitchyardReady() {
	e.t.Helper()
	code, body, err := httpGet("http://"+e.AdminAddr+"/readyz", nil)
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("switchyard /readyz: %d %q (err %v); want 200", code, body, err)
	}
}

// processMarks identify the running Envoy and Switchyard processes.
type processMarks struct {
	at                time.Time
	envoyServerUptime time.Duration
	envoyRequests     int // a counter, reset by any new process
	switchyardStart   float64
	listenersModified int
	listenersCreated  int
}

func (e *Env) markProcesses() processMarks {
	e.t.Helper()
	// Uptime first, then the clock: the elapsed time measured later is
	// then never more than Envoy's.
	m := processMarks{envoyServerUptime: e.envoyServerUptime()}
	m.at = time.Now()
	m.envoyRequests = e.envoyCounterValue("http.http.downstream_rq_total")
	m.listenersModified = e.envoyCounterValue("listener_manager.listener_modified")
	m.listenersCreated = e.envoyCounterValue("listener_manager.listener_added")
	// A process that restarted would read lower than these.
	if m.envoyRequests == 0 || m.listenersCreated == 0 {
		e.t.Fatalf("envoy http.http.downstream_rq_total = %d, listener_manager.listener_added = %d; want both > 0",
			m.envoyRequests, m.listenersCreated)
	}
	m.switchyardStart = e.Metric("process_start_time_seconds", "")
	if m.switchyardStart == 0 {
		e.t.Fatal("switchyard does not report process_start_time_seconds")
	}
	return m
}

// requireSameProcesses fails if Envoy or Switchyard restarted since m was
// taken, or if Envoy re-created its listener (which drains connections) for
// what is only a route change.
func (e *Env) requireSameProcesses(m processMarks) {
	e.t.Helper()
	if e.Switchyard.Exited() {
		e.t.Fatalf("switchyard exited:\n%s", e.Switchyard.Output())
	}
	if got := e.Metric("process_start_time_seconds", ""); got != m.switchyardStart {
		e.t.Errorf("switchyard process_start_time_seconds went from %v to %v: it restarted", m.switchyardStart, got)
	}
	elapsed := time.Since(m.at)
	// Envoy reports uptime in whole seconds.
	if up := e.envoyServerUptime(); up+time.Second < m.envoyServerUptime+elapsed {
		e.t.Errorf("envoy uptime went from %s to %s over %s: it restarted", m.envoyServerUptime, up, elapsed.Round(time.Millisecond))
	}
	if got := e.envoyCounterValue("http.http.downstream_rq_total"); got <= m.envoyRequests {
		e.t.Errorf("envoy http.http.downstream_rq_total went from %d to %d: its counters were reset", m.envoyRequests, got)
	}
	if got := e.envoyCounterValue("listener_manager.listener_added"); got != m.listenersCreated {
		e.t.Errorf("envoy listener_manager.listener_added went from %d to %d; a route edit must not re-create listeners", m.listenersCreated, got)
	}
	if got := e.envoyCounterValue("listener_manager.listener_modified"); got != m.listenersModified {
		e.t.Errorf("envoy listener_manager.listener_modified went from %d to %d; a route edit must not replace the listener (it drains connections)", m.listenersModified, got)
	}
}

func (e *Env) envoyCounterValue(name string) int {
	e.t.Helper()
	n, err := e.Envoy.Stat(name)
	if err != nil {
		e.t.Fatalf("envoy stat %s: %v", name, err)
	}
	return n
}

// envoyServerUptime is Envoy's /server_info uptime_current_epoch.
func (e *Env) envoyServerUptime() time.Duration {
	e.t.Helper()
	body, err := e.Envoy.Admin("/server_info")
	if err != nil {
		e.t.Fatalf("envoy /server_info: %v", err)
	}
	var info struct {
		State  string `json:"state"`
		Uptime string `json:"uptime_current_epoch"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		e.t.Fatalf("envoy /server_info: %v\n%s", err, body)
	}
	if info.State != "LIVE" {
		e.t.Fatalf("envoy state %q; want LIVE", info.State)
	}
	d, err := time.ParseDuration(info.Uptime)
	if err != nil {
		e.t.Fatalf("envoy /server_info uptime_current_epoch %q: %v", info.Uptime, err)
	}
	return d
}

// policyLineOf is the 1-based line of the first line of content containing s.
func policyLineOf(t *testing.T, content, s string) int {
	t.Helper()
	for i, line := range strings.Split(content, "\n") {
		if strings.Contains(line, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in policy", s)
	return 0
}

// A proxy group removed from the policy while its Envoy runs keeps serving
// that Envoy, and its endpoints keep following Consul: removing a file
// neither blanks a running proxy nor leaves it sending to instances that
// have gone.
func TestRemovedGroupKeepsFollowingConsul(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
		web1 := e.StartBackend("web", "web-1")
		e.WaitHosts("web", 1, 1)

		// edge.yaml now defines another group only.
		e.WritePolicy("edge.yaml", strings.Replace(webPolicy, "name: edge", "name: other", 1))
		testenv.Eventually(t, settle, "the removal noticed", func() error {
			if !e.SwitchyardLogContains("removed from policy while Envoys use it") {
				return errorf("no warning yet")
			}
			return nil
		})
		if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web1.ID {
			t.Fatalf("after edge left the policy: got %d %q %v; want web-1 still served", code, body, err)
		}

		// Consul changes still reach the Envoy: a new instance, then the
		// first one deregistered.
		web2 := e.StartBackend("web", "web-2")
		e.WaitHosts("web", 2, 2)
		e.Deregister(web1)
		e.WaitHosts("web", 1, 1)
		e.WaitFor("only web-2 serves", settle, "/", nil, func(code int, body string) bool {
			return code == 200 && body == web2.ID
		})
	})
}

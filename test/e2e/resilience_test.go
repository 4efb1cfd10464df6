package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// prober sends requests through Envoy in the background, one after the
// other, and tallies the answers by "status body" (or "error: ...").
type prober struct {
	e     *Env
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	tally map[string]int
	n     int
}

func (e *Env) startProber() *prober { return e.startProberAt(e.URL("/")) }

// startProberAt probes url instead of the edge Envoy's root; a 200's tally
// key is its body's first word (a backend's id).
func (e *Env) startProberAt(url string) *prober {
	p := &prober{e: e, stop: make(chan struct{}), done: make(chan struct{}), tally: map[string]int{}}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			code, body, err := httpGet(url, nil)
			if f := strings.Fields(body); code == http.StatusOK && len(f) > 0 {
				body = f[0]
			}
			key := fmt.Sprintf("%d %s", code, body)
			if err != nil {
				key = "error: " + err.Error()
			}
			p.mu.Lock()
			p.tally[key]++
			p.n++
			p.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	e.t.Cleanup(func() { p.Stop() })
	return p
}

// Stop ends the probe and returns the tally and the number of requests.
func (p *prober) Stop() (map[string]int, int) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.tally), p.n
}

// Count is the number of requests sent so far.
func (p *prober) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// requireOnly200 fails unless every probe was answered 200 by one of the
// backends, and at least min probes were sent.
func requireOnly200(t *testing.T, what string, tally map[string]int, n, min int, backends ...*Backend) {
	t.Helper()
	ok := 0
	for _, b := range backends {
		ok += tally["200 "+b.ID]
	}
	if ok != n || n < min {
		t.Fatalf("%s: got %v over %d requests (want at least %d); want every one answered 200 by %v", what, tally, n, min, backendIDs(backends))
	}
}

// waitTotal waits until the prober has sent at least n requests in all.
func (p *prober) waitTotal(n int) {
	p.e.t.Helper()
	testenv.Eventually(p.e.t, settle, fmt.Sprintf("%d probe requests", n), func() error {
		if c := p.Count(); c < n {
			return fmt.Errorf("%d of %d", c, n)
		}
		return nil
	})
}

// waitProbes waits until the prober has sent at least n more requests than
// it had at the call, i.e. traffic kept flowing for a while.
func (p *prober) waitProbes(n int) {
	p.e.t.Helper()
	target := p.Count() + n
	testenv.Eventually(p.e.t, settle, fmt.Sprintf("%d more probe requests", n), func() error {
		if c := p.Count(); c < target {
			return fmt.Errorf("%d of %d", c, target)
		}
		return nil
	})
}

// switchyardVersions reads the per-type versions Switchyard serves a group
// (/debug/config).
func (e *Env) switchyardVersions(group string) map[string]string {
	e.t.Helper()
	return e.switchyardVersionsAt(e.AdminAddr, group)
}

// switchyardVersionsAt is switchyardVersions of the Switchyard whose admin
// API is at adminAddr (a replica).
func (e *Env) switchyardVersionsAt(adminAddr, group string) map[string]string {
	e.t.Helper()
	code, body, err := httpGet("http://"+adminAddr+"/debug/config?group="+group, nil)
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("switchyard /debug/config?group=%s: %d %v: %s", group, code, err, body)
	}
	var out struct {
		Group    string            `json:"group"`
		Versions map[string]string `json:"versions"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		e.t.Fatalf("switchyard /debug/config: %v: %s", err, body)
	}
	if out.Group != group || len(out.Versions) == 0 {
		e.t.Fatalf("switchyard /debug/config?group=%s: got group %q versions %v", group, out.Group, out.Versions)
	}
	return out.Versions
}

// envoyVersions is Envoy's own view of what it was served, keyed by
// "kind/name": the version_info of every dynamic cluster, listener, route
// configuration and secret in /config_dump, plus the last_updated time
// Envoy recorded for each (under SotW a resource carries its type's
// version; under delta, its own). Envoy's dump has no version for endpoints,
// so the version_text of every xDS subscription (CDS, LDS, each RDS and EDS
// subscription: the system version of the last update it accepted) is
// added from /stats as "stat/<name>".
func (e *Env) envoyVersions() (versions, updated map[string]string) {
	e.t.Helper()
	body, err := e.Envoy.Admin("/config_dump?include_eds")
	if err != nil {
		e.t.Fatalf("envoy /config_dump: %v", err)
	}
	type versioned struct {
		VersionInfo string `json:"version_info"`
		LastUpdated string `json:"last_updated"`
	}
	var dump struct {
		Configs []struct {
			Type            string `json:"@type"`
			DynamicClusters []struct {
				versioned
				Cluster struct {
					Name string `json:"name"`
				} `json:"cluster"`
			} `json:"dynamic_active_clusters"`
			DynamicListeners []struct {
				Name        string     `json:"name"`
				ActiveState *versioned `json:"active_state"`
			} `json:"dynamic_listeners"`
			DynamicRoutes []struct {
				versioned
				RouteConfig struct {
					Name string `json:"name"`
				} `json:"route_config"`
			} `json:"dynamic_route_configs"`
			DynamicSecrets []struct {
				Name string `json:"name"`
				versioned
			} `json:"dynamic_active_secrets"`
		} `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		e.t.Fatalf("envoy /config_dump: %v", err)
	}
	versions, updated = map[string]string{}, map[string]string{}
	add := func(key string, v versioned) {
		versions[key], updated[key] = v.VersionInfo, v.LastUpdated
	}
	for _, c := range dump.Configs {
		for _, r := range c.DynamicClusters {
			add("cluster/"+r.Cluster.Name, r.versioned)
		}
		for _, r := range c.DynamicListeners {
			if r.ActiveState != nil {
				add("listener/"+r.Name, *r.ActiveState)
			}
		}
		for _, r := range c.DynamicRoutes {
			add("route/"+r.RouteConfig.Name, r.versioned)
		}
		for _, r := range c.DynamicSecrets {
			add("secret/"+r.Name, r.versioned)
		}
	}
	stats, err := e.Envoy.Admin("/stats?filter=version_text$")
	if err != nil {
		e.t.Fatalf("envoy /stats: %v", err)
	}
	for _, line := range strings.Split(stats, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && strings.HasSuffix(k, ".version_text") {
			versions["stat/"+k] = strings.Trim(v, `"`)
		}
	}
	return versions, updated
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// waitEnvoyConnected waits until Envoy's ADS stream to Switchyard is up
// (Envoy's control_plane.connected_state) and Switchyard counts it.
func (e *Env) waitEnvoyConnected() {
	e.t.Helper()
	testenv.Eventually(e.t, settle, "envoy reconnected to switchyard", func() error {
		n, err := e.Envoy.Stat("control_plane.connected_state")
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("envoy control_plane.connected_state %d", n)
		}
		if p, err := e.MetricErr("switchyard_connected_proxies", ""); err != nil || p != 1 {
			return fmt.Errorf("switchyard_connected_proxies %v (%v)", p, err)
		}
		return nil
	})
}

// Scenario 9a: Envoy keeps serving while Switchyard restarts, and the
// restarted Switchyard serves the same versions: same inputs, same bytes,
// so Envoy's config does not change.
func TestSwitchyardRestart(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)
		e.waitEnvoyConnected()

		before := e.switchyardVersions("edge")
		envoyBefore, updatedBefore := e.envoyVersions()
		for _, kind := range []string{"cluster/web", "listener/", "route/",
			"stat/cluster.web.version_text", "stat/cluster_manager.cds.version_text", "stat/listener_manager.lds.version_text"} {
			found := false
			for k, v := range envoyBefore {
				found = found || (strings.HasPrefix(k, kind) && v != "")
			}
			if !found {
				t.Fatalf("envoy config dump has no versioned %s resource: %v", kind, envoyBefore)
			}
		}

		p := e.startProber()
		p.waitProbes(10)
		e.Switchyard.Stop()
		if !e.Switchyard.Exited() {
			t.Fatal("switchyard still running after Stop")
		}
		testenv.Eventually(t, settle, "envoy sees the control plane gone", func() error {
			n, err := e.Envoy.Stat("control_plane.connected_state")
			if err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("envoy control_plane.connected_state %d", n)
			}
			return nil
		})
		p.waitProbes(50) // Envoy serves on its own while Switchyard is down
		e.StartSwitchyard()
		e.WaitReady()
		e.waitEnvoyConnected()
		p.waitProbes(10)
		tally, n := p.Stop()
		requireOnly200(t, "requests through the restart", tally, n, 70, a, b)

		if after := e.switchyardVersions("edge"); !maps.Equal(before, after) {
			t.Fatalf("switchyard versions changed over a restart with the same inputs:\nbefore %v\nafter  %v", before, after)
		}
		// Envoy applies what the new stream sends; give it a moment to get
		// there, then its versions must be the very ones it had.
		var envoyAfter, updatedAfter map[string]string
		testenv.Eventually(t, settle, "envoy versions after the restart equal those before", func() error {
			envoyAfter, updatedAfter = e.envoyVersions()
			if !maps.Equal(envoyBefore, envoyAfter) {
				return fmt.Errorf("\nbefore %v\nafter  %v", envoyBefore, envoyAfter)
			}
			return nil
		})
		// Nothing changed, so Envoy had nothing to apply: no resource was
		// updated (Envoy records last_updated per resource).
		for _, k := range sortedKeys(updatedBefore) {
			if updatedBefore[k] != updatedAfter[k] {
				t.Errorf("envoy updated %s over the restart (last_updated %s -> %s) although its version stayed %s",
					k, updatedBefore[k], updatedAfter[k], envoyBefore[k])
			}
		}
		e.requireNoNACKs()
		// For the log only: a type never sent (no secrets here) has no
		// series.
		pushes := map[string]string{}
		for _, typ := range []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration", "Secret"} {
			n, err := e.MetricErr("switchyard_xds_pushes_total", `type="`+typ+`"`)
			pushes[typ] = fmt.Sprint(n)
			if err != nil {
				pushes[typ] = "none"
			}
		}
		t.Logf("responses sent by the restarted switchyard: %v", pushes)
		e.waitAllServe("both instances serve after the restart", settle, a, b)
	})
}

// Scenario 9b: with Consul gone, Envoy keeps the last endpoints and
// Switchyard stays up, logging and counting the failed queries.
func TestConsulDown(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)
		errorsBefore := e.Metric("switchyard_consul_watch_errors_total", "")

		p := e.startProber()
		e.Consul.Stop(t)
		stopped := time.Now()
		testenv.Eventually(t, settle, "switchyard_consul_watch_errors_total increases", func() error {
			if n := e.Metric("switchyard_consul_watch_errors_total", ""); n <= errorsBefore {
				return fmt.Errorf("still %v", n)
			}
			return nil
		})
		if !e.SwitchyardLogContains("consul query failed") {
			t.Fatalf("switchyard did not log the failed consul queries:\n%s", e.Switchyard.Output())
		}
		// Keep going for 3 s after the stop, and for at least 100
		// requests however slow the machine is.
		time.Sleep(time.Until(stopped.Add(3 * time.Second)))
		p.waitTotal(100)
		tally, n := p.Stop()
		requireOnly200(t, "requests with consul down", tally, n, 100, a, b)
		if tally["200 "+a.ID] == 0 || tally["200 "+b.ID] == 0 {
			t.Fatalf("got %v with consul down; want both last known instances to keep serving", tally)
		}

		if e.Switchyard.Exited() {
			t.Fatalf("switchyard exited with consul down:\n%s", e.Switchyard.Output())
		}
		code, body, err := httpGet("http://"+e.AdminAddr+"/healthz", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("switchyard /healthz with consul down: %d %q %v", code, body, err)
		}
		if n := e.Metric("switchyard_consul_watch_errors_total", ""); n <= errorsBefore {
			t.Fatalf("switchyard_consul_watch_errors_total %v; want more than %v", n, errorsBefore)
		}
		e.WaitHosts("web", 2, 2)
	})
}

// Scenario 9c: a restarted Consul agent that lost every registration does
// not take the routes down (fail static); once instances register again,
// traffic follows the live data.
func TestConsulRestartFailsStatic(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)
		if n := e.Metric("switchyard_consul_fail_static_total", ""); n != 0 {
			t.Fatalf("switchyard_consul_fail_static_total %v before the restart; want 0", n)
		}

		p := e.startProber()
		e.Consul.Restart(t) // a dev agent: every registration is gone
		if services, _, err := e.consul.Catalog().Services(nil); err != nil {
			t.Fatalf("catalog after restart: %v", err)
		} else if _, ok := services["web"]; ok {
			t.Fatalf("web still registered after the consul restart: %v", services)
		}
		testenv.Eventually(t, settle, "switchyard_consul_fail_static_total > 0", func() error {
			if n := e.Metric("switchyard_consul_fail_static_total", ""); n <= 0 {
				return fmt.Errorf("still %v", n)
			}
			return nil
		})
		p.waitProbes(100) // ~1 s of traffic on the held instances
		tally, n := p.Stop()
		requireOnly200(t, "requests through the consul restart", tally, n, 100, a, b)
		e.waitAllServe("both last known instances keep serving", settle, a, b)
		e.WaitHosts("web", 2, 2)

		// Only web-1 comes back: the live data wins over the held state.
		e.Register(a)
		e.WaitHosts("web", 1, 1)
		start := time.Now()
		e.waitOnlyServed(start, a.ID, 20)
		e.assertOnlyServes(50, a, b)
		if !e.SwitchyardLogContains("service recovered") {
			t.Errorf("switchyard did not log the recovery from fail static")
		}
		t.Logf("switchyard_consul_fail_static_total %v", e.Metric("switchyard_consul_fail_static_total", ""))
	})
}

// What was removed from the policy while Switchyard was down is removed
// from Envoy when it reconnects: a listener and a cluster it still holds
// from before. Peers have lost such removals on delta reconnects, leaving
// Envoys serving routes nobody configures any more.
func TestRemovalsWhileDisconnectedReachEnvoy(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy + `  - name: admin
    address: 127.0.0.1
    port: {{port2}}
    hosts:
      - domains: ["*"]
        routes:
          - service: api
`})
		web := e.StartBackend("web", "web-1")
		api := e.StartBackend("api", "api-1")
		e.WaitHosts("web", 1, 1)
		e.WaitHosts("api", 1, 1)
		admin := "http://" + testenv.Addr(e.Port2) + "/"
		e.waitEnvoyConnected()
		if code, body, err := httpGet(admin, nil); err != nil || code != 200 || body != api.ID {
			t.Fatalf("the admin listener: got %d %q %v; want api-1", code, body, err)
		}

		before, _ := e.envoyVersions()
		for _, k := range []string{"listener/admin", "route/admin", "cluster/api"} {
			if _, ok := before[k]; !ok {
				t.Fatalf("envoy's config has no %s before the restart: %v", k, before)
			}
		}

		e.Switchyard.Stop()
		testenv.Eventually(t, settle, "envoy sees the control plane gone", func() error {
			if n, err := e.Envoy.Stat("control_plane.connected_state"); err != nil || n != 0 {
				return fmt.Errorf("control_plane.connected_state %d %v", n, err)
			}
			return nil
		})
		e.WritePolicy("edge.yaml", webPolicy) // the admin listener and api are gone
		e.StartSwitchyard()
		e.WaitReady()
		e.waitEnvoyConnected()

		testenv.Eventually(t, settle, "envoy dropped the removed listener and cluster", func() error {
			versions, _ := e.envoyVersions()
			for k := range versions {
				if strings.HasPrefix(k, "listener/admin") || strings.HasPrefix(k, "cluster/api") || strings.HasPrefix(k, "route/admin") {
					return fmt.Errorf("envoy still has %s", k)
				}
			}
			return nil
		})
		if _, _, err := httpGet(admin, nil); err == nil {
			t.Errorf("the removed admin listener still answers on port %d", e.Port2)
		}
		if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web.ID {
			t.Errorf("the kept listener: got %d %q %v; want web-1", code, body, err)
		}
	})
}

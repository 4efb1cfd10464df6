package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// consulAgentAPI is the scenario's Consul agent API, for what the harness
// does not wrap (maintenance mode, reading check states).
func (e *Env) consulAgentAPI() *consulapi.Agent { return e.consul.Agent() }

// waitOnlyServed polls "/" until n consecutive requests in a row are all
// answered 200 by instance want, and fails the test if that is not done
// within settle of since (the moment of the change). It returns how long it
// took, for the log: speed is measured by the benchmarks, not asserted.
func (e *Env) waitOnlyServed(since time.Time, want string, n int) time.Duration {
	e.t.Helper()
	streak := 0
	last := ""
	for {
		code, body, err := e.Get("/", nil)
		switch {
		case err != nil:
			streak, last = 0, err.Error()
		case code == http.StatusOK && body == want:
			streak++
		default:
			streak, last = 0, fmt.Sprintf("%d %q", code, body)
		}
		took := time.Since(since)
		if streak >= n {
			return took
		}
		if took > settle {
			e.t.Fatalf("after %s: still no %d requests in a row served by %s alone (streak %d, last other answer: %s)",
				took.Round(time.Millisecond), n, want, streak, last)
		}
	}
}

// waitAllServe waits until every one of the backends answers within a batch
// of requests, and nothing else does.
func (e *Env) waitAllServe(what string, timeout time.Duration, backends ...*Backend) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, what, func() error {
		n := 10 * len(backends)
		got := e.Tally(n, "/")
		sum := 0
		for _, b := range backends {
			if got[b.ID] == 0 {
				return fmt.Errorf("%s got no request: %v over %d requests", b.ID, got, n)
			}
			sum += got[b.ID]
		}
		if sum != n {
			return fmt.Errorf("answers other than %v: %v over %d requests", backendIDs(backends), got, n)
		}
		return nil
	})
}

func backendIDs(bs []*Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// assertOnlyServes sends n requests and checks that every one is answered by
// want, and that other received none of them (by its own hit counter too).
func (e *Env) assertOnlyServes(n int, want, other *Backend) {
	e.t.Helper()
	before := other.Hits()
	got := e.Tally(n, "/")
	if got[want.ID] != n {
		e.t.Fatalf("got %v over %d requests; want all served by %s", got, n, want.ID)
	}
	if d := other.Hits() - before; d != 0 {
		e.t.Fatalf("%s served %d of %d requests; want none", other.ID, d, n)
	}
}

// checkStatus is the status of a backend's TTL check as Consul reports it.
func (e *Env) checkStatus(b *Backend) string {
	e.t.Helper()
	checks, err := e.consulAgentAPI().Checks()
	if err != nil {
		e.t.Fatalf("consul checks: %v", err)
	}
	c, ok := checks["check-"+b.ID]
	if !ok {
		e.t.Fatalf("consul has no check check-%s", b.ID)
	}
	return c.Status
}

// envoyHostFlags returns Envoy's health_flags for each host of a cluster,
// keyed by address (from /clusters).
func (e *Env) envoyHostFlags(cluster string) map[string]string {
	e.t.Helper()
	out, err := e.Envoy.Admin("/clusters")
	if err != nil {
		e.t.Fatalf("envoy /clusters: %v", err)
	}
	flags := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		// web::127.0.0.1:1234::health_flags::healthy
		parts := strings.Split(line, "::")
		if len(parts) == 4 && parts[0] == cluster && parts[2] == "health_flags" {
			flags[parts[1]] = parts[3]
		}
	}
	return flags
}

// Scenario 2: an instance whose Consul check goes critical stops getting
// requests, and gets them again once it passes.
func TestCriticalInstanceLeavesRotation(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)

		start := time.Now()
		e.SetHealth(b, consulapi.HealthCritical)
		took := e.waitOnlyServed(start, a.ID, 20)
		t.Logf("critical instance out of rotation after %s", took.Round(time.Millisecond))
		e.assertOnlyServes(50, a, b)
		e.WaitHosts("web", 1, 2) // Envoy still knows the host, as unhealthy

		e.SetHealth(b, consulapi.HealthPassing)
		e.waitAllServe("passing instance back in rotation", settle, a, b)
		e.WaitHosts("web", 2, 2)
	})
}

// Scenario 2: a check in warning keeps its instance in rotation (passing and
// warning are healthy).
func TestWarningInstanceStaysInRotation(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
		a := e.StartBackend("web", "web-1")
		b := e.StartBackend("web", "web-2")
		e.WaitHosts("web", 2, 2)

		e.SetHealth(b, consulapi.HealthWarning)
		if s := e.checkStatus(b); s != consulapi.HealthWarning {
			t.Fatalf("consul reports web-2's check %q; want warning", s)
		}
		// A barrier: Consul answers the web health query with all of its
		// state at once, so once Envoy has a third instance registered
		// after the warning, it has the snapshot that saw the warning.
		c := e.StartBackend("web", "web-3")
		e.WaitHosts("web", 3, 3)
		if flags := e.envoyHostFlags("web"); flags[testenv.Addr(b.Port)] != "healthy" {
			t.Fatalf("envoy health flags %v; want web-2 (%s) healthy", flags, testenv.Addr(b.Port))
		}
		e.waitAllServe("warning instance in rotation", settle, a, b, c)
		before := b.Hits()
		got := e.Tally(60, "/")
		if got[b.ID] == 0 || b.Hits() == before {
			t.Fatalf("got %v over 60 requests (web-2 hits %d -> %d); want the warning instance web-2 to serve", got, before, b.Hits())
		}
		if got[a.ID]+got[b.ID]+got[c.ID] != 60 {
			t.Fatalf("got %v over 60 requests; want only web-1, web-2 and web-3", got)
		}
	})
}

// Scenario 2: maintenance mode (Consul's critical _service_maintenance
// check) drains the instance: it gets no new requests until maintenance
// ends.
func TestMaintenanceDrainsInstance(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)

		start := time.Now()
		if err := e.consulAgentAPI().EnableServiceMaintenance(b.ID, "e2e: draining web-2"); err != nil {
			t.Fatalf("enable maintenance: %v", err)
		}
		took := e.waitOnlyServed(start, a.ID, 20)
		t.Logf("instance in maintenance out of rotation after %s", took.Round(time.Millisecond))
		e.assertOnlyServes(50, a, b)
		e.WaitHosts("web", 1, 2)

		if err := e.consulAgentAPI().DisableServiceMaintenance(b.ID); err != nil {
			t.Fatalf("disable maintenance: %v", err)
		}
		e.waitAllServe("instance back in rotation after maintenance", settle, a, b)
	})
}

// newWebPair starts a scenario with webPolicy and two web instances, both
// in Envoy's rotation and serving.
func newWebPair(t *testing.T, delta bool) (e *Env, a, b *Backend) {
	t.Helper()
	e = NewEnv(t, delta, map[string]string{"edge.yaml": webPolicy})
	a = e.StartBackend("web", "web-1")
	b = e.StartBackend("web", "web-2")
	e.WaitHosts("web", 2, 2)
	e.waitAllServe("both instances serve", settle, a, b)
	return e, a, b
}

// Scenario 3: with every instance deregistered Envoy answers 503; once they
// register again it answers 200.
func TestNoInstancesAnswers503(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)

		e.Deregister(a)
		e.Deregister(b)
		e.WaitFor("envoy answers 503 with no instances", settle, "/", nil, func(code int, _ string) bool {
			return code == http.StatusServiceUnavailable
		})
		hitsA, hitsB := a.Hits(), b.Hits()
		if got := e.Tally(20, "/"); got["503"] != 20 {
			t.Fatalf("got %v over 20 requests; want all 503", got)
		}
		if a.Hits() != hitsA || b.Hits() != hitsB {
			t.Fatalf("deregistered instances still served requests (web-1 %d -> %d, web-2 %d -> %d)", hitsA, a.Hits(), hitsB, b.Hits())
		}

		e.Register(a)
		e.Register(b)
		e.waitAllServe("re-registered instances serve", settle, a, b)
	})
}

// An instance that crashes costs clients nothing, before Consul's check
// notices: requests it would have got are retried on another instance
// (routes retry connect failures by default), and after three failed
// connections Envoy ejects it, so it soon stops getting even first tries.
func TestCrashedInstanceCostsNoErrors(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e, a, b := newWebPair(t, delta)

		b.Crash()
		if got := e.Tally(60, "/"); got[a.ID] != 60 {
			t.Fatalf("after web-2 crashed: %v over 60 requests; want all served by web-1, none failed", got)
		}
		testenv.Eventually(t, settle, "envoy ejected the crashed instance", func() error {
			n, err := e.Envoy.Stat("cluster.web.outlier_detection.ejections_active")
			if err != nil || n != 1 {
				return fmt.Errorf("cluster.web.outlier_detection.ejections_active = %d %v", n, err)
			}
			return nil
		})
		// The ejection reaches Envoy's workers a moment after the gauge;
		// from then on the crashed instance gets no connection attempts.
		testenv.Eventually(t, settle, "no more tries of the ejected instance", func() error {
			fails, err := e.Envoy.Stat("cluster.web.upstream_cx_connect_fail")
			if err != nil {
				return err
			}
			if got := e.Tally(30, "/"); got[a.ID] != 30 {
				t.Fatalf("after the ejection: %v over 30 requests; want all served by web-1", got)
			}
			now, err := e.Envoy.Stat("cluster.web.upstream_cx_connect_fail")
			if err != nil {
				return err
			}
			if now != fails {
				return fmt.Errorf("%d more connect failures over 30 requests", now-fails)
			}
			return nil
		})
		if s := e.checkStatus(b); s != consulapi.HealthPassing {
			t.Fatalf("consul says web-2 is %s; the test means to show Envoy acting before Consul knows", s)
		}
	})
}

package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// An instance that leaves rotation (maintenance, a failing check, or
// deregistration) finishes the requests it is serving: Envoy stops sending
// it new ones but lets those in flight complete.
func TestDrainFinishesInFlight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		leave func(e *Env, b *Backend)
	}{
		{"maintenance", func(e *Env, b *Backend) {
			if err := e.consulAgentAPI().EnableServiceMaintenance(b.ID, "e2e: deploy"); err != nil {
				e.t.Fatalf("enable maintenance: %v", err)
			}
		}},
		{"critical", func(e *Env, b *Backend) { e.SetHealth(b, "critical") }},
		{"deregistered", func(e *Env, b *Backend) { e.Deregister(b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
			b := e.StartBackend("web", "web-1")
			e.WaitHosts("web", 1, 1)
			e.WaitFor("web-1 serves", settle, "/", nil, func(code int, body string) bool { return code == http.StatusOK })

			const n, delay = 5, 2 * time.Second
			b.SetDelay(delay)
			before := b.Hits()
			results := make(chan string, n)
			for range n {
				go func() {
					code, body, err := e.Get("/", nil)
					if err != nil {
						results <- err.Error()
						return
					}
					results <- fmt.Sprintf("%d %s", code, body)
				}()
			}
			testenv.Eventually(t, settle, "requests in flight at web-1", func() error {
				if got := b.Hits() - before; got != n {
					return fmt.Errorf("%d of %d requests arrived", got, n)
				}
				return nil
			})
			start := time.Now()
			tc.leave(e, b)
			// Out of rotation while its requests are still being served.
			testenv.Eventually(t, settle, "web-1 out of envoy's rotation", func() error {
				if h, err := e.Envoy.Stat("cluster.web.membership_healthy"); err != nil || h != 0 {
					return fmt.Errorf("cluster.web.membership_healthy = %d %v", h, err)
				}
				return nil
			})
			if took := time.Since(start); took >= delay {
				t.Fatalf("web-1 left rotation only after %s, when its requests were done; the test proves nothing", took)
			}
			for range n {
				if got := <-results; got != "200 web-1" {
					t.Fatalf("a request in flight when web-1 left rotation got %q; want 200 web-1", got)
				}
			}
		})
	}
}

// A rolling restart of every instance of a service, under steady load,
// following the recipe in docs/operations.md (drain with maintenance, wait,
// stop, start, register), fails no request.
func TestRollingRestartLosesNothing(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	ids := []string{"web-1", "web-2", "web-3"}
	var backends []*Backend
	for _, id := range ids {
		b := e.StartBackend("web", id)
		b.SetDelay(20 * time.Millisecond)
		backends = append(backends, b)
	}
	e.WaitHosts("web", 3, 3)
	e.waitAllServe("every instance serves", settle, backends...)

	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		failures   []string
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := e.Get("/", nil)
				if err == nil && code == http.StatusOK {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%d %q %v", code, body, err))
				mu.Unlock()
			}
		}()
	}

	const drainWait = time.Second
	for i, old := range backends {
		// 1. Drain: no new requests, the ones in flight finish.
		if err := e.consulAgentAPI().EnableServiceMaintenance(old.ID, "e2e: rolling restart"); err != nil {
			t.Fatalf("enable maintenance: %v", err)
		}
		e.WaitHosts("web", 2, 3)
		// 2. Wait: longer than the slowest request, and for every Envoy.
		time.Sleep(drainWait)
		// 3. Stop the old process (gracefully).
		if err := old.Stop(); err != nil {
			t.Fatalf("stop %s: %v", old.ID, err)
		}
		// 4. Start the new one and 5. register it (passing, out of
		// maintenance: a registration replaces the old one).
		fresh := e.StartBackend("web", old.ID)
		fresh.SetDelay(20 * time.Millisecond)
		if err := e.consulAgentAPI().DisableServiceMaintenance(old.ID); err != nil {
			t.Fatalf("disable maintenance: %v", err)
		}
		backends[i] = fresh
		e.WaitHosts("web", 3, 3)
	}
	time.Sleep(drainWait)
	close(stop)
	wg.Wait()

	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during the rolling restart; first: %v", failed.Load(), ok.Load()+failed.Load(), failures[:min(len(failures), 5)])
	}
	if ok.Load() < 500 {
		t.Fatalf("only %d requests during the rolling restart; want a steady load", ok.Load())
	}
	for _, b := range backends {
		if b.Hits() == 0 {
			t.Fatalf("restarted %s served no request", b.ID)
		}
	}
	t.Logf("rolling restart of %d instances: %d requests, none failed", len(ids), ok.Load())
}

package registry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// TestConsulIntegration proves the watcher against a real Consul agent:
// health changes, maintenance, deregistration, and a restart that loses
// every registration.
func TestConsulIntegration(t *testing.T) {
	c := testenv.Consul(t)
	agent := c.Client(t).Agent()

	register := func(id string, port int) {
		t.Helper()
		err := agent.ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: "web", Port: port, Address: "127.0.0.1", Tags: []string{"v1", "a"},
			Meta:    map[string]string{"version": "1"},
			Weights: &consulapi.AgentWeights{Passing: 5, Warning: 1},
			Check: &consulapi.AgentServiceCheck{
				CheckID: id + "-ttl", TTL: "5m", Status: consulapi.HealthPassing,
			},
		})
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	ttl := func(id, status string) {
		t.Helper()
		if err := agent.UpdateTTL(id+"-ttl", "set by test", status); err != nil {
			t.Fatalf("update TTL of %s to %s: %v", id, status, err)
		}
	}
	register("web-1", 8081)
	register("web-2", 8082)

	var (
		mu         sync.Mutex
		latest     *Snapshot
		all        []*Snapshot
		failStatic []string
		logs       testenv.SyncBuffer
	)
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := NewWatcher(Config{
		Address:    c.HTTPAddr,
		AllowStale: true,
		WaitTime:   10 * time.Second,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
		StaleHold:  time.Minute,
	}, log, Hooks{
		FailStatic: func(service, reason string) {
			mu.Lock()
			defer mu.Unlock()
			failStatic = append(failStatic, service+": "+reason)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			latest = s
			all = append(all, s)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("watcher log:\n%s", logs.String())
		}
	})

	// web returns the web service of the latest snapshot as "id:port=health"
	// strings, or an error if there is no snapshot yet.
	web := func() ([]string, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if latest == nil {
			return nil, false, fmt.Errorf("nothing published yet")
		}
		svc, ok := latest.Service("web")
		var out []string
		for _, in := range svc.Instances {
			out = append(out, fmt.Sprintf("%s:%d=%s", in.ID, in.Port, in.Health))
		}
		return out, ok, nil
	}
	want := func(what string, timeout time.Duration, instances ...string) {
		t.Helper()
		testenv.Eventually(t, timeout, what, func() error {
			got, _, err := web()
			if err != nil {
				return err
			}
			if strings.Join(got, " ") != strings.Join(instances, " ") {
				return fmt.Errorf("web is %v; want %v", got, instances)
			}
			return nil
		})
	}

	want("initial sync", 10*time.Second, "web-1:8081=healthy", "web-2:8082=healthy")
	mu.Lock()
	first := all[0]
	mu.Unlock()
	svc, _ := first.Service("web")
	if diff := svc.Instances[0]; diff.Address != "127.0.0.1" || diff.Weight != 5 ||
		strings.Join(diff.Tags, ",") != "a,v1" || diff.Meta["version"] != "1" || diff.Datacenter != "dc1" || diff.Node != "switchyard-test" {
		t.Errorf("first published web-1 is %+v; want address 127.0.0.1, weight 5, tags [a v1], meta version=1, dc1, node switchyard-test", diff)
	}

	ttl("web-1", consulapi.HealthCritical)
	want("web-1 failing", 30*time.Second, "web-1:8081=unhealthy", "web-2:8082=healthy")
	ttl("web-1", consulapi.HealthPassing)
	want("web-1 passing again", 30*time.Second, "web-1:8081=healthy", "web-2:8082=healthy")

	if err := agent.EnableServiceMaintenance("web-2", "switchyard test"); err != nil {
		t.Fatal(err)
	}
	want("web-2 in maintenance", 30*time.Second, "web-1:8081=healthy", "web-2:8082=draining")
	if err := agent.DisableServiceMaintenance("web-2"); err != nil {
		t.Fatal(err)
	}
	want("web-2 out of maintenance", 30*time.Second, "web-1:8081=healthy", "web-2:8082=healthy")

	for _, id := range []string{"web-1", "web-2"} {
		if err := agent.ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, "web deregistered", func() error {
		got, ok, err := web()
		if err != nil {
			return err
		}
		if ok && len(got) > 0 {
			return fmt.Errorf("web is %v; want it gone or empty", got)
		}
		return nil
	})
	mu.Lock()
	fs := len(failStatic)
	mu.Unlock()
	if fs != 0 {
		t.Errorf("FailStatic fired for a real deregistration: %v", failStatic)
	}

	register("web-1", 8081)
	register("web-2", 8082)
	want("web registered again", 30*time.Second, "web-1:8081=healthy", "web-2:8082=healthy")

	// A dev agent restart loses every registration. The watcher must keep
	// the last known instances until they come back.
	mu.Lock()
	published := len(all)
	mu.Unlock()
	c.Restart(t)
	testenv.Eventually(t, 30*time.Second, "FailStatic for web", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range failStatic {
			if strings.HasPrefix(f, "web: ") {
				return nil
			}
		}
		return fmt.Errorf("FailStatic calls so far: %v", failStatic)
	})
	time.Sleep(2 * time.Second) // the new agent settles; web stays held
	want("web held after the restart", 0, "web-1:8081=healthy", "web-2:8082=healthy")

	register("web-1", 9091) // a new port: live data, not the held copy
	want("web live again", 30*time.Second, "web-1:9091=healthy")
	if !strings.Contains(logs.String(), "service recovered") {
		t.Errorf("recovery not logged")
	}

	// No snapshot between the restart and the re-registration lost web.
	mu.Lock()
	defer mu.Unlock()
	for _, s := range all[published:] {
		svc, ok := s.Service("web")
		if !ok || len(svc.Instances) == 0 {
			t.Errorf("a snapshot after the restart had web %+v (present %t); want it held or live", svc, ok)
		}
	}
}

// TestConsulIntegrationWant proves Want against a real Consul with more
// services than its default cap on connections per client (200): watching
// only the wanted services, the watcher syncs and publishes them.
func TestConsulIntegrationWant(t *testing.T) {
	c := testenv.Consul(t)
	registerMany(t, c.Client(t), 250)

	var (
		mu        sync.Mutex
		all       []*Snapshot
		watchErrs []string
		logs      testenv.SyncBuffer
	)
	w, err := NewWatcher(Config{
		Address:    c.HTTPAddr,
		AllowStale: true,
		WaitTime:   10 * time.Second,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Hooks{
		WatchError: func(op string, err error) {
			mu.Lock()
			defer mu.Unlock()
			watchErrs = append(watchErrs, op+": "+err.Error())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	wanted := []string{"svc-007", "svc-123", "svc-249"}
	w.Want(wanted)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			all = append(all, s)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("watcher log:\n%s", logs.String())
		}
	})
	snapshot := func(i int) func() (*Snapshot, error) {
		return func() (*Snapshot, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(all) <= i {
				return nil, fmt.Errorf("%d snapshots published; want %d", len(all), i+1)
			}
			return all[i], nil
		}
	}
	var first *Snapshot
	testenv.Eventually(t, 30*time.Second, "first snapshot", func() (err error) {
		first, err = snapshot(0)()
		return err
	})
	if got := first.Names(); strings.Join(got, " ") != strings.Join(wanted, " ") {
		t.Errorf("first snapshot has %v; want %v", got, wanted)
	}
	for _, name := range wanted {
		svc, _ := first.Service(name)
		if !first.Covers(name) || len(svc.Instances) != 1 || svc.Instances[0].ID != name+"-1" {
			t.Errorf("first snapshot: %s covered %t, instances %+v; want covered, one instance %s-1",
				name, first.Covers(name), svc.Instances, name)
		}
	}
	if first.Covers("svc-000") {
		t.Errorf("first snapshot covers svc-000, which is not wanted")
	}
	if got := w.watched(); strings.Join(got, " ") != strings.Join(wanted, " ") {
		t.Errorf("watching %v; want only %v", got, wanted)
	}

	// One more: watched at once, published once synced.
	w.Want(append(wanted, "svc-200"))
	var second *Snapshot
	testenv.Eventually(t, 30*time.Second, "svc-200 published", func() (err error) {
		second, err = snapshot(1)()
		return err
	})
	if svc, ok := second.Service("svc-200"); !ok || !second.Covers("svc-200") || len(svc.Instances) != 1 || second.Len() != 4 {
		t.Errorf("after wanting svc-200: snapshot has %v, covers svc-200 %t; want 4 services with svc-200 covered",
			second.Names(), second.Covers("svc-200"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(watchErrs) != 0 {
		t.Errorf("watch errors: %v", watchErrs)
	}
}

// registerMany registers services svc-000, svc-001, ... with one instance
// each (svc-NNN-1, no checks), and waits until the catalog lists them all.
func registerMany(t *testing.T, client *consulapi.Client, total int) []string {
	t.Helper()
	var names []string
	for i := range total {
		name := fmt.Sprintf("svc-%03d", i)
		err := client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: name + "-1", Name: name, Port: 10000 + i, Address: "127.0.0.1",
		})
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		names = append(names, name)
	}
	// Agent registrations reach the catalog asynchronously.
	testenv.Eventually(t, 30*time.Second, "catalog lists every service", func() error {
		listed, _, err := client.Catalog().Services(nil)
		if err != nil {
			return err
		}
		if len(listed) < total+1 { // and "consul" itself
			return fmt.Errorf("catalog lists %d services; want %d", len(listed), total+1)
		}
		return nil
	})
	return names
}

// TestConsulIntegrationHTTPS proves the watcher over TLS with a client
// certificate (the agent verifies incoming HTTPS connections), and that
// over TLS it watches more services than Consul's cap on connections per
// client (200 by default, left as is here) allows over plain HTTP: the
// queries share HTTP/2 connections.
func TestConsulIntegrationHTTPS(t *testing.T) {
	c := testenv.Consul(t, testenv.WithHTTPS())
	names := registerMany(t, c.Client(t), 250)

	type run struct {
		mu    sync.Mutex
		snaps []*Snapshot
		errs  []string
	}
	watch := func(cfg Config) (*run, func()) {
		t.Helper()
		r := &run{}
		var logs testenv.SyncBuffer
		cfg.WaitTime, cfg.BackoffMin, cfg.BackoffMax = 10*time.Second, 50*time.Millisecond, 500*time.Millisecond
		w, err := NewWatcher(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Hooks{
			WatchError: func(op string, err error) {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.errs = append(r.errs, op+": "+err.Error())
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		w.Want(names)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- w.Run(ctx, func(s *Snapshot) {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.snaps = append(r.snaps, s)
			})
		}()
		stop := func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
				t.Logf("watcher log (%s):\n%s", cfg.Scheme, logs.String())
			}
		}
		return r, stop
	}

	// The control: over plain HTTP, 250 watches of their own (a pool
	// larger than the default) hit the cap: the agent refuses connections
	// past 200 with 429. (Whether the first full sync still completes
	// depends on how the first, non-blocking reads and the blocking ones
	// interleave, so only the refusals are asserted.) With the default
	// pool, TestConsulIntegrationPlainHTTPManyServices routes 1,000.
	plain, stop := watch(Config{Address: c.HTTPAddr, MaxServiceWatches: 250})
	testenv.Eventually(t, 30*time.Second, "plain HTTP refused beyond the connection cap", func() error {
		plain.mu.Lock()
		defer plain.mu.Unlock()
		for _, e := range plain.errs {
			if strings.Contains(e, "429") {
				return nil
			}
		}
		return fmt.Errorf("no 429 among %d watch errors yet", len(plain.errs))
	})
	stop()

	tls := c.TLS
	secure, stop := watch(Config{Address: tls.HTTPSAddr, Scheme: "https", CAFile: tls.CAFile,
		CertFile: tls.CertFile, KeyFile: tls.KeyFile, TLSServerName: tls.ServerName})
	defer stop()
	var first *Snapshot
	testenv.Eventually(t, 20*time.Second, "first snapshot over HTTPS", func() error {
		secure.mu.Lock()
		defer secure.mu.Unlock()
		if len(secure.snaps) == 0 {
			return fmt.Errorf("no snapshot yet; watch errors: %d", len(secure.errs))
		}
		first = secure.snaps[0]
		return nil
	})
	if first.Len() != len(names) {
		t.Errorf("first snapshot over HTTPS has %d services; want %d", first.Len(), len(names))
	}
	for _, name := range names {
		svc, _ := first.Service(name)
		if !first.Covers(name) || len(svc.Instances) != 1 || svc.Instances[0].ID != name+"-1" {
			t.Fatalf("%s: covered %t, instances %+v; want covered with one instance", name, first.Covers(name), svc.Instances)
		}
	}
	secure.mu.Lock()
	defer secure.mu.Unlock()
	if len(secure.errs) != 0 {
		t.Errorf("watch errors over HTTPS: %d, first: %s", len(secure.errs), secure.errs[0])
	}
}

// TestConsulIntegrationPlainHTTPManyServices proves that a default agent
// (200 connections per client address) serves 1,000 services to one
// Watcher over plain HTTP: 100 with a blocking query of their own, the rest
// multiplexed; a health flip in either part and a registration change in
// the multiplexed part are seen, and Consul never refuses a query.
func TestConsulIntegrationPlainHTTPManyServices(t *testing.T) {
	const total = 1000
	c := testenv.Consul(t)
	client := c.Client(t)
	names := registerCatalog(t, client, total)

	var (
		mu        sync.Mutex
		latest    *Snapshot
		watchErrs []string
		requests  = map[string]int{}
		logs      testenv.SyncBuffer
	)
	w, err := NewWatcher(Config{
		Address:    c.HTTPAddr,
		AllowStale: true,
		WaitTime:   30 * time.Second,
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Hooks{
		WatchError: func(op string, err error) {
			mu.Lock()
			defer mu.Unlock()
			watchErrs = append(watchErrs, op+": "+err.Error())
		},
		Request: func(kind, result string) {
			mu.Lock()
			defer mu.Unlock()
			requests[kind+"/"+result]++
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Want(names)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- w.Run(ctx, func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			latest = s
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("watcher log:\n%s", logs.String())
		}
	})
	// health returns the port and health of a service's one instance in
	// the latest snapshot.
	health := func(name string) (int, Health, error) {
		mu.Lock()
		defer mu.Unlock()
		if latest == nil {
			return 0, 0, fmt.Errorf("nothing published yet")
		}
		svc, ok := latest.Service(name)
		if !ok || len(svc.Instances) != 1 {
			return 0, 0, fmt.Errorf("%s: %+v (present %t); want one instance", name, svc, ok)
		}
		return svc.Instances[0].Port, svc.Instances[0].Health, nil
	}
	testenv.Eventually(t, 60*time.Second, "every service published", func() error {
		for _, name := range names {
			if _, h, err := health(name); err != nil {
				return err
			} else if h != Healthy {
				return fmt.Errorf("%s is %s; want healthy", name, h)
			}
		}
		return nil
	})
	t.Logf("%d services synced in %s", total, time.Since(start).Round(time.Millisecond))
	if got := len(w.pooled()); got != DefaultMaxServiceWatches {
		t.Errorf("%d services with a query of their own; want %d", got, DefaultMaxServiceWatches)
	}

	want := func(what, name string, port int, h Health) {
		t.Helper()
		flipped := time.Now()
		testenv.Eventually(t, 30*time.Second, what, func() error {
			gotPort, got, err := health(name)
			if err != nil {
				return err
			}
			if gotPort != port || got != h {
				return fmt.Errorf("%s is port %d, %s; want port %d, %s", name, gotPort, got, port, h)
			}
			return nil
		})
		t.Logf("%s: seen after %s", what, time.Since(flipped).Round(time.Millisecond))
	}
	setCheck(t, client, total-1, consulapi.HealthCritical)
	want("a multiplexed service's check critical", names[total-1], 20000+total-1, Unhealthy)
	setCheck(t, client, total-1, consulapi.HealthPassing)
	want("a multiplexed service's check passing again", names[total-1], 20000+total-1, Healthy)
	setCheck(t, client, 5, consulapi.HealthCritical)
	want("a pooled service's check critical", names[5], 20005, Unhealthy)

	// A new port changes no check: the catalog's index moves and the
	// multiplexed services are swept.
	ok, resp, _, err := client.Txn().Txn(consulapi.TxnOps{{Service: &consulapi.ServiceTxnOp{
		Verb: consulapi.ServiceSet, Node: catalogNode(500),
		Service: consulapi.AgentService{ID: names[500] + "-1", Service: names[500], Address: "127.0.0.1", Port: 30500},
	}}}, nil)
	if err != nil || !ok {
		t.Fatalf("move %s to port 30500: %v %+v", names[500], err, resp)
	}
	want("a multiplexed service's new port", names[500], 30500, Healthy)

	mu.Lock()
	defer mu.Unlock()
	if len(watchErrs) != 0 {
		t.Errorf("%d watch errors (Consul refused queries?), first: %s", len(watchErrs), watchErrs[0])
	}
	t.Logf("consul requests: %v", requests)
}

// registerCatalog registers services svc-0000, svc-0001, ... directly in
// the catalog, one instance each (port 20000+i) with a passing check, on
// ten nodes, in transactions.
func registerCatalog(t testing.TB, client *consulapi.Client, total int) []string {
	t.Helper()
	var (
		names []string
		ops   consulapi.TxnOps
	)
	flush := func() {
		if len(ops) == 0 {
			return
		}
		ok, resp, _, err := client.Txn().Txn(ops, nil)
		if err != nil || !ok {
			t.Fatalf("register services: %v %+v", err, resp)
		}
		ops = nil
	}
	for n := range 10 {
		ops = append(ops, &consulapi.TxnOp{Node: &consulapi.NodeTxnOp{Verb: consulapi.NodeSet,
			Node: consulapi.Node{Node: catalogNode(n), Address: "127.0.0.1"}}})
	}
	flush()
	for i := range total {
		name := fmt.Sprintf("svc-%04d", i)
		names = append(names, name)
		ops = append(ops, &consulapi.TxnOp{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceSet, Node: catalogNode(i),
			Service: consulapi.AgentService{ID: name + "-1", Service: name, Address: "127.0.0.1", Port: 20000 + i}}})
		ops = append(ops, &consulapi.TxnOp{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: catalogCheck(i, name, consulapi.HealthPassing)}})
		if len(ops) >= 64 {
			flush()
		}
	}
	flush()
	return names
}

// setCheck sets the check of registerCatalog's service i.
func setCheck(t testing.TB, client *consulapi.Client, i int, status string) {
	t.Helper()
	ok, resp, _, err := client.Txn().Txn(consulapi.TxnOps{{Check: &consulapi.CheckTxnOp{
		Verb: consulapi.CheckSet, Check: catalogCheck(i, fmt.Sprintf("svc-%04d", i), status)}}}, nil)
	if err != nil || !ok {
		t.Fatalf("set check of service %d %s: %v %+v", i, status, err, resp)
	}
}

func catalogNode(i int) string { return fmt.Sprintf("node-%d", i%10) }

func catalogCheck(i int, name, status string) consulapi.HealthCheck {
	return consulapi.HealthCheck{Node: catalogNode(i), CheckID: "check-" + name, Name: "test",
		Status: status, ServiceID: name + "-1", ServiceName: name}
}

// TestConsulIntegrationMultiplexedFailStatic proves fail static for
// multiplexed services against a real agent: a restart that loses every
// registration keeps their last known instances, and a service that
// registers again is live again.
func TestConsulIntegrationMultiplexedFailStatic(t *testing.T) {
	c := testenv.Consul(t)
	client := c.Client(t)
	names := registerCatalog(t, client, 4)

	var (
		mu         sync.Mutex
		latest     *Snapshot
		all        []*Snapshot
		failStatic []string
		logs       testenv.SyncBuffer
	)
	w, err := NewWatcher(Config{
		Address:           c.HTTPAddr,
		AllowStale:        true,
		WaitTime:          10 * time.Second,
		BackoffMin:        50 * time.Millisecond,
		BackoffMax:        500 * time.Millisecond,
		StaleHold:         time.Minute,
		MaxServiceWatches: 1,
	}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Hooks{
		FailStatic: func(service, reason string) {
			mu.Lock()
			defer mu.Unlock()
			failStatic = append(failStatic, service)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Want(names)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			latest = s
			all = append(all, s)
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || os.Getenv("SWITCHYARD_TEST_LOGS") != "" {
			t.Logf("watcher log:\n%s", logs.String())
		}
	})
	port := func(name string) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		svc, ok := latest.Service(name)
		if latest == nil || !ok || len(svc.Instances) != 1 {
			return 0, fmt.Errorf("%s: %+v; want one instance", name, svc)
		}
		return svc.Instances[0].Port, nil
	}
	testenv.Eventually(t, 30*time.Second, "every service published", func() error {
		for _, name := range names {
			if _, err := port(name); err != nil {
				return err
			}
		}
		return nil
	})
	if got := w.pooled(); len(got) != 1 || got[0] != names[0] {
		t.Fatalf("services with a query of their own: %v; want [%s]", got, names[0])
	}
	mu.Lock()
	published := len(all)
	mu.Unlock()

	c.Restart(t)
	testenv.Eventually(t, 30*time.Second, "fail static for a multiplexed service", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(failStatic, names[3]) {
			return fmt.Errorf("FailStatic calls so far: %v", failStatic)
		}
		return nil
	})
	// The restarted agent knows nothing; register svc-0002 again on a new
	// port (its node first: the restart lost the nodes too).
	ok, resp, _, err := client.Txn().Txn(consulapi.TxnOps{
		{Node: &consulapi.NodeTxnOp{Verb: consulapi.NodeSet, Node: consulapi.Node{Node: catalogNode(2), Address: "127.0.0.1"}}},
		{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceSet, Node: catalogNode(2),
			Service: consulapi.AgentService{ID: names[2] + "-1", Service: names[2], Address: "127.0.0.1", Port: 30002}}},
	}, nil)
	if err != nil || !ok {
		t.Fatalf("register %s again: %v %+v", names[2], err, resp)
	}
	testenv.Eventually(t, 30*time.Second, names[2]+" live again", func() error {
		if p, err := port(names[2]); err != nil || p != 30002 {
			return fmt.Errorf("%s on port %d (%v); want 30002", names[2], p, err)
		}
		return nil
	})
	if p, err := port(names[3]); err != nil || p != 20003 {
		t.Errorf("%s while held: port %d (%v); want its last known 20003", names[3], p, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range all[published:] {
		for _, name := range []string{names[1], names[3]} {
			if svc, ok := s.Service(name); !ok || len(svc.Instances) == 0 {
				t.Errorf("a snapshot after the restart had %s %+v (present %t); want it held", name, svc, ok)
			}
		}
	}
}

// Package e2e proves Switchyard end to end: a real Consul agent, Switchyard
// built from this tree, a real Envoy bootstrapped by `switchyard bootstrap`,
// and Go HTTP backends that answer with their instance id. Every process
// runs on free loopback ports and is stopped when its test ends.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// switchyardBin is the binary under test, built once by TestMain.
var switchyardBin string

// settle bounds every wait for real components to show a change: a health
// flip, a policy edit, a reconnect. It is generous on purpose: under -race on
// a loaded 2-core machine, what takes 100 ms alone can take seconds, and a
// tight deadline would make the suite flaky rather than catch a regression.
// No test asserts how fast a change propagates (they log it); test/bench
// measures that.
const settle = 30 * time.Second

// raceEnv stops the race runtime from sleeping a second at every exit.
var raceEnv = []string{"GORACE=atexit_sleep_ms=0"}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchyard-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switchyardBin = filepath.Join(dir, "switchyard")
	// Built with the race detector: every scenario doubles as a race test
	// of the real control plane (StartSwitchyard fails on a report).
	build := exec.Command("go", "build", "-race", "-o", switchyardBin, "github.com/switchyard-io/switchyard/cmd/switchyard")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build switchyard:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// protocols runs fn once with Envoy on delta xDS and once on state of the
// world: every flow must work on both.
func protocols(t *testing.T, fn func(t *testing.T, delta bool)) {
	for _, p := range []struct {
		name  string
		delta bool
	}{{"delta", true}, {"sotw", false}} {
		t.Run(p.name, func(t *testing.T) { fn(t, p.delta) })
	}
}

// Env is one scenario's world.
type Env struct {
	t          *testing.T
	Consul     *testenv.ConsulAgent
	consul     *consulapi.Client
	PolicyDir  string
	XDSAddr    string
	AdminAddr  string
	Switchyard *testenv.Process
	Envoy      *testenv.Envoy
	// Port is a free port for the scenario's first listener; policies use
	// it as {{port}}.
	Port      int
	Port2     int
	delta     bool
	serveArgs []string // serve flags: how Switchyard reaches Consul and serves xDS
	// bootstrapArgs are extra `switchyard bootstrap` flags.
	bootstrapArgs []string
	XDSTLS        *XDSTLS // nil unless Options.XDSTLS
	// Replica is a second Switchyard on the same Consul and policy, on its
	// own xDS and admin addresses (Options.Replica); Envoys are
	// bootstrapped with both.
	Replica                          *testenv.Process
	ReplicaXDSAddr, ReplicaAdminAddr string
}

// NewEnv starts Consul, writes the policy files (name -> content, with
// {{port}} and {{port2}} replaced), starts Switchyard and waits until it is
// ready, then starts an Envoy in group "edge".
func NewEnv(t *testing.T, delta bool, policies map[string]string) *Env {
	t.Helper()
	return NewEnvWith(t, delta, policies, Options{})
}

// Options changes how NewEnvWith sets a scenario up.
type Options struct {
	// ConsulHTTPS: Switchyard talks to Consul over HTTPS with a client
	// certificate (the agent verifies incoming connections).
	ConsulHTTPS bool
	// XDSTLS: Envoy reaches Switchyard over mutual TLS, with a client
	// certificate naming group edge, and groups bound to certificates.
	XDSTLS bool
	// BootstrapArgs are extra `switchyard bootstrap` flags for the Envoy.
	BootstrapArgs []string
	// Mesh serves Connect sidecars too (serve --mesh).
	Mesh bool
	// Replica runs a second Switchyard (Env.Replica) and gives Envoy both
	// xDS addresses.
	Replica bool
	// ServeArgs are extra `switchyard serve` flags.
	ServeArgs []string
	// NoEnvoy: the scenario starts the edge Envoy itself (Env.StartEnvoy),
	// once what it needs is in place.
	NoEnvoy bool
}

// XDSTLS is the PKI of a scenario whose xDS runs over mutual TLS.
type XDSTLS struct {
	CA                        *testenv.CA
	CertFile, KeyFile, CAFile string // Switchyard's certificate, key, and the CA of both sides
	EnvoyCert, EnvoyKey       string // Envoy's client certificate and key
}

func newXDSTLS(t *testing.T) *XDSTLS {
	t.Helper()
	dir := t.TempDir()
	ca := testenv.NewCA(t, "switchyard xds CA")
	server := ca.Issue(t, testenv.LeafOptions{Name: "switchyard", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	client := ca.Issue(t, testenv.LeafOptions{Name: "edge", Serial: 3, Client: true})
	return &XDSTLS{
		CA:        ca,
		CertFile:  testenv.WriteFile(t, dir, "switchyard.crt", server.CertPEM),
		KeyFile:   testenv.WriteFile(t, dir, "switchyard.key", server.KeyPEM),
		CAFile:    testenv.WriteFile(t, dir, "ca.crt", ca.PEM),
		EnvoyCert: testenv.WriteFile(t, dir, "envoy.crt", client.CertPEM),
		EnvoyKey:  testenv.WriteFile(t, dir, "envoy.key", client.KeyPEM),
	}
}

// NewEnvWith is NewEnv with options.
func NewEnvWith(t *testing.T, delta bool, policies map[string]string, opts Options) *Env {
	t.Helper()
	e := &Env{
		t:         t,
		PolicyDir: t.TempDir(),
		XDSAddr:   testenv.Addr(testenv.FreePort(t)),
		AdminAddr: testenv.Addr(testenv.FreePort(t)),
		Port:      testenv.FreePort(t),
		Port2:     testenv.FreePort(t),
		delta:     delta,
	}
	if opts.ConsulHTTPS {
		e.Consul = testenv.Consul(t, testenv.WithHTTPS())
		tls := e.Consul.TLS
		e.serveArgs = []string{"--consul-address", tls.HTTPSAddr, "--consul-scheme", "https",
			"--consul-ca-file", tls.CAFile, "--consul-cert-file", tls.CertFile, "--consul-key-file", tls.KeyFile,
			"--consul-tls-server-name", tls.ServerName}
	} else {
		e.Consul = testenv.Consul(t)
		e.serveArgs = []string{"--consul-address", e.Consul.HTTPAddr}
	}
	e.consul = e.Consul.Client(t)
	if opts.XDSTLS {
		e.XDSTLS = newXDSTLS(t)
		x := e.XDSTLS
		e.serveArgs = append(e.serveArgs, "--xds-cert-file", x.CertFile, "--xds-key-file", x.KeyFile, "--xds-client-ca-file", x.CAFile,
			"--xds-client-cert-groups")
		e.bootstrapArgs = []string{"--xds-ca-file", x.CAFile, "--xds-cert-file", x.EnvoyCert, "--xds-key-file", x.EnvoyKey}
	}
	e.bootstrapArgs = append(e.bootstrapArgs, opts.BootstrapArgs...)
	if opts.Mesh {
		e.serveArgs = append(e.serveArgs, "--mesh")
	}
	e.serveArgs = append(e.serveArgs, opts.ServeArgs...)
	for name, content := range policies {
		e.WritePolicy(name, content)
	}
	e.StartSwitchyard()
	e.WaitReady()
	if opts.Replica {
		e.ReplicaXDSAddr, e.ReplicaAdminAddr = testenv.Addr(testenv.FreePort(t)), testenv.Addr(testenv.FreePort(t))
		e.Replica = e.startSwitchyardAt("switchyard replica", e.ReplicaXDSAddr, e.ReplicaAdminAddr)
		e.waitReadyAt(e.Replica, e.ReplicaAdminAddr)
		e.bootstrapArgs = append(e.bootstrapArgs, "--xds-address", e.ReplicaXDSAddr)
	}
	if !opts.NoEnvoy {
		e.StartEnvoy("edge")
	}
	return e
}

// WritePolicy writes a policy file atomically (write then rename), as
// editors and deploy tools do.
func (e *Env) WritePolicy(name, content string) {
	e.t.Helper()
	content = strings.ReplaceAll(content, "{{port}}", strconv.Itoa(e.Port))
	content = strings.ReplaceAll(content, "{{port2}}", strconv.Itoa(e.Port2))
	tmp := filepath.Join(e.PolicyDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.PolicyDir, name)); err != nil {
		e.t.Fatal(err)
	}
}

// StartSwitchyard starts (or restarts) the control plane.
func (e *Env) StartSwitchyard() {
	e.t.Helper()
	e.Switchyard = e.startSwitchyardAt("switchyard", e.XDSAddr, e.AdminAddr)
}

// startSwitchyardAt starts a Switchyard with the Env's settings on the
// given xDS and admin addresses.
func (e *Env) startSwitchyardAt(name, xdsAddr, adminAddr string) *testenv.Process {
	e.t.Helper()
	args := append([]string{"serve"}, e.serveArgs...)
	args = append(args,
		"--policy", e.PolicyDir,
		"--xds-address", xdsAddr,
		"--admin-address", adminAddr,
		"--log-level", "debug")
	proc := testenv.Start(e.t, name, raceEnv, switchyardBin, args...)
	e.t.Cleanup(func() {
		proc.Stop()
		if strings.Contains(proc.Output(), "WARNING: DATA RACE") {
			e.t.Errorf("the race detector reported a data race in %s:\n%s", name, proc.Output())
		}
	})
	return proc
}

// WaitReady waits for /readyz to answer 200.
func (e *Env) WaitReady() {
	e.t.Helper()
	e.waitReadyAt(e.Switchyard, e.AdminAddr)
}

func (e *Env) waitReadyAt(proc *testenv.Process, adminAddr string) {
	e.t.Helper()
	testenv.Eventually(e.t, settle, "switchyard ready", func() error {
		if proc.Exited() {
			e.t.Fatalf("switchyard exited:\n%s", proc.Output())
		}
		code, body, err := httpGet("http://"+adminAddr+"/readyz", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
}

// StartEnvoy bootstraps an Envoy with `switchyard bootstrap` and waits until
// it has received its listeners.
func (e *Env) StartEnvoy(group string) {
	e.t.Helper()
	protocol := "sotw"
	if e.delta {
		protocol = "delta"
	}
	e.Envoy = e.StartEnvoyAs(group, group+"-"+protocol)
}

// StartEnvoyAs starts another Envoy of group, as node id, with the Env's
// protocol and bootstrap flags, and waits until it has its listeners.
func (e *Env) StartEnvoyAs(group, id string) *testenv.Envoy {
	e.t.Helper()
	adminAddr := testenv.Addr(testenv.FreePort(e.t))
	protocol := "sotw"
	if e.delta {
		protocol = "delta"
	}
	args := append([]string{"bootstrap", "--node-id", id, "--group", group,
		"--xds-address", e.XDSAddr, "--admin-address", adminAddr, "--xds-protocol", protocol}, e.bootstrapArgs...)
	cmd := exec.Command(switchyardBin, args...)
	cmd.Env = append(os.Environ(), raceEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("switchyard bootstrap: %v\n%s", err, out)
	}
	envoy := testenv.StartEnvoy(e.t, "envoy "+id, string(out), adminAddr)
	testenv.Eventually(e.t, settle, "envoy "+id+" initialized", func() error {
		body, err := envoy.Admin("/ready")
		if err != nil {
			return err
		}
		if strings.TrimSpace(body) != "LIVE" {
			return fmt.Errorf("envoy state %q", body)
		}
		return nil
	})
	return envoy
}

// Metric reads one series from Switchyard's /metrics (the sum over labels
// matching the given label filter, e.g. `type="Cluster"`). A series that is
// not there fails the test: a renamed metric must not read as 0.
func (e *Env) Metric(name, labels string) float64 {
	e.t.Helper()
	v, err := e.MetricErr(name, labels)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// MetricErr is Metric for use inside Eventually: a series not there (yet)
// is an error wrapping errNoSeries.
func (e *Env) MetricErr(name, labels string) (float64, error) {
	return metricAt(e.AdminAddr, name, labels)
}

// metricAt is MetricErr for the Switchyard whose admin API is at adminAddr.
func metricAt(adminAddr, name, labels string) (float64, error) {
	code, body, err := httpGet("http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return 0, fmt.Errorf("switchyard /metrics: %w", err)
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("switchyard /metrics: status %d", code)
	}
	return metricSum(body, name, labels)
}

// errNoSeries is metricSum's error when no series matches.
var errNoSeries = errors.New("no such series")

// metricSum sums the series of metric name whose labels contain the label
// filter, in Prometheus text. It fails with errNoSeries when none matches.
func metricSum(text, name, labels string) (float64, error) {
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer metric name
		}
		if labels != "" && !strings.Contains(rest, labels) {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("%s{%s}: %w", name, labels, errNoSeries)
	}
	return sum, nil
}

// TestMetricSumMissingSeries proves a series that is not in /metrics is an
// error, not 0: a renamed metric must fail the checks that expect it to be 0.
func TestMetricSumMissingSeries(t *testing.T) {
	text := `# HELP switchyard_xds_pushes_total xDS responses sent to Envoy.
# TYPE switchyard_xds_pushes_total counter
switchyard_xds_pushes_total{type="Cluster"} 2
switchyard_xds_pushes_total{type="Listener"} 3
switchyard_xds_pushes_total_extra 7
switchyard_ready 0
`
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"switchyard_xds_pushes_total", "", 5},
		{"switchyard_xds_pushes_total", `type="Listener"`, 3},
		{"switchyard_ready", "", 0},
	} {
		if got, err := metricSum(text, c.name, c.labels); err != nil || got != c.want {
			t.Errorf("%s{%s}: got %v, %v; want %v", c.name, c.labels, got, err, c.want)
		}
	}
	for _, c := range []struct{ name, labels string }{
		{"switchyard_xds_nacks_total", ""},                      // a family not there
		{"switchyard_xds_pushes_total", `type="Secret"`},        // a label value not there
		{"switchyard_xds_push", ""},                             // a prefix of a name
		{"switchyard_xds_pushes_total_extra", `type="Cluster"`}, // no such labels
	} {
		if got, err := metricSum(text, c.name, c.labels); !errors.Is(err, errNoSeries) {
			t.Errorf("%s{%s}: got %v, %v; want an error wrapping errNoSeries", c.name, c.labels, got, err)
		}
	}
}

// requireNoNACKs fails if Envoy rejected any configuration. Envoy's CDS and
// LDS rejection counters must exist and read 0. Switchyard's NACK counter
// has a series per resource type only once that type was NACKed, so there
// absent counts as 0; TestEnvoyNACKIsLoggedAndCounted pins its name by
// reading it.
func (e *Env) requireNoNACKs() {
	e.t.Helper()
	for _, stat := range []string{"cluster_manager.cds.update_rejected", "listener_manager.lds.update_rejected"} {
		if n := e.envoyCounterValue(stat); n != 0 {
			e.t.Errorf("envoy %s = %d; want 0", stat, n)
		}
	}
	n, err := e.MetricErr("switchyard_xds_nacks_total", "")
	if err != nil && !errors.Is(err, errNoSeries) {
		e.t.Fatal(err)
	}
	if n != 0 {
		e.t.Errorf("switchyard_xds_nacks_total = %v; want 0", n)
	}
}

// URL is a URL on the scenario's first Envoy listener.
func (e *Env) URL(path string) string {
	return "http://" + testenv.Addr(e.Port) + path
}

// Get sends one request through Envoy.
func (e *Env) Get(path string, headers map[string]string) (int, string, error) {
	return httpGet(e.URL(path), headers)
}

func httpGet(url string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// Tally sends n requests and counts responses by "status body".
func (e *Env) Tally(n int, path string) map[string]int {
	e.t.Helper()
	out := map[string]int{}
	for range n {
		code, body, err := e.Get(path, nil)
		if err != nil {
			out["error"]++
			continue
		}
		if code == http.StatusOK {
			out[body]++
		} else {
			out[strconv.Itoa(code)]++
		}
	}
	return out
}

// WaitFor polls a request until check accepts the response.
func (e *Env) WaitFor(what string, timeout time.Duration, path string, headers map[string]string, check func(code int, body string) bool) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, what, func() error {
		code, body, err := e.Get(path, headers)
		if err != nil {
			return err
		}
		if !check(code, body) {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})
}

// Backend is a service instance: an HTTP server that answers with its id.
type Backend struct {
	ID      string
	Service string
	// Address is what Register puts in Consul: 127.0.0.1 unless a test
	// changes it (to a host name, say) and registers again.
	Address string
	Port    int
	// Tags and Meta are what Register puts in Consul; change them and
	// register again to retag the instance.
	Tags []string
	Meta map[string]string
	srv  *http.Server
	// FailFirst makes the next n requests answer 503.
	failNext   atomic.Int32
	failStatus atomic.Int32
	// Delay holds every response this long.
	delay atomic.Int64
	hits  atomic.Int64
	// lastHost is the Host of the latest request.
	lastHost atomic.Value
}

// LastHost is the Host header of the latest request served ("" if none).
func (b *Backend) LastHost() string {
	h, _ := b.lastHost.Load().(string)
	return h
}

// FailNext makes the next n requests answer 503.
func (b *Backend) FailNext(n int) { b.FailNextWith(n, http.StatusServiceUnavailable) }

// FailNextWith makes the next n requests answer status, with the header
// X-Failing-On-Purpose: true.
func (b *Backend) FailNextWith(n, status int) {
	b.failStatus.Store(int32(status))
	b.failNext.Store(int32(n))
}

// SetDelay makes every response wait d.
func (b *Backend) SetDelay(d time.Duration) { b.delay.Store(int64(d)) }

// Hits is the number of requests served.
func (b *Backend) Hits() int64 { return b.hits.Load() }

// Crash stops the backend as a crashed process would stop answering: its
// listener and open connections close, and Consul is not told.
func (b *Backend) Crash() { b.srv.Close() }

// Stop stops the backend as a well-behaved process does on SIGTERM: it
// stops accepting, closes idle connections and returns once the requests
// in flight are answered (or after 30 s).
func (b *Backend) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return b.srv.Shutdown(ctx)
}

// StartBackend starts a backend and registers it in Consul with a passing
// TTL check whose state the test controls.
func (e *Env) StartBackend(service, id string) *Backend {
	e.t.Helper()
	b := &Backend{ID: id, Service: service, Address: "127.0.0.1", Port: testenv.FreePort(e.t)}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.lastHost.Store(r.Host)
		echoRequest(w, r)
		if d := time.Duration(b.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if b.failNext.Add(-1) >= 0 {
			w.Header().Set("X-Failing-On-Purpose", "true")
			http.Error(w, "failing on purpose", int(b.failStatus.Load()))
			return
		}
		fmt.Fprintln(w, id)
	})
	// Listen before registering, so a port taken by another process since
	// FreePort fails here instead of that process answering for the backend.
	l, err := net.Listen("tcp", testenv.Addr(b.Port))
	if err != nil {
		e.t.Fatalf("backend %s: %v", id, err)
	}
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(l) }()
	e.t.Cleanup(func() { b.srv.Close() })
	e.Register(b)
	return b
}

// echoRequest tells the client what the backend received, for tests of
// what Envoy changes on the way: the path with its query in X-Seen-Path,
// the Host in X-Seen-Host, and each request header H in X-Seen-Req-H (its
// values joined by commas), unless it is over 1 KiB: a test of large
// requests must not get responses too large for Envoy. It also sends
// X-Powered-By, a header for Envoy to remove.
func echoRequest(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Seen-Path", r.URL.RequestURI())
	w.Header().Set("X-Seen-Host", r.Host)
	for name, values := range r.Header {
		if v := strings.Join(values, ","); len(v) <= 1024 {
			w.Header().Set("X-Seen-Req-"+name, v)
		}
	}
	w.Header().Set("X-Powered-By", "e2e-backend")
}

// Register (re-)registers a backend in Consul, passing.
func (e *Env) Register(b *Backend) {
	e.t.Helper()
	err := e.consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: b.ID, Name: b.Service, Address: b.Address, Port: b.Port, Tags: b.Tags, Meta: b.Meta,
		Check: &consulapi.AgentServiceCheck{CheckID: "check-" + b.ID, TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		e.t.Fatalf("register %s: %v", b.ID, err)
	}
}

// SetHealth sets a backend's TTL check: passing, warning or critical.
func (e *Env) SetHealth(b *Backend, status string) {
	e.t.Helper()
	if err := e.consul.Agent().UpdateTTL("check-"+b.ID, "set by test", status); err != nil {
		e.t.Fatalf("update ttl %s: %v", b.ID, err)
	}
}

// Deregister removes a backend from Consul.
func (e *Env) Deregister(b *Backend) {
	e.t.Helper()
	if err := e.consul.Agent().ServiceDeregister(b.ID); err != nil {
		e.t.Fatalf("deregister %s: %v", b.ID, err)
	}
}

// SwitchyardLogContains reports whether Switchyard logged s.
func (e *Env) SwitchyardLogContains(s string) bool {
	return bytes.Contains([]byte(e.Switchyard.Output()), []byte(s))
}

// WaitHosts waits until Envoy's cluster for service has exactly healthy
// healthy hosts out of total.
func (e *Env) WaitHosts(service string, healthy, total int) {
	e.t.Helper()
	testenv.Eventually(e.t, settle, fmt.Sprintf("envoy cluster %s with %d/%d healthy hosts", service, healthy, total), func() error {
		h, err := e.Envoy.Stat("cluster." + service + ".membership_healthy")
		if err != nil {
			return err
		}
		n, err := e.Envoy.Stat("cluster." + service + ".membership_total")
		if err != nil {
			return err
		}
		if h != healthy || n != total {
			return fmt.Errorf("got %d/%d", h, n)
		}
		return nil
	})
}

// Package bench measures Switchyard end to end at scale, with the real
// components: a Consul agent holding thousands of service instances,
// Switchyard built from this tree, and an Envoy routing to every service
// (BenchmarkPropagation), many xDS clients of one edge group
// (BenchmarkFanout), or Connect sidecars served by Switchyard and by
// Consul's own xDS server side by side (BenchmarkMeshFanout), and the
// fleet-scale rows of issue 6: a restart under 1,000 clients
// (BenchmarkReconnectStorm), a policy edit reaching them
// (BenchmarkRouteAdd), minutes of flips on a clock (BenchmarkFlipSoak),
// memory over many groups (BenchmarkManyGroups) and misbehaving proxies
// (BenchmarkBadProxies). It reports figures and asserts none (a timed assertion flakes on a busy machine);
// docs/benchmarks.md records them.
//
//	make bench
//	go test -run '^$' -bench Propagation -benchtime 40x -timeout 30m ./test/bench/ -args -services 2000 -instances 5
//	go test -run '^$' -bench MeshFanout -benchtime 40x -timeout 30m ./test/bench/ -args -sidecars 500 -mesh-services 100
//	go test -run '^$' -bench Propagation -benchtime 200x -timeout 30m ./test/bench/ -args -services 5000 -instances 4 -consul http
//	go test -run '^$' -bench FlipSoak -benchtime 1x -timeout 30m ./test/bench/ -args -soak 5m
//	go test -run '^$' -bench ManyGroups -benchtime 20x -timeout 30m ./test/bench/ -args -groups 50 -group-proxies 5000
package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/test/testenv"
)

var (
	services      = flag.Int("services", 1000, "Consul services, each routed to by the Envoy")
	instances     = flag.Int("instances", 10, "instances per service")
	switchyardBin = flag.String("switchyard-bin", "", "run this Switchyard binary instead of building this tree's")
	scheme        = flag.String("consul", "https", "how Switchyard reaches Consul: https (the watches share HTTP/2 connections) or http (plain HTTP on a default agent, which allows 200 connections per client address)")
)

// BenchmarkPropagation measures how long a Consul health change takes to
// reach Envoy: from the write to Consul until Envoy's
// cluster.<service>.membership_healthy gauge shows it. Each op flips one
// instance's check (critical, then passing on the next op) of a different
// service, round robin. The setup also reports the time to the first full
// sync and the memory of Switchyard and Envoy. Flips are measured after a
// warm-up of 20.
//
// Switchyard reaches Consul over HTTPS by default, as a production
// deployment would: one blocking query per service shares HTTP/2
// connections, so Consul's default cap of 200 connections per client
// holds. With -consul http it reaches the agent over plain HTTP: 100
// services have a query of their own, the rest are multiplexed (one query
// each on the critical and the warning checks, and a re-read of the service
// that changed). consul-req/op is Switchyard's requests to Consul per flip.
func BenchmarkPropagation(b *testing.B) {
	w := setUp(b)
	b.Run("health-flip", func(b *testing.B) {
		sum0, count0 := w.rebuilds(b)
		conv0, convN0 := w.metricSum(b, "switchyard_xds_convergence_seconds_sum"), w.metricSum(b, "switchyard_xds_convergence_seconds_count")
		req0 := w.consulRequests(b)
		var took []time.Duration
		w.writes = nil
		for range b.N {
			svc, critical := w.nextFlip()
			took = append(took, w.flip(b, svc, critical))
		}
		report(b, took)
		// Where a flip's time goes: the Consul write (the benchmark's own
		// transaction), and Switchyard's convergence (from the Watcher's
		// snapshot with the change to Envoy's ACK of it).
		percentiles(b, "write-", w.writes)
		conv, convN := w.metricSum(b, "switchyard_xds_convergence_seconds_sum"), w.metricSum(b, "switchyard_xds_convergence_seconds_count")
		if convN > convN0 {
			b.ReportMetric(1e3*(conv-conv0)/(convN-convN0), "converge-mean-ms")
		}
		b.ReportMetric((w.consulRequests(b)-req0)/float64(b.N), "consul-req/op")
		sum, count := w.rebuilds(b)
		if count > count0 {
			b.ReportMetric(1e3*(sum-sum0)/(count-count0), "rebuild-ms")
		}
		b.ReportMetric(w.readyAfter.Seconds()*1e3, "ready-ms")
		b.ReportMetric(w.syncAfter.Seconds()*1e3, "envoy-sync-ms")
		b.ReportMetric(w.memory(b)/1e6, "switchyard-MB")
		b.ReportMetric(w.envoyMemory(b)/1e6, "envoy-MB")
	})
}

// estate is what the benchmark registers in Consul: services x instances,
// and in a mesh a Connect sidecar next to every instance.
type estate struct {
	services, instances int
	mesh                bool
	// upstreams is how many services each sidecar calls (a mesh only): the
	// next ones by number, so a flip of service s reaches the sidecars of
	// the upstreams services before it.
	upstreams int
	// groups is how many edge proxy groups route to every service (not
	// in a mesh): 0 or 1 is the one group "edge".
	groups int
}

// world is the running benchmark setup.
type world struct {
	estate
	consul     *consulapi.Client
	agent      *testenv.ConsulAgent
	envoy      *testenv.Envoy
	switchyard string           // its admin address
	proc       *testenv.Process // Switchyard
	bin        string           // Switchyard's binary
	args       []string         // Switchyard's command line
	policyDir  string           // the policy files (edge groups), one a group
	listenPort int              // the edge groups' first listener port
	flips      int              // measured flips so far (nextFlip)
	// flipRange, when set, keeps the flips to services 0 to flipRange-1
	// (the ones whose stats the benchmark's Envoy keeps).
	flipRange int
	writes    []time.Duration // each flip's Consul write (flip)
	// readyAfter is Switchyard's start to /readyz 200: the first full
	// Consul sync and build. syncAfter is Envoy's start to having every
	// cluster with its endpoints.
	readyAfter, syncAfter time.Duration
}

func setUp(b *testing.B) *world {
	b.Helper()
	w, bin, xds := startControlPlane(b, estate{services: *services, instances: *instances})

	envoyAdmin := testenv.Addr(testenv.FreePort(b))
	out, err := exec.Command(bin, "bootstrap", "--node-id", "bench", "--group", "edge",
		"--xds-address", xds, "--admin-address", envoyAdmin).Output()
	if err != nil {
		b.Fatalf("switchyard bootstrap: %v", err)
	}
	// Envoy keeps the stats of the services the benchmark reads: the
	// flipped ones and the last ten (the sync check and the warm-up).
	w.flipRange = min(w.services, 200)
	var kept []string
	for s := range w.services {
		if s < w.flipRange || s >= w.services-10 {
			kept = append(kept, serviceName(s))
		}
	}
	start := time.Now()
	w.envoy = testenv.StartEnvoy(b, "envoy", statsOnly(b, out, kept), envoyAdmin)
	last := fmt.Sprintf("cluster.%s.membership_healthy", serviceName(w.services-1))
	testenv.Eventually(b, 5*time.Minute, "envoy has every cluster", func() error {
		n, err := w.envoy.Stat("cluster_manager.active_clusters")
		if err != nil {
			return err
		}
		h, err := w.envoy.Stat(last)
		if err != nil {
			return err
		}
		if n < w.services || h != w.instances {
			return fmt.Errorf("%d active clusters, %s = %d", n, last, h)
		}
		return nil
	})
	w.syncAfter = time.Since(start)

	// Warm up: the first seconds after a cold start at thousands of
	// services are slower (the heap is still growing, Envoy still settling
	// its first config); measure the steady state. Ten services at the end
	// flip down and back up.
	for i := range 20 {
		w.flip(b, w.services-1-i/2, i%2 == 0)
	}
	return w
}

// startControlPlane registers the estate in a Consul agent and starts
// Switchyard on it, over HTTPS: with a policy routing an edge group to
// every service, or for a mesh with --mesh and no policy. It returns the
// binary and Switchyard's xDS address.
func startControlPlane(b *testing.B, e estate) (w *world, bin, xds string) {
	b.Helper()
	bin = buildSwitchyard(b)
	c := testenv.Consul(b, testenv.WithHTTPS())
	w = &world{estate: e, consul: c.Client(b), agent: c}

	start := time.Now()
	w.register(b)
	if e.mesh {
		w.registerSidecars(b)
	}
	b.Logf("registered %d services x %d instances (sidecars: %t) in %s", e.services, e.instances, e.mesh, time.Since(start).Round(time.Millisecond))

	w.bin, w.policyDir = bin, b.TempDir()
	var mesh []string
	if e.mesh {
		mesh = []string{"--mesh"}
	} else {
		w.listenPort = testenv.FreePort(b)
		for g := range max(e.groups, 1) {
			w.writePolicy(b, g, 0)
		}
	}
	xds = testenv.Addr(testenv.FreePort(b))
	w.switchyard = testenv.Addr(testenv.FreePort(b))
	tls := c.TLS
	consul := []string{"--consul-address", tls.HTTPSAddr, "--consul-scheme", "https", "--consul-ca-file", tls.CAFile,
		"--consul-cert-file", tls.CertFile, "--consul-key-file", tls.KeyFile, "--consul-tls-server-name", tls.ServerName}
	switch *scheme {
	case "https":
	case "http":
		consul = []string{"--consul-address", c.HTTPAddr}
	default:
		b.Fatalf("-consul %q: want http or https", *scheme)
	}
	w.args = append(append(append([]string{"serve"}, consul...),
		"--policy", w.policyDir, "--xds-address", xds, "--admin-address", w.switchyard, "--log-level", "warn"), mesh...)
	w.startSwitchyard(b)
	return w, bin, xds
}

// startSwitchyard starts Switchyard (w.args) and waits until it is ready,
// setting readyAfter.
func (w *world) startSwitchyard(b *testing.B) {
	b.Helper()
	start := time.Now()
	w.proc = testenv.Start(b, "switchyard", nil, w.bin, w.args...)
	testenv.Eventually(b, 5*time.Minute, "switchyard ready", func() error {
		if w.proc.Exited() {
			b.Fatalf("switchyard exited:\n%s", w.proc.Output())
		}
		return get(w.switchyard, "/readyz", nil)
	})
	w.readyAfter = time.Since(start)
}

// writePolicy writes the policy file of edge group g (see groupName):
// routes to every service and, before them, added more to the first
// services. It writes a new file and renames it over the old, as an editor
// or config tool would, so Switchyard never reads half a file.
func (w *world) writePolicy(b *testing.B, g, added int) {
	b.Helper()
	name := groupName(g)
	tmp := testenv.WriteFile(b, w.policyDir, "."+name+".tmp", []byte(policy(name, w.listenPort+g, w.services, added)))
	if err := os.Rename(tmp, filepath.Join(w.policyDir, name+".yaml")); err != nil {
		b.Fatal(err)
	}
}

// groupName is the name of edge group g: "edge" alone, else edge-NN.
func groupName(g int) string {
	if g == 0 {
		return "edge"
	}
	return fmt.Sprintf("edge-%02d", g)
}

// rebuilds reads Switchyard's snapshot build histogram: seconds and count.
func (w *world) rebuilds(b *testing.B) (sum, count float64) {
	b.Helper()
	var text string
	if err := get(w.switchyard, "/metrics", &text); err != nil {
		b.Fatal(err)
	}
	return metricValue(b, text, "switchyard_snapshot_build_seconds_sum"), metricValue(b, text, "switchyard_snapshot_build_seconds_count")
}

// consulRequests is Switchyard's switchyard_consul_requests_total, summed
// over every kind and result.
func (w *world) consulRequests(b *testing.B) float64 {
	b.Helper()
	return w.metricSum(b, "switchyard_consul_requests_total")
}

// metricSum is a labelled series of Switchyard's /metrics summed over its
// labels; a series not there fails the benchmark.
func (w *world) metricSum(b *testing.B, name string) float64 {
	b.Helper()
	var text string
	if err := get(w.switchyard, "/metrics", &text); err != nil {
		b.Fatal(err)
	}
	var sum float64
	found := false
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, name+"{"); ok {
			found = true
			_, v, _ := strings.Cut(rest, "} ")
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.Fatalf("switchyard /metrics: %q: %v", line, err)
			}
			sum += f
		}
	}
	if !found {
		b.Fatalf("switchyard /metrics has no series %s", name)
	}
	return sum
}

// memory is Switchyard's resident set, in bytes.
func (w *world) memory(b *testing.B) float64 {
	b.Helper()
	var text string
	if err := get(w.switchyard, "/metrics", &text); err != nil {
		b.Fatal(err)
	}
	return metricValue(b, text, "process_resident_memory_bytes")
}

// envoyMemory is what Envoy's allocator holds, in bytes.
func (w *world) envoyMemory(b *testing.B) float64 {
	b.Helper()
	var mem struct {
		Allocated string `json:"allocated"`
	}
	out, err := w.envoy.Admin("/memory")
	if err == nil {
		err = json.Unmarshal([]byte(out), &mem)
	}
	if err != nil {
		b.Fatalf("envoy /memory: %v %s", err, out)
	}
	v, _ := strconv.ParseFloat(mem.Allocated, 64)
	return v
}

// nextFlip is the next measured flip: instance 0 of each service in
// turn, critical on the first round, passing again on the next. It counts
// across runs (Go runs a benchmark once with b.N = 1 first), so no flip
// sets the state already there.
func (w *world) nextFlip() (svc int, critical bool) {
	i := w.flips
	w.flips++
	n := w.services
	if w.flipRange > 0 {
		n = w.flipRange
	}
	return i % n, (i/n)%2 == 0
}

// flip sets instance 0 of service svc critical (or passing again) and
// returns how long Envoy took to show it.
func (w *world) flip(b *testing.B, svc int, critical bool) time.Duration {
	b.Helper()
	status, want := health(critical), w.instances
	if critical {
		want--
	}
	name := serviceName(svc)
	stat := "cluster." + name + ".membership_healthy"
	start := time.Now()
	w.setCheck(b, w.check(svc, 0, status))
	w.writes = append(w.writes, time.Since(start))
	for {
		n, err := w.envoy.Stat(stat)
		if err != nil {
			b.Fatal(err)
		}
		if n == want {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			b.Fatalf("%s = %d a minute after setting %s-0 %s; want %d", stat, n, name, status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// setCheck writes a check (its status set) to Consul.
func (w *world) setCheck(b *testing.B, c consulapi.HealthCheck) {
	b.Helper()
	w.txn(b, consulapi.TxnOps{{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: c}}})
}

// health is the check status of a flip.
func health(critical bool) string {
	if critical {
		return consulapi.HealthCritical
	}
	return consulapi.HealthPassing
}

// report sets ns/op to the mean propagation time and adds percentiles.
func report(b *testing.B, took []time.Duration) {
	b.ReportMetric(float64(mean(took).Nanoseconds()), "ns/op")
	percentiles(b, "", took)
}

// percentiles reports p50, p90, p99 and the maximum of took, in ms, each
// unit starting with prefix.
func percentiles(b *testing.B, prefix string, took []time.Duration) {
	took = slices.Sorted(slices.Values(took))
	pct := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1e3
	}
	b.ReportMetric(pct(0.5), prefix+"p50-ms")
	b.ReportMetric(pct(0.9), prefix+"p90-ms")
	b.ReportMetric(pct(0.99), prefix+"p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1e3, prefix+"max-ms")
}

func mean(took []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range took {
		sum += d
	}
	return sum / time.Duration(len(took))
}

// nodes is how many Consul nodes the instances are spread over.
const nodes = 100

// appPort is every instance's port (each has its own address).
const appPort = 8080

// register writes every service instance, each with a passing check, on
// the nodes, in transactions of 120 operations.
func (w *world) register(b *testing.B) {
	b.Helper()
	var ops consulapi.TxnOps
	flush := func() {
		if len(ops) > 0 {
			w.txn(b, ops)
			ops = nil
		}
	}
	for n := range nodes {
		ops = append(ops, &consulapi.TxnOp{Node: &consulapi.NodeTxnOp{Verb: consulapi.NodeSet,
			Node: consulapi.Node{Node: nodeName(n), Address: fmt.Sprintf("10.%d.%d.1", n/250, n%250)}}})
	}
	flush()
	for s := range w.services {
		for i := range w.instances {
			ops = append(ops,
				&consulapi.TxnOp{Service: &consulapi.ServiceTxnOp{Verb: consulapi.ServiceSet, Node: w.node(s, i),
					Service: consulapi.AgentService{ID: instanceID(s, i), Service: serviceName(s),
						Address: instanceAddress(s, i), Port: appPort}}},
				&consulapi.TxnOp{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: w.check(s, i, consulapi.HealthPassing)}})
			if len(ops) >= 120 {
				flush()
			}
		}
	}
	flush()
}

func (w *world) txn(b *testing.B, ops consulapi.TxnOps) {
	b.Helper()
	ok, resp, _, err := w.consul.Txn().Txn(ops, nil)
	if err != nil || !ok {
		b.Fatalf("consul txn: %v %+v", err, resp)
	}
}

// check is the check of instance inst of service svc.
func (e estate) check(svc, inst int, status string) consulapi.HealthCheck {
	return consulapi.HealthCheck{Node: e.node(svc, inst), CheckID: "check-" + instanceID(svc, inst),
		Name: "bench", Status: status, ServiceID: instanceID(svc, inst), ServiceName: serviceName(svc)}
}

// node is the node of instance i of service s.
func (e estate) node(s, i int) string { return nodeName((s*e.instances + i) % nodes) }

func serviceName(s int) string   { return fmt.Sprintf("svc-%05d", s) }
func instanceID(s, i int) string { return fmt.Sprintf("%s-%d", serviceName(s), i) }
func nodeName(n int) string      { return fmt.Sprintf("node-%03d", n) }

// instanceAddress is the address of instance i of service s (and of its
// sidecar, in a mesh): every endpoint is told apart by it.
func instanceAddress(s, i int) string { return fmt.Sprintf("10.%d.%d.%d", 1+s/250, s%250, 1+i) }

// policy is edge group group's policy: a listener on port routing
// /svc-NNNNN/ to each of services, after /added-NNNNN/ routes to the first
// added of them.
func policy(group string, port, services, added int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: %s\nlisteners:\n  - name: http\n    address: 127.0.0.1\n    port: %d\n    hosts:\n      - domains: [\"*\"]\n        routes:\n", group, port)
	for i := range added {
		fmt.Fprintf(&s, "          - match: { pathPrefix: %s }\n            service: %s\n", addedPrefix(i), serviceName(i%services))
	}
	for i := range services {
		fmt.Fprintf(&s, "          - match: { pathPrefix: /%s/ }\n            service: %s\n            timeout: 2s\n", serviceName(i), serviceName(i))
	}
	return s.String()
}

// addedPrefix is the path prefix of the added route i.
func addedPrefix(i int) string { return fmt.Sprintf("/added-%05d/", i) }

// statsOnly adds a stats matcher to the bootstrap so Envoy keeps only the
// gauges the benchmark reads, the healthy members of the clusters of
// services, and the cluster manager's. Envoy serves /stats on its main
// thread, which also applies xDS updates, so every poll delays the update
// it waits for. Even so, at 5,000 clusters a poll took 40 to 50 ms while
// flips ran (45 to 85 ms keeping all 5,000 membership gauges): Envoy walks
// every cluster's stats scope, kept stats or not. That is part of every
// flip's time, and why the benchmark also reports Switchyard's own
// convergence (snapshot to ACK).
func statsOnly(b *testing.B, bootstrap []byte, services []string) string {
	b.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(bootstrap, &m); err != nil {
		b.Fatal(err)
	}
	patterns := []any{map[string]any{"prefix": "cluster_manager."}}
	for _, name := range services {
		patterns = append(patterns, map[string]any{"exact": "cluster." + name + ".membership_healthy"})
	}
	m["statsConfig"] = map[string]any{"statsMatcher": map[string]any{"inclusionList": map[string]any{"patterns": patterns}}}
	out, err := yaml.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return string(out)
}

// buildSwitchyard builds the binary under test, without the race detector:
// this measures speed. With -switchyard-bin it takes that binary instead
// (another version, for a before-and-after in the same harness).
func buildSwitchyard(b *testing.B) string {
	b.Helper()
	if *switchyardBin != "" {
		return *switchyardBin
	}
	bin := filepath.Join(b.TempDir(), "switchyard")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/switchyard-io/switchyard/cmd/switchyard")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build switchyard: %v\n%s", err, out)
	}
	return bin
}

// get fetches http://addr+path, failing unless it answers 200; the body
// goes to *body when body is not nil.
func get(addr, path string, body *string) error {
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, data)
	}
	if body != nil {
		*body = string(data)
	}
	return nil
}

// metricValue reads an unlabelled series from Prometheus text. A series not
// there fails the benchmark: a renamed metric must not read as 0.
func metricValue(b *testing.B, text, name string) float64 {
	b.Helper()
	v, err := metricIn(text, name)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// metricIn is metricValue for goroutines other than the benchmark's: it
// returns its error.
func metricIn(text, name string) (float64, error) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("switchyard /metrics: %s: %w", name, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("switchyard /metrics has no series %s", name)
}

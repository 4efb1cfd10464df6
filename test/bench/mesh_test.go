package bench

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	consulapi "github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-io/switchyard/envoy"
)

var (
	sidecars      = flag.Int("sidecars", 500, "Connect sidecars in BenchmarkMeshFanout, one per service instance")
	meshServices  = flag.Int("mesh-services", 100, "services in BenchmarkMeshFanout; -sidecars is a multiple of it")
	meshUpstreams = flag.Int("mesh-upstreams", 5, "services each sidecar calls in BenchmarkMeshFanout")
	meshConsul    = flag.Bool("mesh-consul", true, "BenchmarkMeshFanout also measures Consul's own xDS server (false: Switchyard alone, without the other server's work on the same cores)")
)

// sidecarPort is every sidecar's public port; each sidecar has its
// instance's address.
const sidecarPort = 21000

// BenchmarkMeshFanout measures a health flip reaching Connect sidecars,
// served by Switchyard (serve --mesh) and, in the same run, on the same
// registrations, by Consul's own xDS server.
//
// The mesh: -mesh-services services of -sidecars/-mesh-services instances,
// each instance with an HTTP sidecar whose upstreams are the next
// -mesh-upstreams services by number. A flip of one of service s's
// instances reaches the sidecars of services s-1 ... s-upstreams: 25 of 500
// by default. Every sidecar has two xdsClients (one per server, each on its
// own connection, as Envoys share none), identified as Envoy would be
// (node.id the proxy service ID, node.cluster sidecar.mesh, node_name
// metadata for Consul's catalog lookup), asking for every cluster and then
// the endpoints of the EDS ones.
//
// Each op sets the sidecar check of instance 0 of a service critical (or
// passing again) in Consul, which takes that instance out of its callers'
// endpoints on both servers, and times, per server, until the last affected
// client saw it. ns/op is Switchyard's mean; both servers' percentiles,
// first full sync, and both processes' CPU per flip and memory are
// reported. With -mesh-consul=false, Switchyard is measured alone.
func BenchmarkMeshFanout(b *testing.B) {
	e := estate{services: *meshServices, mesh: true, upstreams: *meshUpstreams}
	if e.services < 2 || *sidecars%e.services != 0 || *sidecars/e.services > 254 || e.upstreams < 1 || e.upstreams >= e.services {
		b.Fatalf("-sidecars %d must be a multiple of -mesh-services %d (at most 254 instances a service), and -mesh-upstreams %d between 1 and %d",
			*sidecars, e.services, e.upstreams, e.services-1)
	}
	e.instances = *sidecars / e.services
	w, _, xds := startControlPlane(b, e)
	servers := []*meshServer{{name: "switchyard", xds: xds}}
	if *meshConsul {
		servers = append(servers, &meshServer{name: "consul", xds: w.agent.GRPCAddr()})
	}
	// Both processes' CPU and memory are reported either way: Consul's,
	// when it serves no sidecar, is its cost as Switchyard's source.
	procs := []struct {
		name string
		pid  int
	}{{"switchyard", w.proc.Pid()}, {"consul", w.agent.Pid()}}
	// One after the other, so each first sync is timed alone.
	for _, s := range servers {
		s.connect(b, e)
	}
	flip := func(b *testing.B, svc int, critical bool) {
		b.Helper()
		t0 := time.Now()
		w.setCheck(b, e.sidecarCheck(svc, 0, health(critical)))
		for _, s := range servers {
			s.took = append(s.took, s.waitCallers(b, e, svc, !critical, t0))
		}
	}
	for i := range 10 { // warm up
		flip(b, e.services-1-i/2, i%2 == 0)
	}

	b.Run("health-flip", func(b *testing.B) {
		for _, s := range servers {
			s.took = nil
		}
		cpu0 := make([]float64, len(procs))
		for i, p := range procs {
			cpu0[i] = procCPU(b, p.pid)
		}
		for range b.N {
			svc, critical := w.nextFlip()
			flip(b, svc, critical)
		}
		b.ReportMetric(float64(mean(servers[0].took).Nanoseconds()), "ns/op")
		for _, s := range servers {
			percentiles(b, s.name+"-", s.took)
			b.ReportMetric(s.synced.Seconds()*1e3, s.name+"-synced-ms")
		}
		for i, p := range procs {
			b.ReportMetric(1e3*(procCPU(b, p.pid)-cpu0[i])/float64(b.N), p.name+"-cpu-ms/flip")
			rss, peak := procMemory(b, p.pid)
			b.ReportMetric(rss/1e6, p.name+"-MB")
			b.ReportMetric(peak/1e6, p.name+"-peak-MB")
		}
		b.ReportMetric(float64(e.services*e.instances), "sidecars")
		b.ReportMetric(float64(e.upstreams*e.instances), "affected")
	})
}

// meshServer is an xDS server serving the sidecars, and one client per
// sidecar.
type meshServer struct {
	name, xds string
	clients   [][]*xdsClient // by service, then instance
	synced    time.Duration  // first client's start to the last client's full config
	took      []time.Duration
}

// connect starts a client per sidecar and waits until each has every
// endpoint of its upstreams.
func (s *meshServer) connect(b *testing.B, e estate) {
	b.Helper()
	start := time.Now()
	s.clients = make([][]*xdsClient, e.services)
	for svc := range e.services {
		for i := range e.instances {
			meta, err := structpb.NewStruct(map[string]any{"node_name": e.node(svc, i)})
			if err != nil {
				b.Fatal(err)
			}
			node := &corev3.Node{Id: sidecarID(svc, i), Cluster: envoy.SidecarNodeCluster, Metadata: meta}
			c, err := startXDSClient(b.Context(), dial(b, s.xds), node, true)
			if err != nil {
				b.Fatalf("%s: sidecar %s: %v", s.name, node.Id, err)
			}
			s.clients[svc] = append(s.clients[svc], c)
		}
	}
	var last time.Time
	for svc, clients := range s.clients {
		for u := 1; u <= e.upstreams; u++ {
			for i := range e.instances {
				at, err := waitAll(clients, sidecarEndpoint((svc+u)%e.services, i), true, 5*time.Minute)
				if err != nil {
					b.Fatalf("%s: first sync: %v", s.name, err)
				}
				if at.After(last) {
					last = at
				}
			}
		}
	}
	s.synced = last.Sub(start)
	b.Logf("%s: %d sidecars have their upstreams' endpoints after %s", s.name, e.services*e.instances, s.synced.Round(time.Millisecond))
}

// waitCallers waits until every sidecar calling service svc has its
// instance 0 usable (or not) and returns how long after t0 the last one
// saw it.
func (s *meshServer) waitCallers(b *testing.B, e estate, svc int, usable bool, t0 time.Time) time.Duration {
	b.Helper()
	var callers []*xdsClient
	for u := 1; u <= e.upstreams; u++ {
		callers = append(callers, s.clients[(svc-u+e.services)%e.services]...)
	}
	at, err := waitAll(callers, sidecarEndpoint(svc, 0), usable, time.Minute)
	if err != nil {
		b.Fatalf("%s: %v", s.name, err)
	}
	if at.Before(t0) {
		b.Fatalf("%s: the callers of %s had instance 0 usable=%t before the flip", s.name, serviceName(svc), usable)
	}
	return at.Sub(t0)
}

// registerSidecars registers a sidecar next to every instance, with a
// passing check, HTTP as its protocol in the registration (read by
// Switchyard) and in proxy-defaults (read by Consul). A transaction cannot
// carry a proxy's upstreams: each is one catalog write, eight at a time.
func (w *world) registerSidecars(b *testing.B) {
	b.Helper()
	_, _, err := w.consul.ConfigEntries().Set(&consulapi.ProxyConfigEntry{Kind: consulapi.ProxyDefaults, Name: consulapi.ProxyConfigGlobal,
		Config: map[string]any{"protocol": "http"}}, nil)
	if err != nil {
		b.Fatalf("proxy-defaults: %v", err)
	}
	var g errgroup.Group
	g.SetLimit(8)
	for s := range w.services {
		for i := range w.instances {
			g.Go(func() error {
				if _, err := w.consul.Catalog().Register(w.sidecar(s, i), nil); err != nil {
					return fmt.Errorf("register %s: %w", sidecarID(s, i), err)
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// sidecar is the registration of the sidecar of instance i of service s.
func (e estate) sidecar(s, i int) *consulapi.CatalogRegistration {
	var ups []consulapi.Upstream
	for u := 1; u <= e.upstreams; u++ {
		ups = append(ups, consulapi.Upstream{DestinationType: consulapi.UpstreamDestTypeService,
			DestinationName: serviceName((s + u) % e.services), LocalBindPort: 9000 + u})
	}
	check := e.sidecarCheck(s, i, consulapi.HealthPassing)
	return &consulapi.CatalogRegistration{Node: e.node(s, i), SkipNodeUpdate: true,
		Service: &consulapi.AgentService{Kind: consulapi.ServiceKindConnectProxy, ID: sidecarID(s, i), Service: check.ServiceName,
			Address: instanceAddress(s, i), Port: sidecarPort,
			Proxy: &consulapi.AgentServiceConnectProxyConfig{DestinationServiceName: serviceName(s), DestinationServiceID: instanceID(s, i),
				LocalServiceAddress: "127.0.0.1", LocalServicePort: appPort, Config: map[string]any{"protocol": "http"}, Upstreams: ups}},
		Checks: consulapi.HealthChecks{&check},
	}
}

// sidecarCheck is the check of the sidecar of instance inst of service svc.
func (e estate) sidecarCheck(svc, inst int, status string) consulapi.HealthCheck {
	return consulapi.HealthCheck{Node: e.node(svc, inst), CheckID: "check-" + sidecarID(svc, inst), Name: "sidecar",
		Status: status, ServiceID: sidecarID(svc, inst), ServiceName: serviceName(svc) + "-sidecar-proxy"}
}

func sidecarID(s, i int) string { return instanceID(s, i) + "-sidecar-proxy" }

// sidecarEndpoint is the endpoint callers have for the sidecar of
// instance i of service s.
func sidecarEndpoint(s, i int) string {
	return net.JoinHostPort(instanceAddress(s, i), strconv.Itoa(sidecarPort))
}

// procCPU is a process's user and system CPU time so far, in seconds.
func procCPU(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name (which may hold spaces), from
	// field 3 on: utime and stime are fields 14 and 15, in clock ticks
	// (100 a second on Linux).
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return (utime + stime) / 100
}

// procMemory is a process's resident set now and at its peak, in bytes.
func procMemory(b *testing.B, pid int) (rss, peak float64) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	kB := func(field string) float64 {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				if err != nil {
					b.Fatalf("/proc/%d/status %s: %v", pid, field, err)
				}
				return n * 1024
			}
		}
		b.Fatalf("/proc/%d/status has no %s", pid, field)
		return 0
	}
	return kB("VmRSS"), kB("VmHWM")
}

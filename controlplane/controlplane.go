// Package controlplane runs Switchyard: it watches Consul and the policy
// files, rebuilds xDS snapshots when they change, and serves them to Envoy.
//
// Data flow:
//
//  1. registry.Watcher publishes a Consul snapshot  --\
//  2. the policy watcher loads a valid policy set   ---+--> inputs, change signal
//  3. debounce batches signals (holdoff, max delay)
//  4. the publisher builds: translator.Translate -> envoy.Builder ->
//     content-hash versions, Consistent() -> xdscache.Cache.SetSnapshot per
//     proxy group (a group that fails keeps its last good snapshot); the
//     cache works out what changed once per group and marshals it once
//     for every stream
//  5. the gRPC xDS server (ADS, SotW and delta) streams them to Envoys,
//     keyed by node.cluster; proxies tracks the streams: who is
//     connected, what each was sent, accepted or rejected
//
// Each part has its own state and lock: inputs (inputs.go), publisher
// (publisher.go), proxies (proxies.go), the policy watcher
// (policywatch.go); Server only wires them. Only the publisher changes the
// snapshot cache. Lock order: Server.wantMu, then publisher.pubMu, then
// publisher.mu, then proxies.mu (ClearSnapshot runs under proxies.mu,
// through proxies.whileIdle); proxies never calls the publisher while
// holding its own lock.
//
// It is the only package that starts goroutines (besides the registry
// watcher's own, which end with it, and LogWriter's), all under one
// errgroup tied to the context given to Run.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
	"github.com/switchyard-io/switchyard/xdscache"
)

// Config is what Run needs. Zero values take the documented defaults.
type Config struct {
	// XDSAddress is where Envoys connect for xDS (gRPC), host:port.
	XDSAddress string
	// XDSTLS serves xDS over TLS (mutual TLS with a client CA) when set.
	// xDS carries the private keys of the listeners' certificates, so any
	// xDS address off loopback wants it.
	XDSTLS TLSFiles
	// AdminAddress serves /healthz, /readyz, /metrics and /debug/config.
	// Keep it on loopback: debug output shows the whole config.
	AdminAddress string
	// PolicyPaths are policy files or directories, watched for changes.
	PolicyPaths []string
	// Mesh serves Consul Connect sidecars (Envoys bootstrapped with
	// `switchyard bootstrap --sidecar-for`) from Consul's registrations,
	// health, CA and intentions. Consul must have Connect enabled.
	Mesh bool
	// EdgeIdentities, when not empty, are the only mesh identities proxy
	// groups may route through the mesh with (policy.Options).
	EdgeIdentities []string
	// Consul is the registry watcher's configuration.
	Consul registry.Config
	// Holdoff is how long changes must be quiet before a rebuild (default
	// 10ms); MaxDelay caps the wait since the batch's first change
	// (default 50ms). A change after MaxDelay without a rebuild is rebuilt
	// at once.
	Holdoff  time.Duration
	MaxDelay time.Duration
	// ShutdownGrace bounds the graceful stop of open xDS streams (default 5s).
	ShutdownGrace time.Duration
	// Limits bound what xDS clients and admin clients can hold open.
	Limits Limits
	// LogDropped, when set, reports the log lines dropped so far (see
	// LogWriter), for the metric switchyard_log_dropped_lines_total.
	LogDropped func() uint64
	// AdminTokenFile, when set, names a file holding a bearer token that
	// every admin request except /healthz and /readyz must present.
	AdminTokenFile string
	// StateDir, when set, keeps Consul's last view there; a start that has
	// no answer from Consul within StateRestoreAfter (default 10s) serves
	// that view until Consul answers. It also keeps the policy files the
	// served proxy groups were defined by, so that a start serves again
	// the groups removed from the policy while Envoys used them, for
	// those Envoys to reconnect (see Linger).
	StateDir          string
	StateRestoreAfter time.Duration
	// StateMaxAge: a saved view older than this is not served (default
	// 72h): its instances are likely long gone.
	StateMaxAge time.Duration
	// Linger is how long a proxy group removed from the policy (or a
	// sidecar gone from Consul) stays served after its last Envoy
	// disconnected, for an Envoy that reconnects to find it, and how
	// long, after a start, the groups restored from StateDir wait for
	// their Envoys (default 2m).
	Linger time.Duration
}

// Limits bound connections and streams. Zero values take the defaults.
type Limits struct {
	// XDSMaxConnections caps open xDS connections (default 20,000); past it
	// new connections wait in the kernel's accept queue.
	XDSMaxConnections int
	// XDSMaxStreams caps concurrent streams on one xDS connection (default
	// 100). An Envoy opens one ADS stream per connection.
	XDSMaxStreams uint32
	// XDSMaxConnectionAge closes an xDS connection after this long (grpc
	// adds 10% jitter), after XDSMaxConnectionAgeGrace for its streams to
	// move: Envoy reconnects at once and resumes, and its client
	// certificate is verified again (expiry, the current client CA).
	// Negative: never (default 1h; grace default 30s).
	XDSMaxConnectionAge      time.Duration
	XDSMaxConnectionAgeGrace time.Duration
	// AdminMaxConnections caps open admin connections (default 64).
	AdminMaxConnections int
}

// Defaults.
const (
	DefaultXDSAddress    = "127.0.0.1:18000"
	DefaultAdminAddress  = "127.0.0.1:19100"
	DefaultHoldoff       = 10 * time.Millisecond
	DefaultMaxDelay      = 50 * time.Millisecond
	DefaultShutdownGrace = 5 * time.Second
	DefaultLinger        = 2 * time.Minute

	DefaultXDSMaxConnections        = 20_000
	DefaultXDSMaxStreams            = 100
	DefaultXDSMaxConnectionAge      = time.Hour
	DefaultXDSMaxConnectionAgeGrace = 30 * time.Second
	DefaultAdminMaxConnections      = 64
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.XDSAddress == "" {
		out.XDSAddress = DefaultXDSAddress
	}
	if out.AdminAddress == "" {
		out.AdminAddress = DefaultAdminAddress
	}
	if out.Holdoff <= 0 {
		out.Holdoff = DefaultHoldoff
	}
	if out.StateRestoreAfter <= 0 {
		out.StateRestoreAfter = DefaultStateRestoreAfter
	}
	if out.StateMaxAge <= 0 {
		out.StateMaxAge = DefaultStateMaxAge
	}
	if out.Linger <= 0 {
		out.Linger = DefaultLinger
	}
	if out.MaxDelay <= 0 {
		out.MaxDelay = DefaultMaxDelay
	}
	if out.MaxDelay < out.Holdoff {
		out.MaxDelay = out.Holdoff
	}
	if out.ShutdownGrace <= 0 {
		out.ShutdownGrace = DefaultShutdownGrace
	}
	l := &out.Limits
	if l.XDSMaxConnections <= 0 {
		l.XDSMaxConnections = DefaultXDSMaxConnections
	}
	if l.XDSMaxStreams == 0 {
		l.XDSMaxStreams = DefaultXDSMaxStreams
	}
	if l.XDSMaxConnectionAge == 0 {
		l.XDSMaxConnectionAge = DefaultXDSMaxConnectionAge
	}
	if l.XDSMaxConnectionAgeGrace <= 0 {
		l.XDSMaxConnectionAgeGrace = DefaultXDSMaxConnectionAgeGrace
	}
	if l.AdminMaxConnections <= 0 {
		l.AdminMaxConnections = DefaultAdminMaxConnections
	}
	return out
}

// Server is one Switchyard instance. It wires four parts, each with its
// own state and lock: the inputs (Consul and policy), the publisher
// (builds and the snapshot cache), the proxies (xDS streams) and the
// policy watcher (policywatch.go).
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cache   *xdscache.Cache
	watcher *registry.Watcher
	mesh    *registry.MeshWatcher // nil unless Config.Mesh
	changed chan struct{}
	reload  chan struct{} // Reload's requests to the policy watcher
	xdsTLS  *tls.Config   // nil: plaintext xDS
	// adminToken is the bearer token admin requests must present; nil
	// when the admin API is open.
	adminToken []byte

	in  *inputs
	pub *publisher
	px  *proxies

	// state keeps Consul's last view on disk (Config.StateDir), keeper
	// the served groups' policy files; nil when off.
	state  *stateStore
	keeper *policyKeeper

	wantMu sync.Mutex // orders updateWant calls
}

// New checks the configuration and prepares a server; Run starts it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if len(cfg.PolicyPaths) == 0 {
		return nil, errors.New("no policy paths: give at least one policy file or directory")
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		metrics: newMetrics(),
		changed: make(chan struct{}, 1),
		reload:  make(chan struct{}, 1),
		in:      &inputs{meshOn: cfg.Mesh},
	}
	// ADS: a state-of-the-world request for endpoints or routes is
	// answered once it names them all, as go-control-plane's SnapshotCache
	// did; a change goes out in envoy.Types' order.
	s.cache = xdscache.New(groupHash{}, servedTypeURLs, true)
	s.pub = newPublisher(log, s.metrics, s.cache)
	s.px = newProxies(log, s.metrics, s.pub, s.changed, cfg.XDSTLS.BindGroups)
	s.px.linger = cfg.Linger
	s.pub.proxies = s.px
	if cfg.LogDropped != nil {
		s.metrics.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchyard_log_dropped_lines_total",
			Help: "Log lines dropped because stderr did not keep up (logging never blocks serving).",
		}, func() float64 { return float64(cfg.LogDropped()) }))
	}
	w, err := registry.NewWatcher(cfg.Consul, log.With("component", "registry"), registry.Hooks{
		WatchError: func(op string, _ error) { s.metrics.consulWatchErrors.WithLabelValues(watchKind(op)).Inc() },
		FailStatic: func(string, string) { s.metrics.consulFailStatic.Inc() },
		Request:    s.metrics.consulRequest,
		Watches:    s.metrics.consulWatch,
	})
	if err != nil {
		return nil, fmt.Errorf("consul: %w", err)
	}
	s.watcher = w
	if cfg.StateDir != "" {
		if s.state, err = newStateStore(cfg.StateDir, consulOrigin(cfg.Consul)); err != nil {
			return nil, err
		}
		s.keeper = newPolicyKeeper(cfg.StateDir, s.policyOptions())
	}
	if cfg.Mesh && !cfg.XDSTLS.BindGroups && !loopbackAddress(cfg.XDSAddress) {
		return nil, fmt.Errorf("mesh.enabled: xds.address %s is off loopback, and every sidecar's private key is served over xDS: serve xDS over mutual TLS with xds.client-cert-groups (each sidecar's client certificate naming %s), or keep xDS on loopback",
			cfg.XDSAddress, SidecarCertName("<proxy service ID>"))
	}
	if cfg.Mesh {
		s.mesh, err = registry.NewMeshWatcher(cfg.Consul, log.With("component", "mesh"), registry.Hooks{
			WatchError:     func(op string, _ error) { s.metrics.consulWatchErrors.WithLabelValues(registry.KindMesh).Inc() },
			FailStatic:     func(string, string) { s.metrics.consulFailStatic.Inc() },
			Request:        s.metrics.consulRequest,
			Watches:        s.metrics.consulWatch,
			SidecarProblem: func(string, string) { s.metrics.sidecarProblems.Inc() },
		})
		if err != nil {
			return nil, fmt.Errorf("consul (mesh): %w", err)
		}
	}
	if err := cfg.XDSTLS.check(); err != nil {
		return nil, err
	}
	if cfg.XDSTLS.Enabled() {
		if s.xdsTLS, err = newTLSConfig(cfg.XDSTLS, log.With("component", "xds")); err != nil {
			return nil, err
		}
	}
	if cfg.AdminTokenFile != "" {
		if s.adminToken, err = readToken(cfg.AdminTokenFile); err != nil {
			return nil, fmt.Errorf("admin token file: %w", err)
		}
	}
	// Watch no service until a valid policy says which: before that the
	// registry would watch the whole catalog, one connection per service.
	w.Want(nil)
	return s, nil
}

// Reload re-reads the policy files, and the certificate, key and CA files
// they name, now (serve calls it on SIGHUP): as a file change does, a valid
// set replaces the served one and an invalid one is reported while the last
// good one keeps serving. The xDS server's own TLS files are re-read on
// the next handshake after they change, without it. Safe to call at any
// time; calls while a reload is waiting merge.
func (s *Server) Reload() { notify(s.reload) }

// loopbackAddress reports whether a host:port names a loopback address
// ("localhost" included).
func loopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// watchKind turns a registry operation ("services", "health:web",
// "health-state", "read:web") into a bounded metric label: its kind.
func watchKind(op string) string {
	kind, _, _ := strings.Cut(op, ":")
	switch kind {
	case registry.KindServices, registry.KindHealthState, registry.KindRead:
		return kind
	}
	return registry.KindHealth
}

// Run serves until ctx is cancelled, then stops gracefully: open xDS
// streams get ShutdownGrace to finish, and Envoys keep their last config.
func (s *Server) Run(ctx context.Context) error {
	xdsLis, err := net.Listen("tcp", s.cfg.XDSAddress)
	if err != nil {
		return fmt.Errorf("xds listener: %w", err)
	}
	adminLis, err := net.Listen("tcp", s.cfg.AdminAddress)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	xdsLis = netutil.LimitListener(xdsLis, s.cfg.Limits.XDSMaxConnections)
	adminLis = netutil.LimitListener(adminLis, s.cfg.Limits.AdminMaxConnections)
	scheme := s.cfg.Consul.Scheme
	if scheme == "" {
		scheme = "http"
	}
	xdsSecurity := "plaintext"
	switch {
	case s.cfg.XDSTLS.ClientCAFile != "":
		xdsSecurity = "mutual TLS"
	case s.cfg.XDSTLS.Enabled():
		xdsSecurity = "TLS"
	}
	if s.mesh != nil && !s.cfg.XDSTLS.BindGroups {
		s.log.Warn("the mesh is on and xDS is not bound to client certificates: any local process can ask for any sidecar's config, private key included; use xds.client-cert-groups with mutual TLS")
	}
	if s.adminToken == nil && !isLoopback(adminLis.Addr()) {
		s.log.Warn("the admin API listens off loopback without protection: anyone who reaches it sees the whole config and can profile Switchyard; set admin.token-file or bind it to loopback",
			"admin", adminLis.Addr().String())
	}
	s.log.Info("switchyard starting", "xds", xdsLis.Addr().String(), "xds_security", xdsSecurity, "admin", adminLis.Addr().String(),
		"consul", scheme+"://"+s.cfg.Consul.Address, "policy", s.cfg.PolicyPaths)

	grpcServer := s.newGRPCServer(ctx)
	admin := s.newAdminServer()
	if s.keeper != nil {
		s.restorePolicy() // before the first build, which it seeds
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return s.watcher.Run(ctx, func(snap *registry.Snapshot) {
			first, replacedSaved := s.in.setConsul(snap)
			if first {
				s.log.Info("consul synced", "services", snap.Len())
			}
			if replacedSaved {
				s.metrics.consulStaleState.Set(0)
				s.log.Info("consul answered: its view replaces the saved one", "services", snap.Len())
			}
			if s.state != nil {
				s.state.save(snap)
			}
			notify(s.changed)
		})
	})
	if s.state != nil {
		g.Go(func() error {
			s.state.run(ctx, func(err error) {
				s.log.Error("cannot save Consul's view in state.dir; the previous one stays", "err", err)
			})
			return nil
		})
		g.Go(func() error {
			s.restoreAfter(ctx)
			return nil
		})
		g.Go(func() error {
			s.keeper.run(ctx, s.logKeepError)
			return nil
		})
	}
	if s.mesh != nil {
		g.Go(func() error {
			err := s.mesh.Run(ctx, func(snap *registry.MeshSnapshot) {
				s.in.setMesh(snap)
				notify(s.changed)
			})
			if err != nil {
				return fmt.Errorf("mesh.enabled (--mesh) needs Consul Connect: %w; or turn the mesh off", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		return s.watchPolicy(ctx)
	})
	g.Go(func() error {
		debounce(ctx, s.changed, s.cfg.Holdoff, s.cfg.MaxDelay, s.rebuild)
		return nil
	})
	g.Go(func() error {
		if err := grpcServer.Serve(xdsLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("xds server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := admin.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		s.log.Info("switchyard stopping")
		stopped := make(chan struct{})
		go func() {
			grpcServer.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(s.cfg.ShutdownGrace):
			grpcServer.Stop()
		}
		shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
		defer cancel()
		return admin.Shutdown(shutdownCtx)
	})
	err = g.Wait()
	s.log.Info("switchyard stopped")
	return err
}

// policyOptions are the options every policy set is loaded with: the
// files, and the copy of them kept in state.dir.
func (s *Server) policyOptions() policy.Options {
	return policy.Options{Mesh: s.cfg.Mesh, EdgeIdentities: s.cfg.EdgeIdentities}
}

// logKeepError logs a failure to keep the policy in state.dir, if any.
func (s *Server) logKeepError(err error) {
	if err != nil {
		s.log.Error("cannot keep the policy in state.dir; the previous copy stays", "err", err)
	}
}

// consulOrigin names the Consul a saved view is of: its address and
// datacenter (never the token).
func consulOrigin(c registry.Config) string {
	scheme := c.Scheme
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + c.Address + " datacenter=" + c.Datacenter
}

// restoreAfter serves Consul's saved view when Consul has given none
// within StateRestoreAfter of the start: Envoys that connect get the last
// known endpoints, not nothing. The first answer from Consul replaces it.
func (s *Server) restoreAfter(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(s.cfg.StateRestoreAfter):
	}
	snap, at, err := s.state.load(s.cfg.StateMaxAge)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case err != nil:
		s.log.Error("consul has not answered, and its saved view is not usable", "err", err)
		return
	}
	// The gauge is set under the same decision as the view (inputs.mu
	// orders restoreConsul and setConsul), so a Consul answer racing this
	// never leaves it at 1.
	if !s.in.restoreConsulThen(snap, func() { s.metrics.consulStaleState.Set(1) }) {
		return // Consul answered meanwhile
	}
	s.log.Warn("consul has not answered since the start: serving its last view from state.dir until it does",
		"saved_at", at.Format(time.RFC3339), "age", time.Since(at).Round(time.Second), "services", snap.Len(),
		"waited", s.cfg.StateRestoreAfter)
	notify(s.changed)
}

// rebuild translates the current inputs and publishes every group's
// snapshot. Until Consul has synced once and a valid policy has loaded it
// does nothing: serving a partial config because an input is missing would
// take traffic down.
func (s *Server) rebuild() {
	s.pub.changeAt = s.in.takeChanged()
	// A policy that waited for Consul (coverWait) changed when it was
	// loaded, not when it is promoted: convergence counts from then.
	pendingAt := s.in.pendingSince()
	consul, set, promoted, missing := s.in.promote()
	if promoted && !pendingAt.IsZero() && pendingAt.Before(s.pub.changeAt) {
		s.pub.changeAt = pendingAt
	}
	if promoted {
		if len(missing) > 0 {
			s.log.Warn("new policy applied before Consul answered for all it needs; the routes that need what is missing answer 503 until it arrives",
				"missing", missing)
		}
		// Stop watching services only the previous policy routed to.
		s.updateWant()
	}
	mesh, meshPending := s.in.meshSnapshot()
	if consul != nil && set != nil {
		served, retentionChanged := s.pub.publish(consul, set, mesh, meshPending)
		if promoted || retentionChanged {
			s.updateWant() // now without the services of groups no longer served
		}
		if s.keeper != nil {
			s.logKeepError(s.keeper.built(set, served))
		}
	}
	if mesh != nil {
		s.pub.publishMesh(mesh, set)
	}
}

// updateWant tells the registry to watch the services of the served and
// the pending policy, and of groups retained after leaving it. wantMu
// orders the calls, so the last Want always reflects the newest state (the
// registry applies the latest call).
func (s *Server) updateWant() {
	s.wantMu.Lock()
	defer s.wantMu.Unlock()
	current, pending := s.in.policies()
	// One read of the served set for both watchers: a publish between two
	// reads would tell them about different sets.
	sets := []*policy.Set{current, pending, s.pub.served()}
	var names []string
	for _, set := range sets {
		if set != nil {
			names = append(names, translator.Services(set)...)
		}
	}
	s.watcher.Want(names)
	if s.mesh != nil {
		// Destinations no sidecar names as an upstream: the targets of
		// Service mesh splits, and the services proxy groups reach
		// through the mesh; and the groups' own mesh identities.
		var dests, leaves []string
		for _, set := range sets {
			if set == nil {
				continue
			}
			for _, sv := range set.Services {
				if sv.Mesh != nil {
					for _, w := range sv.Mesh.Split {
						dests = append(dests, w.Service)
					}
				}
			}
			dests = append(dests, translator.MeshDestinations(set)...)
			leaves = append(leaves, translator.MeshIdentities(set)...)
		}
		s.mesh.WantDestinations(dests)
		s.mesh.WantLeaves(leaves)
	}
}

// groupHash keys the snapshot cache by proxy group: every Envoy started
// with the same node.cluster shares one snapshot.
type groupHash struct{}

func (groupHash) ID(node *corev3.Node) string {
	return proxyKey(node)
}

// proxyKey is what an Envoy is served: its proxy group (node.cluster) or,
// for a Connect sidecar (node.cluster envoy.SidecarNodeCluster), its own
// snapshot, keyed "sidecar:<proxy service ID>" (a group name cannot hold a
// colon, so the two never meet). The rate limit service (no node.cluster)
// is served the rate limits of every group (ratelimit.go).
func proxyKey(node *corev3.Node) string {
	switch {
	case node.GetCluster() == envoy.SidecarNodeCluster:
		return sidecarKey(node.GetId())
	case isRateLimitService(node.GetCluster()):
		return rateLimitKey
	}
	return node.GetCluster()
}

// sidecarKey is a sidecar's snapshot key.
func sidecarKey(proxyID string) string { return "sidecar:" + proxyID }

// Package controlplane runs Switchyard: it watches Consul and the policy
// files, rebuilds xDS snapshots when they change, and serves them to Envoy.
//
// Data flow:
//
//  1. registry.Watcher publishes a Consul snapshot  --\
//  2. the policy watcher loads a valid policy set   ---+--> change signal
//  3. debounce batches signals (holdoff, max delay)
//  4. build: translator.Translate -> envoy.Build -> content-hash versions,
//     Consistent() -> SnapshotCache.SetSnapshot per proxy group
//  5. the gRPC xDS server (ADS, SotW and delta) streams them to Envoys,
//     keyed by node.cluster; callbacks count pushes and log NACKs
//
// It is the only package that starts goroutines (besides the registry
// watcher's own, which end with it), all under one errgroup tied to the
// context given to Run.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator"
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
	// Consul is the registry watcher's configuration.
	Consul registry.Config
	// Holdoff is how long a burst of changes must be quiet before a
	// rebuild (default 10ms); MaxDelay caps the wait since the burst's
	// first change (default 50ms).
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

// Server is one Switchyard instance.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cache   cache.SnapshotCache
	watcher *registry.Watcher
	changed chan struct{}
	reload  chan struct{} // Reload's requests to the policy watcher
	xdsTLS  *tls.Config   // nil: plaintext xDS
	// adminToken is the bearer token admin requests must present; nil
	// when the admin API is open.
	adminToken []byte

	wantMu sync.Mutex // orders updateWant calls
	// publishMu orders changes to the snapshot cache (SetSnapshot,
	// ClearSnapshot) with the groups map. Taken before mu, never after.
	publishMu sync.Mutex
	mu        sync.Mutex
	consul    *registry.Snapshot // latest Consul state; nil until the first full sync
	policy    *policy.Set        // the policy set being served; nil until one is
	// pending is a newer valid policy set, waiting (since pendingAt) for the
	// registry to sync the services it routes to; nil when there is none.
	pending   *policy.Set
	pendingAt time.Time
	groups    map[string]*groupSnapshot
	// builders remember each group's last build, so a change rebuilds only
	// what it touched. Used by rebuild alone (one goroutine: the debounce
	// loop), so not under mu.
	builders map[string]*envoy.Builder
	// buildFailures is each group's build error while it fails to build
	// (rebuild's goroutine only, like builders).
	buildFailures map[string]string
	// failing names the groups whose latest build failed (under mu).
	failing []string
	ready   bool
	warned  map[string]bool       // translation warnings already logged
	streams map[streamKey]*stream // open xDS streams
	// certNames is what each stream's client certificate names
	// (XDSTLS.BindGroups).
	certNames map[streamKey][]string
	// retained are proxy groups removed from the policy while Envoys still
	// use them: they keep being served from lastServed (see retain).
	retained map[string]bool
	// lastServed is the policy set, retained groups included, of the last
	// successful build.
	lastServed *policy.Set
	// groupStreams counts the open streams of each group (those that sent
	// a request); lastLeft is when the last stream of a served group
	// closed, while it has none. See inUse.
	groupStreams map[string]int
	lastLeft     map[string]time.Time
	retainLinger time.Duration
}

// retainLinger is how long a group removed from the policy stays served
// after its last Envoy disconnected, in case it reconnects.
const retainLinger = 2 * time.Minute

// New checks the configuration and prepares a server; Run starts it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if len(cfg.PolicyPaths) == 0 {
		return nil, errors.New("no policy paths: give at least one policy file or directory")
	}
	s := &Server{
		cfg:           cfg,
		log:           log,
		metrics:       newMetrics(),
		changed:       make(chan struct{}, 1),
		reload:        make(chan struct{}, 1),
		groups:        map[string]*groupSnapshot{},
		builders:      map[string]*envoy.Builder{},
		buildFailures: map[string]string{},
		warned:        map[string]bool{},
		streams:       map[streamKey]*stream{},
		certNames:     map[streamKey][]string{},
		retained:      map[string]bool{},
		groupStreams:  map[string]int{},
		lastLeft:      map[string]time.Time{},
		retainLinger:  retainLinger,
	}
	if cfg.LogDropped != nil {
		s.metrics.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "switchyard_log_dropped_lines_total",
			Help: "Log lines dropped because stderr did not keep up (logging never blocks serving).",
		}, func() float64 { return float64(cfg.LogDropped()) }))
	}
	w, err := registry.NewWatcher(cfg.Consul, log.With("component", "registry"), registry.Hooks{
		WatchError: func(op string, _ error) { s.metrics.consulWatchErrors.WithLabelValues(watchKind(op)).Inc() },
		FailStatic: func(string, string) { s.metrics.consulFailStatic.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("consul: %w", err)
	}
	s.watcher = w
	s.cache = cache.NewSnapshotCache(true, groupHash{}, nil)
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

// watchKind turns a registry operation ("services", "health:web") into a
// bounded metric label.
func watchKind(op string) string {
	if op == "services" {
		return op
	}
	return "health"
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
	if s.adminToken == nil && !isLoopback(adminLis.Addr()) {
		s.log.Warn("the admin API listens off loopback without protection: anyone who reaches it sees the whole config and can profile Switchyard; set admin.token-file or bind it to loopback",
			"admin", adminLis.Addr().String())
	}
	s.log.Info("switchyard starting", "xds", xdsLis.Addr().String(), "xds_security", xdsSecurity, "admin", adminLis.Addr().String(),
		"consul", scheme+"://"+s.cfg.Consul.Address, "policy", s.cfg.PolicyPaths)

	grpcServer := s.newGRPCServer(ctx)
	admin := s.newAdminServer()

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return s.watcher.Run(ctx, func(snap *registry.Snapshot) {
			s.mu.Lock()
			first := s.consul == nil
			s.consul = snap
			s.mu.Unlock()
			if first {
				s.log.Info("consul synced", "services", snap.Len())
			}
			notify(s.changed)
		})
	})
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

// rebuild translates the current inputs and publishes every group's
// snapshot. Until Consul has synced once and a valid policy has loaded it
// does nothing: serving a partial config because an input is missing would
// take traffic down.
func (s *Server) rebuild() {
	consul, set, promoted, missing := s.promotePending()
	if promoted {
		if len(missing) > 0 {
			s.log.Warn("new policy applied without Consul data for some services; their routes answer 503 until it arrives",
				"services", missing)
		}
		// Stop watching services only the previous policy routed to.
		s.updateWant()
	}
	if consul == nil || set == nil {
		return
	}
	start := time.Now()
	served, retentionChanged := s.retain(set)
	groups, failed, diags := build(consul, served, s.builders)
	s.metrics.snapshotBuild.Observe(time.Since(start).Seconds())
	s.reportBuildFailures(failed, served)
	if len(groups) == 0 && len(failed) > 0 {
		// Nothing built: every last good snapshot stays, and readiness
		// stays as it was (/readyz names the failing groups).
		s.mu.Lock()
		s.lastServed = served
		s.mu.Unlock()
		return
	}
	s.logWarnings(diags)
	s.mu.Lock()
	s.lastServed = served
	s.mu.Unlock()
	if promoted || retentionChanged {
		s.updateWant() // now without the services of groups no longer served
	}
	changed := 0
	for _, gs := range groups {
		s.mu.Lock()
		old := s.groups[gs.group]
		s.mu.Unlock()
		if old != nil && sameVersions(old, gs) {
			// Same config; keep the new one anyway, for its policy sources
			// (an edit may have moved lines without changing what is served).
			s.mu.Lock()
			s.groups[gs.group] = gs
			s.mu.Unlock()
			continue
		}
		s.publishMu.Lock()
		if err := s.cache.SetSnapshot(context.Background(), gs.group, gs.snapshot); err != nil {
			s.publishMu.Unlock()
			s.metrics.snapshotErrors.Inc()
			s.log.Error("set snapshot failed; the last good config keeps serving", "group", gs.group, "err", err)
			continue
		}
		changed++
		s.mu.Lock()
		s.groups[gs.group] = gs
		s.mu.Unlock()
		s.publishMu.Unlock()
		s.log.Debug("snapshot published", "group", gs.group, "versions", gs.versions)
	}
	s.mu.Lock()
	if !s.ready {
		s.ready = true
		s.metrics.ready.Set(1)
		s.log.Info("ready: serving xDS", "groups", len(groups))
	}
	s.mu.Unlock()
	if changed > 0 {
		s.log.Info("config updated", "groups_changed", changed, "build_time", time.Since(start).Round(time.Microsecond))
	}
}

// reportBuildFailures logs and counts groups that failed to build. Each
// keeps its last good snapshot (its Envoys keep running it) while every
// other group goes on following Consul and the policy. A failure is logged
// when it starts or changes, and once more when the group builds again, not
// on every rebuild.
func (s *Server) reportBuildFailures(failed map[string]error, served *policy.Set) {
	s.metrics.failingGroups.Set(float64(len(failed)))
	names := slices.Sorted(maps.Keys(failed))
	s.mu.Lock()
	s.failing = names
	s.mu.Unlock()
	for group, err := range failed {
		s.metrics.snapshotErrors.Inc()
		if msg := err.Error(); s.buildFailures[group] != msg {
			s.buildFailures[group] = msg
			s.log.Error("proxy group failed to build; its Envoys keep its last good config, other groups are not affected",
				"group", group, "err", msg)
		}
	}
	for group := range s.buildFailures {
		if _, still := failed[group]; !still {
			delete(s.buildFailures, group)
			if _, inPolicy := served.Group(group); inPolicy {
				s.log.Info("proxy group builds again", "group", group)
			}
		}
	}
}

// coverWait bounds how long a new policy waits for the registry to sync
// the services it newly routes to before it is applied anyway.
const coverWait = 2 * time.Second

// promotePending makes the pending policy the served one once the registry
// snapshot covers every service it routes to, or once coverWait has passed:
// applied earlier, routes to a service that exists in Consul would answer
// 503 until its first answer arrived. Until then the current policy keeps
// serving, and keeps following Consul. It returns the inputs to build from,
// whether a promotion happened, and the services still uncovered then.
func (s *Server) promotePending() (consul *registry.Snapshot, set *policy.Set, promoted bool, missing []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	consul, set = s.consul, s.policy
	if s.pending == nil || consul == nil {
		return consul, set, false, nil
	}
	missing = uncovered(consul, s.pending)
	if len(missing) > 0 && time.Since(s.pendingAt) < coverWait {
		return consul, set, false, nil
	}
	s.policy, s.pending = s.pending, nil
	return consul, s.policy, true, missing
}

// updateWant tells the registry to watch the services of the served and
// the pending policy. wantMu orders the calls, so the last Want always
// reflects the newest state (the registry applies the latest call).
func (s *Server) updateWant() {
	s.wantMu.Lock()
	defer s.wantMu.Unlock()
	s.mu.Lock()
	current, pending := s.policy, s.pending
	s.mu.Unlock()
	var names []string
	s.mu.Lock()
	served := s.lastServed // retained groups' services too
	s.mu.Unlock()
	for _, set := range []*policy.Set{current, pending, served} {
		if set != nil {
			names = append(names, translator.Services(set)...)
		}
	}
	s.watcher.Want(names)
}

// policies returns the served policy set and the latest valid one (the
// pending set if there is one).
func (s *Server) policies() (current, latest *policy.Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil {
		return s.policy, s.pending
	}
	return s.policy, s.policy
}

// uncovered lists the services set routes to that snapshot does not cover
// yet.
func uncovered(snap *registry.Snapshot, set *policy.Set) []string {
	var out []string
	for _, name := range translator.Services(set) {
		if !snap.Covers(name) {
			out = append(out, name)
		}
	}
	return out
}

// retain decides what happens to proxy groups that left the policy since
// the last build, and returns the set to build. A group still used by
// connected Envoys is kept, from the last build's policy: its Envoys keep
// their listeners and routes, and its endpoints keep following Consul
// (removing a file must not blank running proxies, nor leave them sending
// to dead instances) until its last Envoy disconnects or the group comes
// back. A group no Envoy uses is withdrawn: its snapshot is cleared, so an
// Envoy that connects later gets nothing, as for any undefined group.
func (s *Server) retain(set *policy.Set) (served *policy.Set, changed bool) {
	var kept, newlyKept, withdrawn []string
	// publishMu, then mu, held through the clearing: no rebuild publishes
	// and no stream registers (streamRequest takes mu) between the decision
	// to withdraw a group and its clearing.
	s.publishMu.Lock()
	s.mu.Lock()
	last := s.lastServed
	for name := range s.retained {
		if _, back := set.Group(name); back {
			delete(s.retained, name)
			changed = true
		}
	}
	if last != nil {
		for _, g := range last.Groups {
			if _, ok := set.Group(g.Name); ok {
				continue
			}
			switch {
			case s.inUse(g.Name):
				if !s.retained[g.Name] {
					s.retained[g.Name] = true
					newlyKept = append(newlyKept, g.Name)
				}
				kept = append(kept, g.Name)
			default:
				delete(s.retained, g.Name)
				delete(s.groups, g.Name)
				delete(s.lastLeft, g.Name)
				s.cache.ClearSnapshot(g.Name)
				withdrawn = append(withdrawn, g.Name)
			}
		}
	}
	counts := map[string]int{}
	for _, name := range newlyKept {
		counts[name] = s.groupStreams[name]
	}
	s.mu.Unlock()
	s.publishMu.Unlock()

	for _, name := range newlyKept {
		s.log.Warn("proxy group removed from policy while Envoys use it: they keep its listeners and routes, with endpoints following Consul, until they disconnect; restore the group or stop them",
			"group", name, "envoys", counts[name])
	}
	for _, name := range withdrawn {
		s.log.Info("proxy group removed from policy; no Envoy uses it, so its config is withdrawn", "group", name)
	}
	changed = changed || len(newlyKept)+len(withdrawn) > 0
	if len(kept) == 0 {
		return set, changed
	}
	return set.Keep(last, kept), changed
}

// inUse reports whether Envoys use a group: one has a stream open, or the
// last one left less than retainLinger ago (an Envoy reconnecting after
// xds.max-connection-age, a Switchyard replica going away or a network
// blip, comes back within a second or two and must find its group).
// Called with s.mu held.
func (s *Server) inUse(group string) bool {
	if s.groupStreams[group] > 0 {
		return true
	}
	left, ok := s.lastLeft[group]
	return ok && time.Since(left) < s.retainLinger
}

func sameVersions(a, b *groupSnapshot) bool {
	for typ, v := range a.versions {
		if b.versions[typ] != v {
			return false
		}
	}
	return len(a.versions) == len(b.versions)
}

// logWarnings logs each translation warning once, not on every rebuild.
func (s *Server) logWarnings(diags policy.Diagnostics) {
	s.metrics.policyWarnings.Set(float64(len(diags)))
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, d := range diags {
		msg := d.String()
		seen[msg] = true
		if !s.warned[msg] {
			s.log.Warn(msg)
		}
	}
	s.warned = seen
}

// groupHash keys the snapshot cache by proxy group: every Envoy started
// with the same node.cluster shares one snapshot.
type groupHash struct{}

func (groupHash) ID(node *corev3.Node) string {
	if node == nil {
		return ""
	}
	return node.GetCluster()
}

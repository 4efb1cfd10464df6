package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// ErrConnectDisabled is wrapped by MeshWatcher.Run's error when the Consul
// agent has Connect turned off.
var ErrConnectDisabled = errors.New("consul connect is disabled")

// proxyFilter selects connect-proxy services in /v1/catalog/services.
const proxyFilter = `ServiceKind == "connect-proxy"`

// connectDisabledText is what Consul answers (HTTP 500) on a Connect
// endpoint when Connect is off.
const connectDisabledText = "Connect must be enabled"

// MeshWatcher watches Consul Connect: sidecar registrations, the health of
// the destinations their upstreams name, the CA roots, a leaf certificate
// per service with a sidecar, and the service-intentions config entries.
// Create it with NewMeshWatcher and call Run once. See the package doc,
// "Mesh".
type MeshWatcher struct {
	w       *Watcher // the Consul client, config, log, hooks and query loop
	running atomic.Bool

	mu          sync.Mutex // guards the fields below; taken before st.mu
	extraDests  map[string]bool
	extraLeaves map[string]bool
	st          *meshState // the running Run's state; nil when not running
}

// NewMeshWatcher checks cfg, fills in defaults and builds a Consul client,
// as NewWatcher does. It does not contact Consul. A nil log discards.
func NewMeshWatcher(cfg Config, log *slog.Logger, hooks Hooks) (*MeshWatcher, error) {
	w, err := NewWatcher(cfg, log, hooks)
	if err != nil {
		return nil, err
	}
	// The mesh's per-name queries have a pool of their own (see the
	// package doc, "Mesh"), and MaxConnsPerHost guards the total as for
	// the Watcher.
	w.pool = cfg.MaxMeshWatches
	if w.pool == 0 && w.cfg.Scheme == "http" {
		w.pool = DefaultMaxMeshWatches
	}
	w.http.MaxConnsPerHost = 0
	if w.pool > 0 {
		w.http.MaxConnsPerHost = w.pool + meshFixedConns
	}
	return &MeshWatcher{w: w}, nil
}

// WantDestinations adds destinations to watch besides the ones sidecar
// upstreams name (for example the services an edge proxy group reaches
// through their sidecars). The latest call wins; safe at any time.
func (m *MeshWatcher) WantDestinations(services []string) {
	set := toSet(services)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.extraDests = set
	if m.st != nil {
		m.st.setExtra(set, nil)
	}
}

// WantLeaves adds services whose leaf certificate to fetch besides the
// ones that have a sidecar (for example an edge group's own identity). The
// latest call wins; safe at any time.
func (m *MeshWatcher) WantLeaves(services []string) {
	set := toSet(services)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.extraLeaves = set
	if m.st != nil {
		m.st.setExtra(nil, set)
	}
}

func toSet(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		if n != "" {
			set[n] = true
		}
	}
	return set
}

// Run watches until ctx is done, calling publish with each new snapshot.
//
// publish is called from one goroutine at a time, never concurrently, and
// never with a snapshot equal to the previous one. The first call comes
// after a full sync: the list of proxy services, every proxy service's
// instances, every wanted destination's connect health, the CA roots and
// the service-intentions list read once, the intention default decided
// (from /v1/agent/self), and every wanted leaf tried once (a leaf that
// could not be fetched is absent until it can be).
//
// Run returns nil when ctx is cancelled, and an error wrapping
// ErrConnectDisabled when Consul answers that Connect is disabled before
// the first snapshot (later, the last snapshot stays in force and the
// queries are retried). Every goroutine it started has exited when it
// returns.
func (m *MeshWatcher) Run(ctx context.Context, publish func(*MeshSnapshot)) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("registry mesh watcher is already running")
	}
	defer m.running.Store(false)
	defer m.w.http.CloseIdleConnections()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	st := &meshState{
		m: m, wg: &wg, ctx: ctx,
		changed:   make(chan struct{}, 1),
		fatal:     make(chan error, 1),
		proxies:   map[string]*proxyState{},
		dests:     map[string]*destState{},
		leaves:    map[string]*leafState{},
		logged:    map[string]string{},
		dupLogged: map[string]bool{},
		intLogged: map[string]string{},
		reread:    make(chan struct{}, 1),
		pool:      m.w.pool,
		mx:        newMeshShared(),
	}
	// The multiplexed entries leave the count once the publish loop, the
	// only other reporter, has returned.
	defer st.unreportMultiplexed()
	st.ints.name = "service-intentions"
	m.mu.Lock()
	st.extraDests, st.extraLeaves, m.st = m.extraDests, m.extraLeaves, st
	st.mu.Lock()
	st.reconcileLocked()
	st.mu.Unlock()
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.st = nil
		m.mu.Unlock()
	}()
	wg.Go(func() { st.watchProxyCatalog(ctx) })
	wg.Go(func() { st.watchRoots(ctx) })
	wg.Go(func() { st.watchIntentions(ctx) })
	wg.Go(func() { st.watchIntentionDefault(ctx) })
	return st.publishLoop(ctx, publish)
}

// meshState is the mesh watcher's merged view, as state is the Watcher's.
type meshState struct {
	m         *MeshWatcher
	wg        *sync.WaitGroup
	ctx       context.Context
	changed   chan struct{} // one slot: "look again"
	fatal     chan error    // one slot: Connect is disabled, before the first publish
	published atomic.Bool

	mu            sync.Mutex
	catalogSynced bool
	proxies       map[string]*proxyState // by proxy service name
	dests         map[string]*destState  // by destination service name
	leaves        map[string]*leafState  // by service name
	roots         *Roots
	extraDests    map[string]bool
	extraLeaves   map[string]bool
	logged        map[string]string // proxy ID: the problems last logged for it
	dupLogged     map[string]bool   // "duplicate:<proxy ID>@<node>" already logged
	ints          intentionsState
	self          selfState
	reread        chan struct{}     // one slot: read /v1/agent/self again
	intLogged     map[string]string // intentions entry name: the problems last logged for it
	l7Logged      map[string]bool   // "<service>/<proxy ID>": L7 intentions on a tcp sidecar, logged
	defaultLogged string            // the intention default and its origin, last logged

	// pool is the most per-name blocking queries (0: no limit), own how
	// many run now; the other entries are multiplexed (meshshared.go).
	pool, own    int
	mx           meshShared
	catalogIndex uint64 // the proxy list's last X-Consul-Index
}

// watchState is one list watch with fail-static (see the package doc).
type watchState struct {
	name       string
	cancel     context.CancelFunc
	synced     bool
	held       bool
	holdReason string
	holdUntil  time.Time
}

type proxyState struct {
	watchState
	listed   bool      // in the last proxy catalog answer
	sidecars []Sidecar // never modified once set: snapshots point into it
}

// destState is one destination: its connect health (the sidecars, synced
// and held as any list) joined with its instances' own health.
type destState struct {
	watchState
	raw        *Destination      // the last connect answer (endpoints with the sidecars' health)
	instances  map[string]Health // the instances' own health, by node/service ID
	instSynced bool              // instances read at least once
	dest       *Destination      // raw joined with instances: what snapshots show; nil until both synced
}

type leafState struct {
	cancel context.CancelFunc // stops its blocking query; nil when multiplexed
	tried  bool               // a fetch succeeded or failed at least once
	leaf   *Leaf              // the last good leaf

	// A multiplexed leaf's schedule (meshshared.go): when it is read next
	// (zero: queued or being read), consecutive failed reads, and, after
	// the active root changed, until when it is polled for a renewal of
	// the leaf with serial rotateFrom.
	due         time.Time
	failures    int
	rotateUntil time.Time
	rotateFrom  string
}

func (st *meshState) log() *slog.Logger { return st.m.w.log }

func (st *meshState) notify() {
	select {
	case st.changed <- struct{}{}:
	default:
	}
}

func (st *meshState) setExtra(dests, leaves map[string]bool) {
	st.mu.Lock()
	if dests != nil {
		st.extraDests = dests
	}
	if leaves != nil {
		st.extraLeaves = leaves
	}
	st.reconcileLocked()
	st.mu.Unlock()
	st.notify()
}

// connectError checks a Connect endpoint's error for "Connect is
// disabled": before the first snapshot that ends Run with a clear error.
func (st *meshState) connectError(err error) {
	if err == nil || !strings.Contains(err.Error(), connectDisabledText) {
		return
	}
	if st.published.Load() {
		st.log().Error("consul says connect is disabled; keeping the last mesh snapshot",
			"fix", "set connect { enabled = true } in the consul configuration")
		return
	}
	select {
	case st.fatal <- fmt.Errorf("consul at %s: %w: set connect { enabled = true } in the configuration of the consul servers and agents (consul said: %v)",
		st.m.w.cfg.Address, ErrConnectDisabled, err):
	default:
	}
}

func (st *meshState) watchProxyCatalog(ctx context.Context) {
	var (
		names map[string][]string
		meta  *consulapi.QueryMeta
	)
	st.m.w.loop(ctx, "mesh:services",
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			opts.Filter = proxyFilter
			var err error
			names, meta, err = st.m.w.client.Catalog().Services(opts)
			return meta, err
		},
		func(suspect string) { st.applyProxyCatalog(names, meta.LastIndex, suspect) })
}

func (st *meshState) watchProxy(ctx context.Context, ps *proxyState) {
	var entries []*consulapi.ServiceEntry
	st.m.w.loop(ctx, "mesh:proxy:"+ps.name,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var (
				meta *consulapi.QueryMeta
				err  error
			)
			entries, meta, err = st.m.w.client.Health().Service(ps.name, "", false, opts)
			return meta, err
		},
		func(suspect string) { st.applyProxy(ps, sidecars(st.m.w.cfg.Datacenter, entries), suspect) })
}

func (st *meshState) watchDest(ctx context.Context, ds *destState) {
	var entries []*consulapi.ServiceEntry
	st.m.w.loop(ctx, "mesh:connect:"+ds.name,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var (
				meta *consulapi.QueryMeta
				err  error
			)
			entries, meta, err = st.m.w.client.Health().Connect(ds.name, "", false, opts)
			return meta, err
		},
		func(suspect string) {
			d := destination(ds.name, st.m.w.cfg.Datacenter, entries)
			st.applyDest(ds, &d, suspect)
		})
}

// watchDestInstances watches the destination's instances' own health, so
// that an endpoint is usable only while its instance passes too, whatever
// checks its sidecar was registered with.
func (st *meshState) watchDestInstances(ctx context.Context, ds *destState) {
	var entries []*consulapi.ServiceEntry
	st.m.w.loop(ctx, "mesh:service:"+ds.name,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var (
				meta *consulapi.QueryMeta
				err  error
			)
			entries, meta, err = st.m.w.client.Health().Service(ds.name, "", false, opts)
			return meta, err
		},
		func(suspect string) {
			st.applyDestInstances(ds, instancesHealth(ds.name, st.m.w.cfg.Datacenter, entries), suspect)
		})
}

// instancesHealth is each instance's own health in a
// /v1/health/service/<name> answer, by node/service ID.
func instancesHealth(name, dc string, entries []*consulapi.ServiceEntry) map[string]Health {
	svc := service(name, dc, entries)
	inst := make(map[string]Health, len(svc.Instances))
	for _, in := range svc.Instances {
		inst[in.Node+"/"+in.ID] = in.Health
	}
	return inst
}
func (st *meshState) watchRoots(ctx context.Context) {
	var r *Roots
	st.m.w.loop(ctx, "mesh:roots",
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			rl, meta, err := st.m.w.client.Agent().ConnectCARoots(opts)
			if err != nil {
				st.connectError(err)
				return nil, err
			}
			if r, err = roots(rl); err != nil {
				return nil, err
			}
			return meta, nil
		},
		func(string) {
			st.mu.Lock()
			changed := st.roots == nil || !rootsEqual(st.roots, r)
			if changed && st.roots != nil && activeRoot(st.roots) != activeRoot(r) {
				// The agent re-signs every leaf; the blocking leaf
				// queries see it, the multiplexed leaves are polled.
				st.rotateLeavesLocked()
			}
			if changed {
				st.roots = r
			}
			st.mu.Unlock()
			if changed {
				st.log().Info("connect CA roots", "trust_domain", r.TrustDomain, "active", r.ActiveRootID, "roots", len(r.Roots))
				st.notify()
			}
		})
}

// activeRoot is the active root's ID and certificate: a CA rotation
// changes it.
func activeRoot(r *Roots) Root {
	for _, root := range r.Roots {
		if root.Active {
			return root
		}
	}
	return Root{ID: r.ActiveRootID}
}

func rootsEqual(a, b *Roots) bool {
	return a.TrustDomain == b.TrustDomain && a.ActiveRootID == b.ActiveRootID && slices.Equal(a.Roots, b.Roots)
}

func (st *meshState) watchLeaf(ctx context.Context, name string, ls *leafState) {
	var l *Leaf
	st.m.w.loop(ctx, "mesh:leaf:"+name,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			lc, meta, err := st.m.w.client.Agent().ConnectCALeaf(name, opts)
			if err == nil {
				l, err = leaf(name, lc)
			}
			if err != nil {
				err = fmt.Errorf("leaf certificate for %s (the last good one stays in use): %w", name, keyFreeErr(err))
				st.connectError(err)
				st.leafFailed(name, ls)
				return nil, err
			}
			return meta, nil
		},
		func(string) { st.applyLeaf(name, ls, l) })
}

func (st *meshState) leafFailed(name string, ls *leafState) {
	st.mu.Lock()
	first := st.leaves[name] == ls && !ls.tried
	ls.tried = true
	st.mu.Unlock()
	if first {
		st.notify() // the first sync need not wait for it
	}
}

func (st *meshState) applyLeaf(name string, ls *leafState, l *Leaf) {
	st.mu.Lock()
	if st.leaves[name] != ls {
		st.mu.Unlock()
		return
	}
	ls.tried = true
	changed := ls.leaf == nil || ls.leaf.SerialNumber != l.SerialNumber || ls.leaf.CertPEM != l.CertPEM
	if changed {
		ls.leaf = l
	}
	st.mu.Unlock()
	if changed {
		st.log().Info("connect leaf certificate", "leaf", *l)
		st.notify()
	}
}

// applyProxyCatalog starts watches for new proxy services and handles the
// ones that left the list, as applyCatalog does for services.
//
// The list's index moves on every registration change, of any service
// (Consul filters the answer, not the index): the multiplexed proxy
// services and destinations are swept, since the list does not say which
// of them changed.
func (st *meshState) applyProxyCatalog(names map[string][]string, index uint64, suspect string) {
	var events []event
	st.mu.Lock()
	if st.catalogSynced && index != st.catalogIndex {
		st.sweepLocked()
	}
	if suspect != "" {
		st.mx.epoch++ // the multiplexed entries' next reads are suspect too
	}
	st.catalogSynced, st.catalogIndex = true, index
	// In name order, so which proxy services get a query of their own
	// (the pool) does not depend on map order.
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if ps, ok := st.proxies[name]; ok {
			ps.listed = true
			continue
		}
		ps := &proxyState{watchState: watchState{name: name}, listed: true}
		st.proxies[name] = ps
		st.startProxyLocked(ps)
	}
	for name, ps := range st.proxies {
		if _, ok := names[name]; ok || !ps.listed {
			continue
		}
		ps.listed = false
		switch {
		case ps.held:
		case suspect != "" && len(ps.sidecars) > 0:
			events = append(events, st.hold(&ps.watchState, len(ps.sidecars), "left the catalog: "+suspect))
		default:
			st.dropProxyLocked(ps)
		}
	}
	st.reconcileLocked()
	st.mu.Unlock()
	runEvents(events)
	st.notify()
}

func (st *meshState) applyProxy(ps *proxyState, scs []Sidecar, suspect string) {
	var events []event
	st.mu.Lock()
	if st.proxies[ps.name] != ps {
		st.mu.Unlock()
		return
	}
	changed := !ps.synced
	ps.synced = true
	switch {
	case len(scs) == 0 && ps.held:
	case len(scs) == 0 && len(ps.sidecars) > 0 && suspect != "":
		events = append(events, st.hold(&ps.watchState, len(ps.sidecars), "empty answer: "+suspect))
		changed = true
	case len(scs) == 0 && !ps.listed:
		st.dropProxyLocked(ps)
		changed = true
	default:
		if ps.held {
			events = append(events, st.recovered(&ps.watchState, len(scs)))
		}
		if !slices.EqualFunc(ps.sidecars, scs, func(a, b Sidecar) bool { return sidecarEqual(&a, &b) }) {
			ps.sidecars = scs
			changed = true
			events = append(events, st.problemsLocked(scs)...)
		}
	}
	if changed {
		st.reconcileLocked()
	}
	st.mu.Unlock()
	runEvents(events)
	if changed {
		st.notify()
	}
}

// problemsLocked logs each sidecar's problems once (again only when they
// change) and reports each through Hooks.SidecarProblem.
func (st *meshState) problemsLocked(scs []Sidecar) []event {
	var events []event
	for _, sc := range scs {
		problems := slices.Clone(sc.Problems)
		for _, u := range sc.Upstreams {
			if u.Problem != "" {
				problems = append(problems, fmt.Sprintf("upstream %s (bind port %d): %s", u.DestinationName, u.LocalBindPort, u.Problem))
			}
		}
		key := strings.Join(problems, "\n")
		if st.logged[sc.ID] == key {
			continue
		}
		st.logged[sc.ID] = key
		if key == "" {
			continue
		}
		id := sc.ID
		events = append(events, func() {
			st.log().Warn("sidecar registration has problems; the rest of it is served", "proxy_id", id, "problems", problems)
			if h := st.m.w.hooks.SidecarProblem; h != nil {
				for _, p := range problems {
					h(id, p)
				}
			}
		})
	}
	return events
}

func (st *meshState) applyDest(ds *destState, d *Destination, suspect string) {
	var events []event
	st.mu.Lock()
	if st.dests[ds.name] != ds {
		st.mu.Unlock()
		return
	}
	changed := !ds.synced
	ds.synced = true
	had := ds.raw != nil && len(ds.raw.Endpoints) > 0
	switch {
	case len(d.Endpoints) == 0 && ds.held:
	case len(d.Endpoints) == 0 && had && suspect != "":
		events = append(events, st.hold(&ds.watchState, len(ds.raw.Endpoints), "empty answer: "+suspect))
		changed = true
	default:
		if ds.held {
			events = append(events, st.recovered(&ds.watchState, len(d.Endpoints)))
		}
		if ds.raw == nil || !destEqual(ds.raw, d) {
			ds.raw = d
			changed = true
		}
	}
	if changed {
		changed = ds.join()
	}
	st.mu.Unlock()
	runEvents(events)
	if changed {
		st.notify()
	}
}

// applyDestInstances records the destination's instances' own health. An
// empty, suspect answer keeps the last known health: the connect side's
// fail-static decides whether the endpoints stay.
func (st *meshState) applyDestInstances(ds *destState, inst map[string]Health, suspect string) {
	st.mu.Lock()
	if st.dests[ds.name] != ds {
		st.mu.Unlock()
		return
	}
	changed := false
	if !ds.instSynced || !(len(inst) == 0 && suspect != "" && len(ds.instances) > 0) {
		changed = !ds.instSynced || !maps.Equal(ds.instances, inst)
		ds.instances, ds.instSynced = inst, true
	}
	if changed {
		changed = ds.join()
	}
	st.mu.Unlock()
	if changed {
		st.notify()
	}
}

// join recomputes ds.dest from the connect answer and the instances'
// health, and reports whether it changed. The caller holds st.mu.
func (ds *destState) join() bool {
	if ds.raw == nil || !ds.instSynced {
		return false
	}
	d := &Destination{Name: ds.raw.Name, Endpoints: slices.Clone(ds.raw.Endpoints)}
	for i := range d.Endpoints {
		ep := &d.Endpoints[i]
		if !ep.Native {
			h, ok := ds.instances[ep.Node+"/"+ep.ServiceID]
			if !ok {
				h = Unhealthy // a sidecar whose instance is not registered
			}
			ep.ServiceHealth = h
		}
		ep.Health = worse(ep.ProxyHealth, ep.ServiceHealth)
	}
	if ds.dest != nil && destEqual(ds.dest, d) {
		return false
	}
	ds.dest = d
	return true
}

// worse is the health of an endpoint made of two parts: unhealthy if
// either is, else draining if either is.
func worse(a, b Health) Health {
	switch {
	case a == Unhealthy || b == Unhealthy:
		return Unhealthy
	case a == Draining || b == Draining:
		return Draining
	}
	return Healthy
}

func (st *meshState) hold(ws *watchState, n int, reason string) event {
	ws.held, ws.holdReason, ws.holdUntil = true, reason, time.Time{}
	if d := st.m.w.cfg.StaleHold; d > 0 {
		ws.holdUntil = time.Now().Add(d)
	}
	name := ws.name
	return func() {
		st.log().Warn("consul answer looks like lost state; keeping last known mesh entries",
			"name", name, "reason", reason, "entries", n, "hold", st.m.w.cfg.StaleHold)
		if h := st.m.w.hooks.FailStatic; h != nil {
			h(name, reason)
		}
	}
}

func (st *meshState) recovered(ws *watchState, n int) event {
	ws.held = false
	name, reason := ws.name, ws.holdReason
	return func() {
		st.log().Info("mesh entries recovered; using live answers again", "name", name, "entries", n, "held_because", reason)
	}
}

func runEvents(events []event) {
	for _, e := range events {
		e()
	}
}

// expireHolds ends the holds whose time is up.
func (st *meshState) expireHolds() {
	var events []event
	now := time.Now()
	st.mu.Lock()
	for _, ps := range st.proxies {
		if ps.held && !ps.holdUntil.IsZero() && !now.Before(ps.holdUntil) {
			ps.held, ps.sidecars = false, nil
			if !ps.listed {
				st.dropProxyLocked(ps)
			}
			events = append(events, st.expired(&ps.watchState))
		}
	}
	for _, ds := range st.dests {
		if ds.held && !ds.holdUntil.IsZero() && !now.Before(ds.holdUntil) {
			ds.held, ds.raw, ds.dest = false, &Destination{Name: ds.name}, &Destination{Name: ds.name}
			events = append(events, st.expired(&ds.watchState))
		}
	}
	if is := &st.ints; is.held && !is.holdUntil.IsZero() && !now.Before(is.holdUntil) {
		is.held, is.entries = false, map[string]*Intentions{}
		events = append(events, st.expired(&is.watchState))
	}
	st.reconcileLocked()
	st.mu.Unlock()
	runEvents(events)
}

func (st *meshState) expired(ws *watchState) event {
	name, reason := ws.name, ws.holdReason
	return func() {
		st.log().Warn("stale hold expired; publishing what consul says", "name", name, "held_because", reason)
	}
}

// reconcileLocked starts and stops destination and leaf watches so that
// they match what the sidecars (and WantDestinations, WantLeaves) need.
// The caller holds st.mu.
func (st *meshState) reconcileLocked() {
	dests, leaves := maps.Clone(st.extraDests), maps.Clone(st.extraLeaves)
	if dests == nil {
		dests = map[string]bool{}
	}
	if leaves == nil {
		leaves = map[string]bool{}
	}
	for _, ps := range st.proxies {
		for _, sc := range ps.sidecars {
			if sc.Service != "" {
				leaves[sc.Service] = true
			}
			for _, u := range sc.Upstreams {
				if u.Problem == "" {
					dests[u.DestinationName] = true
				}
			}
		}
	}
	for name, ds := range st.dests {
		if !dests[name] {
			st.dropDestLocked(ds)
		}
	}
	// In name order, so which get a query of their own (the pool) does
	// not depend on map order.
	for _, name := range slices.Sorted(maps.Keys(dests)) {
		if st.dests[name] == nil {
			ds := &destState{watchState: watchState{name: name}}
			st.dests[name] = ds
			st.startDestLocked(ds)
		}
	}
	for name, ls := range st.leaves {
		if !leaves[name] {
			st.dropLeafLocked(name, ls)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(leaves)) {
		if st.leaves[name] == nil {
			ls := &leafState{}
			st.leaves[name] = ls
			st.startLeafLocked(name, ls)
		}
	}
	st.fillPoolLocked()
	for id := range st.logged {
		if !st.hasSidecarLocked(id) {
			delete(st.logged, id)
		}
	}
}

func (st *meshState) hasSidecarLocked(id string) bool {
	for _, ps := range st.proxies {
		for _, sc := range ps.sidecars {
			if sc.ID == id {
				return true
			}
		}
	}
	return false
}

// snapshot builds the current snapshot, says whether the first full sync
// is complete, and when the next hold expires (zero: none).
func (st *meshState) snapshot() (snap *MeshSnapshot, ready bool, nextExpiry time.Time) {
	var events []event
	defer func() { runEvents(events) }() // after the unlock: defers run last in, first out
	st.mu.Lock()
	defer st.mu.Unlock()
	ready = st.catalogSynced && st.roots != nil && st.ints.synced && st.self.read
	next := func(ws *watchState) {
		if ws.held && !ws.holdUntil.IsZero() && (nextExpiry.IsZero() || ws.holdUntil.Before(nextExpiry)) {
			nextExpiry = ws.holdUntil
		}
	}
	snap = &MeshSnapshot{
		sidecars: map[string]*Sidecar{},
		dests:    make(map[string]*Destination, len(st.dests)),
		leaves:   make(map[string]*Leaf, len(st.leaves)),
		roots:    st.roots,
		// Never modified once set, so shared as is.
		intentions: st.ints.entries,
	}
	next(&st.ints.watchState)
	var (
		from  string
		known bool
	)
	snap.intentionDefault, from, known = st.intentionDefaultLocked()
	if st.self.read && st.ints.synced && st.defaultLogged != snap.intentionDefault+from {
		st.defaultLogged = snap.intentionDefault + from
		policy, level, msg := snap.intentionDefault, slog.LevelInfo, "intention default: callers no intention matches are allowed"
		if policy == IntentionDeny {
			msg = "intention default: callers no intention matches are denied"
		}
		if !known {
			level = slog.LevelWarn // could not be read: deny, to fail closed
		}
		events = append(events, func() { st.log().Log(st.ctx, level, msg, "default", policy, "from", from) })
	}
	for _, name := range slices.Sorted(maps.Keys(st.proxies)) {
		ps := st.proxies[name]
		next(&ps.watchState)
		if ps.listed && !ps.synced {
			ready = false
		}
		for i := range ps.sidecars {
			sc := &ps.sidecars[i]
			if prev, dup := snap.sidecars[sc.ID]; dup {
				// Service IDs are unique per node only; a proxy's
				// node.id cannot tell two apart. The first (by proxy
				// service name, then node) is served, saying so.
				c := *prev
				problem := fmt.Sprintf("proxy ID also registered on node %s (service %s): that one is ignored", sc.Node, sc.Name)
				c.Problems = append(slices.Clip(c.Problems), problem)
				snap.sidecars[sc.ID] = &c
				if key := "duplicate:" + sc.ID + "@" + sc.Node; !st.dupLogged[key] {
					st.dupLogged[key] = true
					id := sc.ID
					events = append(events, func() {
						st.log().Warn("sidecar registration has problems; the rest of it is served", "proxy_id", id, "problems", []string{problem})
						if h := st.m.w.hooks.SidecarProblem; h != nil {
							h(id, problem)
						}
					})
				}
				continue
			}
			snap.sidecars[sc.ID] = sc
		}
	}
	for name, ds := range st.dests {
		next(&ds.watchState)
		if !ds.synced || !ds.instSynced {
			ready = false
		}
		if ds.dest != nil {
			snap.dests[name] = ds.dest
		}
	}
	for name, ls := range st.leaves {
		if !ls.tried {
			ready = false
		}
		if ls.leaf != nil {
			snap.leaves[name] = ls.leaf
		}
	}
	events = append(events, st.l7OnTCPLocked(snap)...)
	return snap, ready, nextExpiry
}

// publishLoop is the one goroutine that calls publish (see
// Watcher.publishLoop).
func (st *meshState) publishLoop(ctx context.Context, publish func(*MeshSnapshot)) error {
	var (
		last   *MeshSnapshot
		expiry = time.NewTimer(time.Hour)
	)
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-st.fatal:
			return err
		case <-st.changed:
		case <-expiry.C:
			st.expireHolds()
		}
		st.reportMultiplexed()
		snap, ready, next := st.snapshot()
		if !next.IsZero() {
			expiry.Reset(max(time.Until(next), time.Millisecond))
		} else {
			expiry.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
		published := st.published.Load()
		if !ready && !published {
			continue
		}
		if published && snap.Equal(last) {
			continue
		}
		publish(snap)
		last = snap
		st.published.Store(true)
	}
}

func sidecarEqual(a, b *Sidecar) bool { return a == b || deepEqual(a, b) }

func destEqual(a, b *Destination) bool { return a == b || deepEqual(a, b) }

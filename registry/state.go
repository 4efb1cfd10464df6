package registry

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// state is the watcher's merged view: every watch goroutine writes its
// answers here, and the publish loop turns it into snapshots.
type state struct {
	w       *Watcher
	wg      *sync.WaitGroup // the Run group that per-service watches join
	ctx     context.Context // Run's context; per-service watches derive from it
	changed chan struct{}   // one slot: "look again", never blocks a watch

	mu            sync.Mutex           // guards the fields below
	services      map[string]*svcState // every watched service
	catalogSynced bool                 // the service list was read at least once
	catalog       map[string][]string  // the last catalog answer
	catalogIndex  uint64               // its X-Consul-Index
	want          map[string]bool      // nil: every service (Want never called)
	// pool is the most services with a blocking query of their own (0: no
	// limit); own is how many have one now. The others are multiplexed
	// (shared.go).
	pool, own int
	sh        shared
}

// wanted reports whether the service should be watched when listed.
func (st *state) wanted(name string) bool {
	return st.want == nil || st.want[name]
}

// svcState is what the watcher knows about one service.
type svcState struct {
	name      string
	cancel    context.CancelFunc // stops this service's own watch; nil when multiplexed
	inCatalog bool               // listed in the last catalog answer
	synced    bool               // health read at least once
	svc       *Service           // what the next snapshot shows; nil until synced
	// covered: snapshots cover the service (see Snapshot.Covers). True once
	// synced, and from the start for a wanted service that was absent from
	// the catalog and then appeared in it: until its first health answer the
	// snapshots still show it absent, the last state they knew, just as for
	// any new service when every service is watched.
	covered bool

	// Fail-static: held is true while svc holds last-known instances in
	// place of a suspect empty answer, until holdUntil (zero: forever).
	held       bool
	holdReason string
	holdUntil  time.Time

	// A multiplexed service's last read: its X-Consul-Index, and the
	// readers' failure epoch then (a read after a failure is suspect).
	readIndex uint64
	readEpoch int
	readLost  int64 // Watcher.lost then: a lost connection since is suspect too
}

// event is a hook call or log line, run after the lock is released so that
// neither a slow handler nor a hook can stall the other watches.
type event func()

func (st *state) run(events []event) {
	for _, e := range events {
		e()
	}
}

func (st *state) notify() {
	select {
	case st.changed <- struct{}{}:
	default:
	}
}

// applyCatalog starts watches for new (wanted) services and handles
// services that left the list: a real deregistration drops them, a suspect
// answer keeps their last known instances (and their watch, to see them
// come back).
//
// The catalog's index moves on every registration change (an instance
// added or removed, a new port, address, tags or weights), but its answer
// names only the services: a multiplexed service whose tags changed is
// re-read at once, and every other multiplexed one is swept (re-read at a
// bounded pace), since nothing cheaper tells which of them changed.
func (st *state) applyCatalog(names map[string][]string, index uint64, suspect string) {
	var events []event
	st.mu.Lock()
	// A wanted service listed now but not before was covered as absent
	// (once the catalog had been read): it stays covered meanwhile.
	covered := st.catalogSynced
	moved := st.catalogSynced && index != st.catalogIndex
	if suspect != "" {
		st.sh.epoch++ // the multiplexed services' next reads are suspect too
	}
	old := st.catalog
	st.catalogSynced, st.catalog, st.catalogIndex = true, names, index
	// In name order, so which services get a watch of their own (the
	// pool) does not depend on map order.
	for _, name := range slices.Sorted(maps.Keys(names)) {
		tags := names[name]
		if ss, ok := st.services[name]; ok {
			ss.inCatalog = true
			if ss.cancel == nil && !slices.Equal(tags, old[name]) {
				st.enqueueRead(name, 0, true)
			}
			continue
		}
		if st.wanted(name) {
			st.watch(name, covered)
		}
	}
	for name, ss := range st.services {
		if _, ok := names[name]; ok || !ss.inCatalog {
			continue
		}
		ss.inCatalog = false
		switch {
		case ss.held:
			// Already holding; the hold runs its course.
		case suspect != "" && ss.svc != nil && len(ss.svc.Instances) > 0:
			events = append(events, st.hold(ss, "left the catalog: "+suspect))
		default:
			st.drop(ss)
			events = append(events, func() {
				st.w.log.Info("service deregistered", "service", name)
			})
		}
	}
	if moved {
		st.sweep()
	}
	st.fillPool()
	st.mu.Unlock()
	st.run(events)
	st.reportMultiplexed()
	st.notify()
}

// applyWant switches to a new set of wanted services: it stops the watches
// of services no longer wanted, and starts, at once, those of newly wanted
// services listed in the last catalog answer.
func (st *state) applyWant(want map[string]bool) {
	var stopped, started []string
	st.mu.Lock()
	st.want = want
	for name, ss := range st.services {
		if !want[name] {
			// Not a fail-static case: a hold, if any, ends with the watch.
			st.drop(ss)
			stopped = append(stopped, name)
		}
	}
	if st.catalogSynced {
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if _, listed := st.catalog[name]; listed && st.services[name] == nil {
				st.watch(name, false)
				started = append(started, name)
			}
		}
	}
	st.fillPool()
	st.mu.Unlock()
	st.reportMultiplexed()
	if len(stopped)+len(started) > 0 {
		slices.Sort(stopped)
		slices.Sort(started)
		st.w.log.Info("wanted services changed", "wanted", len(want),
			"started", started, "stopped", stopped)
	}
	st.notify()
}

// watch starts watching the named service, listed in the catalog: with a
// blocking query of its own while the pool has room, else multiplexed. The
// caller holds st.mu.
func (st *state) watch(name string, covered bool) {
	ss := &svcState{name: name, inCatalog: true, covered: covered}
	st.services[name] = ss
	if st.pool == 0 || st.own < st.pool {
		st.watchOwn(ss)
	} else {
		st.multiplex(ss)
	}
}

// watchOwn starts ss's own blocking query. The caller holds st.mu.
func (st *state) watchOwn(ss *svcState) {
	ctx, cancel := context.WithCancel(st.ctx)
	ss.cancel = cancel
	st.own++
	st.wg.Go(func() { st.w.watchService(ctx, st, ss) })
}

// fillPool gives the pool's free places to multiplexed services, by name,
// after services with a watch of their own were dropped. The caller holds
// st.mu.
func (st *state) fillPool() {
	for st.sh.count > 0 && (st.pool == 0 || st.own < st.pool) {
		var next *svcState
		for _, ss := range st.services {
			if ss.cancel == nil && (next == nil || ss.name < next.name) {
				next = ss
			}
		}
		st.unmultiplex(next)
		st.watchOwn(next)
	}
}

// applyHealth records one health answer for ss.
func (st *state) applyHealth(ss *svcState, svc Service, suspect string) {
	var events []event
	st.mu.Lock()
	if st.services[ss.name] != ss {
		st.mu.Unlock()
		return // dropped while the query ran
	}
	firstSync := !ss.synced
	ss.synced, ss.covered = true, true
	hadInstances := ss.svc != nil && len(ss.svc.Instances) > 0
	changed := firstSync
	switch {
	case len(svc.Instances) == 0 && ss.held:
		// Still waiting for the instances to come back.
	case len(svc.Instances) == 0 && hadInstances && suspect != "":
		events = append(events, st.hold(ss, "empty answer: "+suspect))
		changed = true // the publish loop arms the expiry timer
	case len(svc.Instances) == 0 && !ss.inCatalog:
		// Neither listed nor registered: gone for real.
		st.drop(ss)
		changed = true
	default:
		if ss.held {
			ss.held = false
			n, reason := len(svc.Instances), ss.holdReason
			events = append(events, func() {
				st.w.log.Info("service recovered; using live instances again",
					"service", ss.name, "instances", n, "held_because", reason)
			})
		}
		if ss.svc == nil || !ss.svc.equal(&svc) {
			ss.svc = &svc
			changed = true
		}
	}
	st.fillPool()
	st.mu.Unlock()
	st.run(events)
	st.reportMultiplexed()
	if changed {
		st.notify()
	}
}

// hold starts fail-static for ss. The caller holds st.mu and runs the
// returned event after unlocking.
func (st *state) hold(ss *svcState, reason string) event {
	ss.held, ss.holdReason, ss.holdUntil = true, reason, time.Time{}
	if d := st.w.cfg.StaleHold; d > 0 {
		ss.holdUntil = time.Now().Add(d)
	}
	n := len(ss.svc.Instances)
	return func() {
		st.w.log.Warn("consul answer looks like lost state; keeping last known instances",
			"service", ss.name, "reason", reason, "instances", n, "hold", st.w.cfg.StaleHold)
		if st.w.hooks.FailStatic != nil {
			st.w.hooks.FailStatic(ss.name, reason)
		}
	}
}

// drop forgets ss and stops its watch. The caller holds st.mu, and calls
// fillPool once done dropping.
func (st *state) drop(ss *svcState) {
	delete(st.services, ss.name)
	if ss.cancel == nil {
		st.unmultiplex(ss)
		return
	}
	ss.cancel()
	st.own--
}

// expireHolds ends every hold whose time is up: Consul has said "nothing
// here" for StaleHold, so believe it.
func (st *state) expireHolds() {
	var events []event
	now := time.Now()
	st.mu.Lock()
	for _, ss := range st.services {
		if !ss.held || ss.holdUntil.IsZero() || now.Before(ss.holdUntil) {
			continue
		}
		ss.held = false
		if ss.inCatalog {
			ss.svc = &Service{Name: ss.name}
		} else {
			st.drop(ss)
		}
		name, reason := ss.name, ss.holdReason
		events = append(events, func() {
			st.w.log.Warn("stale hold expired; publishing what consul says",
				"service", name, "held_because", reason)
		})
	}
	st.fillPool()
	st.mu.Unlock()
	st.run(events)
	st.reportMultiplexed()
}

// snapshot returns the current snapshot, whether the initial sync is
// complete, and when the next hold expires (zero: none).
//
// Once Want was called, the snapshot covers the wanted services that are
// either watched and covered (synced, mostly) or absent from the last
// catalog answer: a wanted, listed service always has a watch, so one
// without is absent.
func (st *state) snapshot() (snap *Snapshot, ready bool, nextExpiry time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var covered map[string]struct{}
	if st.want != nil {
		covered = make(map[string]struct{}, len(st.want))
		for name := range st.want {
			ss, watched := st.services[name]
			if watched && ss.covered || !watched && st.catalogSynced {
				covered[name] = struct{}{}
			}
		}
	}
	ready = st.catalogSynced
	m := make(map[string]*Service, len(st.services))
	for name, ss := range st.services {
		if ss.inCatalog && !ss.synced {
			ready = false
		}
		if ss.svc != nil {
			m[name] = ss.svc
		}
		if ss.held && !ss.holdUntil.IsZero() && (nextExpiry.IsZero() || ss.holdUntil.Before(nextExpiry)) {
			nextExpiry = ss.holdUntil
		}
	}
	return &Snapshot{services: m, covered: covered}, ready, nextExpiry
}

package registry

import (
	"context"
	"log/slog"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// Multiplexed services: the ones past the pool of services with a
// blocking query of their own (Config.MaxServiceWatches). See the package
// doc, "Watching".

// watchedStates are the check states watched, one blocking query each on
// /v1/health/state/<state>. A health change of any instance (or node)
// moves a check into or out of one of them, and they stay small while the
// estate is healthy. Consul serves each from its index of checks by
// status, so neither the answers nor Consul's work grow with the checks
// that pass; it wakes one on writes to checks in its state (while none is
// in it, on any check's status change). One query on
// /v1/health/state/any filtered to Status != "passing" would do with one
// connection less, but Consul evaluates the filter on every check at every
// check write.
var watchedStates = [...]string{consulapi.HealthCritical, consulapi.HealthWarning}

const (
	// sharedReaders is how many re-reads of multiplexed services may be
	// in flight at once: Consul's load from them stays bounded however
	// many services there are, and over plain HTTP they hold at most this
	// many connections.
	sharedReaders = 4

	// sweepInterval paces sweep re-reads (after a registration change the
	// catalog cannot attribute to a service): 500 a second at most, so a
	// sweep of 5,000 services takes 10 s and never floods Consul. Re-reads
	// of services known to have changed are not paced.
	sweepInterval = 2 * time.Millisecond

	// staleRetries is how many times a re-read that came back older than
	// the change that asked for it (a stale read from a lagging server) is
	// tried again before it is taken as it is.
	staleRetries = 3

	// healthStatePace is the least time between two queries of one
	// health-state watch. Under a storm of check writes a watch would ask
	// as fast as Consul answers; paced, it asks at most 50 times a second,
	// and a change waits at most this long more.
	healthStatePace = 20 * time.Millisecond

	// readTimeout bounds one re-read: it does not block, so anything
	// longer is a dead connection or an overloaded agent.
	readTimeout = 30 * time.Second
)

// shared is the state of the multiplexed services, guarded by state.mu.
type shared struct {
	count int // multiplexed services now
	// reported is count as last told to Hooks.Watches.
	reported int

	// The health-state watches, one per watchedStates entry, running while
	// count > 0: gen tells their answers from stopped ones'.
	cancel context.CancelFunc
	gen    int
	states [len(watchedStates)]stateSet

	readQueue
	readers bool // the reader goroutines are started
}

// readQueue is the queue of re-reads of multiplexed entries (a Watcher's
// services, a MeshWatcher's proxy services, destinations and leaves), and
// the readers' shared failure state. It has no lock of its own: its
// owner's guards it.
type readQueue struct {
	// An entry is pending at most once; urgent (changed, or never read)
	// ones go before sweep ones.
	pending       map[string]*readReq
	urgent, swept []string
	// inFlight are the entries a reader has taken and not finished: an
	// entry is read by one reader at a time, so that an older answer
	// never lands after a newer one (two readers of one service, the
	// first slower, would put its older instances back). A pending read
	// of an entry in flight waits, and is listed again when it finishes.
	inFlight  map[string]bool
	wake      chan struct{} // one slot: "look at the queue"
	nextSweep time.Time     // when the next sweep read may start
	failures  int           // consecutive failed re-reads
	epoch     int           // bumped by every failed re-read and suspect shared answer
	lastWarn  time.Time
}

func newReadQueue() readQueue {
	return readQueue{pending: map[string]*readReq{}, inFlight: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// stateSet is the last answer of one health-state watch.
type stateSet struct {
	synced bool                  // its first answer (the baseline) is in
	index  uint64                // its X-Consul-Index
	checks map[checkKey]checkVal // the checks in that state then
}

// synced reports whether every health-state watch has its baseline. The
// caller holds st.mu.
func (sh *shared) synced() bool {
	for _, set := range sh.states {
		if !set.synced {
			return false
		}
	}
	return true
}

type checkKey struct{ node, id string }

type checkVal struct {
	service     string // "" for a node check
	modifyIndex uint64
}

// readReq is one pending re-read. minIndex, when not 0, is the
// X-Consul-Index the answer must reach (the change that asked for it);
// such a read may be stale. A read asked for without one (a first read, a
// sweep) cannot tell a lagging server's answer from a current one, so it
// is consistent: the leader answers.
type readReq struct {
	minIndex   uint64
	consistent bool
	urgent     bool
	retries    int
}

func newShared() shared {
	return shared{readQueue: newReadQueue()}
}

// unreportMultiplexed takes every multiplexed service reported to
// Hooks.Watches out of the count again, when Run ends.
func (st *state) unreportMultiplexed() {
	st.mu.Lock()
	n := st.sh.reported
	st.sh.reported = 0
	st.mu.Unlock()
	st.w.hooks.watches(KindMultiplexed, -n)
}

// reportMultiplexed tells Hooks.Watches how the number of multiplexed
// services changed since the last report. Called without st.mu held.
func (st *state) reportMultiplexed() {
	st.mu.Lock()
	delta := st.sh.count - st.sh.reported
	st.sh.reported = st.sh.count
	st.mu.Unlock()
	st.w.hooks.watches(KindMultiplexed, delta)
}

// multiplex watches ss without a query of its own: its first read is
// queued, and the health-state watch (and the readers) start with the
// first such service. The caller holds st.mu.
func (st *state) multiplex(ss *svcState) {
	ss.cancel = nil
	st.sh.count++
	st.enqueueRead(ss.name, 0, true)
	if st.sh.cancel == nil {
		ctx, cancel := context.WithCancel(st.ctx)
		st.sh.cancel = cancel
		st.sh.gen++
		gen := st.sh.gen
		for i, state := range watchedStates {
			st.wg.Go(func() {
				st.w.watchHealthState(ctx, KindHealthState+":"+state, state, func(checks consulapi.HealthChecks, index uint64, suspect string) {
					st.applyHealthState(gen, i, checks, index, suspect)
				})
			})
		}
	}
	if !st.sh.readers {
		st.sh.readers = true
		for range sharedReaders {
			st.wg.Go(func() { st.w.readShared(st.ctx, st) })
		}
	}
}

// unmultiplex ends ss's multiplexing (it was dropped, or gets a watch of
// its own); the health-state watch stops with the last multiplexed
// service. The caller holds st.mu.
func (st *state) unmultiplex(ss *svcState) {
	st.sh.count--
	delete(st.sh.pending, ss.name)
	if st.sh.count == 0 && st.sh.cancel != nil {
		st.sh.cancel()
		st.sh.cancel, st.sh.states = nil, [len(watchedStates)]stateSet{}
	}
}

// enqueueRead asks for a re-read of a multiplexed service. The caller
// holds st.mu.
func (st *state) enqueueRead(name string, minIndex uint64, urgent bool) {
	st.sh.enqueue(name, minIndex, urgent)
}

// enqueue asks for a re-read of an entry: minIndex, when not 0, is the
// index the answer must reach; urgent ones go first. The caller holds the
// owner's lock.
func (q *readQueue) enqueue(name string, minIndex uint64, urgent bool) {
	r := q.pending[name]
	switch {
	case r == nil:
		r = &readReq{urgent: urgent}
		q.pending[name] = r
		if urgent {
			q.urgent = append(q.urgent, name)
		} else {
			q.swept = append(q.swept, name)
		}
	case urgent && !r.urgent:
		r.urgent = true // its place in the sweep list is skipped
		q.urgent = append(q.urgent, name)
	}
	r.minIndex = max(r.minIndex, minIndex)
	r.consistent = r.consistent || minIndex == 0
	q.wakeReaders()
}

// requeue queues a taken read again, urgent, as it was asked for. The
// caller holds the owner's lock.
func (q *readQueue) requeue(name string, r *readReq) {
	q.enqueue(name, r.minIndex, true)
	p := q.pending[name]
	p.consistent = p.consistent || r.consistent
	p.retries = max(p.retries, r.retries)
}

// sweep queues a re-read of every multiplexed service. The caller holds
// st.mu.
func (st *state) sweep() {
	for name, ss := range st.services {
		if ss.cancel == nil {
			st.enqueueRead(name, 0, false)
		}
	}
}

func (q *readQueue) wakeReaders() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// nextRead waits for a re-read to do, and for the health-state baseline
// (a read before it could miss a change that the baseline already
// shows). It returns the pause to take first (sweep pacing); ok is false
// once ctx is done.
func (st *state) nextRead(ctx context.Context) (name string, r *readReq, pause time.Duration, ok bool) {
	return st.sh.next(ctx, &st.mu, st.sh.synced)
}

// next waits for a re-read to do once ready (called with mu held) says
// reads may start. It returns the pause to take first (sweep pacing); ok
// is false once ctx is done. mu is the owner's lock.
func (q *readQueue) next(ctx context.Context, mu sync.Locker, ready func() bool) (name string, r *readReq, pause time.Duration, ok bool) {
	for {
		mu.Lock()
		if ready() {
			name, r = q.pop()
		}
		if r != nil && !r.urgent {
			now, next := time.Now(), q.nextSweep
			if next.Before(now) {
				next = now
			}
			q.nextSweep = next.Add(sweepInterval)
			pause = next.Sub(now)
		}
		more := len(q.urgent)+len(q.swept) > 0
		mu.Unlock()
		if r != nil {
			if more {
				q.wakeReaders() // another reader takes the next one
			}
			return name, r, pause, true
		}
		select {
		case <-ctx.Done():
			return "", nil, 0, false
		case <-q.wake:
		}
	}
}

// pop takes the next pending read, urgent first, of an entry no reader
// has in flight (one that has stays pending: finish lists it again). The
// caller holds the owner's lock.
func (q *readQueue) pop() (string, *readReq) {
	for len(q.urgent) > 0 {
		name := q.urgent[0]
		q.urgent = q.urgent[1:]
		if r := q.pending[name]; r != nil && !q.inFlight[name] {
			return name, q.take(name, r)
		}
	}
	for len(q.swept) > 0 {
		name := q.swept[0]
		q.swept = q.swept[1:]
		if r := q.pending[name]; r != nil && !r.urgent && !q.inFlight[name] {
			return name, q.take(name, r)
		}
	}
	return "", nil
}

func (q *readQueue) take(name string, r *readReq) *readReq {
	delete(q.pending, name)
	q.inFlight[name] = true
	return r
}

// finish ends a reader's read of an entry (its answer applied, or the
// read failed and was queued again), and lists a read of it that waited
// meanwhile. The caller holds the owner's lock.
func (q *readQueue) finish(name string) {
	delete(q.inFlight, name)
	if r := q.pending[name]; r != nil {
		if r.urgent {
			q.urgent = append(q.urgent, name)
		} else {
			q.swept = append(q.swept, name)
		}
		q.wakeReaders()
	}
}

// readShared is one of the sharedReaders goroutines: it re-reads the
// queued multiplexed services, one plain (non-blocking) query each.
func (w *Watcher) readShared(ctx context.Context, st *state) {
	for {
		name, r, pause, ok := st.nextRead(ctx)
		if !ok || !sleep(ctx, pause) {
			return
		}
		qctx, cancel := context.WithTimeout(ctx, readTimeout)
		var conns atomic.Int32
		qctx = httptrace.WithClientTrace(qctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { conns.Add(1) },
		})
		opts := (&consulapi.QueryOptions{AllowStale: w.cfg.AllowStale && !r.consistent}).WithContext(qctx)
		issued := w.lost.load() // see Watcher.loop
		entries, meta, err := w.client.Health().Service(name, "", false, opts)
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.hooks.request(KindRead, err)
		if err != nil {
			w.readFailed(ctx, st, name, r, redactErr(err, w.cfg.Token))
			continue
		}
		stale := st.applyRead(name, r, service(name, w.cfg.Datacenter, entries), meta, conns.Load() > 1, issued)
		st.mu.Lock()
		st.sh.finish(name)
		st.mu.Unlock()
		if stale {
			// Stale: give the lagging server a moment.
			if !sleep(ctx, w.cfg.BackoffMin) {
				return
			}
		}
	}
}

// readFailed puts a failed re-read back in the queue and pauses this
// reader with jittered backoff (see Watcher.failedRead).
func (w *Watcher) readFailed(ctx context.Context, st *state, name string, r *readReq, err error) {
	w.failedRead(ctx, &st.mu, &st.sh.readQueue, KindRead+":"+name, err, func() {
		if ss := st.services[name]; ss != nil && ss.cancel == nil {
			st.sh.requeue(name, r)
		}
		st.sh.finish(name)
	})
}

// failedRead reports a failed re-read, makes every watch's next answer
// suspect, calls requeue (with mu, the queue owner's lock, held) and
// pauses the calling reader with jittered backoff: the readers share one
// failure count, so while Consul fails (or answers 429) they slow down
// together instead of spinning.
func (w *Watcher) failedRead(ctx context.Context, mu sync.Locker, q *readQueue, op string, err error, requeue func()) {
	if w.hooks.WatchError != nil {
		w.hooks.WatchError(op, err)
	}
	mu.Lock()
	q.failures++
	q.epoch++
	w.lost.add() // and every watch's
	failures := q.failures
	warn := time.Since(q.lastWarn) >= 30*time.Second
	if warn {
		q.lastWarn = time.Now()
	}
	requeue()
	mu.Unlock()
	delay := w.backoff(failures)
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	w.log.Log(ctx, level, "consul query failed; keeping last known state",
		"op", op, "error", err, "failures", failures, "retry_in", delay)
	sleep(ctx, delay)
}

// applyRead records a re-read of a multiplexed service. It returns true
// when the answer was older than the change that asked for it and the
// read is queued again.
//
// issued is the connection-loss count when the read went out: the next
// read of the service is compared with it (see Watcher.loop).
func (st *state) applyRead(name string, r *readReq, svc Service, meta *consulapi.QueryMeta, retried bool, issued int64) (stale bool) {
	st.mu.Lock()
	ss := st.services[name]
	if ss == nil || ss.cancel != nil {
		st.mu.Unlock()
		return false // dropped, or has a watch of its own now
	}
	if st.sh.failures > 0 {
		st.w.log.Info("consul query recovered", "op", KindRead, "failures", st.sh.failures)
		st.sh.failures = 0
	}
	if r.minIndex > 0 && meta.LastIndex < r.minIndex && r.retries < staleRetries {
		r.retries++
		st.sh.requeue(name, r)
		st.mu.Unlock()
		return true
	}
	if retried {
		st.w.lost.add()
	}
	lost := st.w.lost.load()
	var suspect string
	switch {
	case meta.LastIndex != 0 && meta.LastIndex < ss.readIndex:
		suspect = reasonIndexReset
	case ss.readEpoch != st.sh.epoch || ss.readLost != lost || retried:
		suspect = reasonReconnect
	case !meta.KnownLeader && meta.QueryBackend != consulapi.QueryBackendStreaming:
		suspect = reasonNoLeader
	}
	ss.readIndex, ss.readEpoch, ss.readLost = meta.LastIndex, st.sh.epoch, issued
	st.mu.Unlock()
	st.applyHealth(ss, svc, suspect)
	return false
}

// watchHealthState runs the blocking query on the checks in one state
// (/v1/health/state/<state>), paced to healthStatePace, and hands each
// answer to apply.
func (w *Watcher) watchHealthState(ctx context.Context, op, state string, apply func(checks consulapi.HealthChecks, index uint64, suspect string)) {
	var (
		checks consulapi.HealthChecks
		meta   *consulapi.QueryMeta
		last   time.Time
	)
	w.loop(ctx, op,
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			if !sleep(ctx, healthStatePace-time.Since(last)) {
				return nil, ctx.Err()
			}
			var err error
			checks, meta, err = w.client.Health().State(state, opts)
			last = time.Now()
			return meta, err
		},
		func(suspect string) { apply(checks, meta.LastIndex, suspect) })
}

// update takes one answer of the set's health-state watch and returns
// the services and the nodes (for node checks) whose checks entered or
// left the set, each with the index a read must reach: a check that
// entered carries its own ModifyIndex; one that left changed after the
// last answer. An index that went backwards (a restarted agent) asks for
// none (0). The first answer is only the baseline: it returns baseline
// true and nothing changed.
func (set *stateSet) update(checks consulapi.HealthChecks, index uint64) (services, nodes map[string]uint64, baseline bool) {
	next := make(map[checkKey]checkVal, len(checks))
	for _, c := range checks {
		next[checkKey{c.Node, c.CheckID}] = checkVal{service: c.ServiceName, modifyIndex: c.ModifyIndex}
	}
	if !set.synced {
		set.synced, set.checks, set.index = true, next, index
		return nil, nil, true
	}
	reset := index < set.index
	floor := set.index + 1
	services, nodes = map[string]uint64{}, map[string]uint64{}
	mark := func(k checkKey, v checkVal, min uint64) {
		if reset {
			min = 0
		}
		if v.service == "" {
			nodes[k.node] = max(nodes[k.node], min)
		} else {
			services[v.service] = max(services[v.service], min)
		}
	}
	for k, v := range next {
		if _, ok := set.checks[k]; !ok {
			mark(k, v, max(v.modifyIndex, floor))
		}
	}
	for k, v := range set.checks {
		if _, ok := next[k]; !ok {
			mark(k, v, floor)
		}
	}
	set.checks, set.index = next, index
	return services, nodes, false
}

// applyHealthState compares the checks in watchedStates[i] with its last
// answer (stateSet.update) and queues a re-read of every multiplexed
// service whose checks entered or left the set (a critical check that
// turns warning leaves one set and enters the other): a service check
// names its service; a node check (serfHealth, node maintenance) every
// multiplexed service with an instance on that node.
//
// The first answers are only baselines: every multiplexed service is read
// once both are in. A suspect answer (the agent may have restarted) makes
// each service's next read suspect too.
func (st *state) applyHealthState(gen, i int, checks consulapi.HealthChecks, index uint64, suspect string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if gen != st.sh.gen || st.sh.cancel == nil {
		return // a stopped watch's last answer
	}
	if suspect != "" {
		st.sh.epoch++
	}
	services, nodes, baseline := st.sh.states[i].update(checks, index)
	if baseline {
		st.sh.wakeReaders()
		return
	}
	if len(nodes) > 0 {
		for name, ss := range st.services {
			if ss.cancel != nil || ss.svc == nil {
				continue
			}
			for _, in := range ss.svc.Instances {
				if min, ok := nodes[in.Node]; ok {
					services[name] = max(services[name], min)
				}
			}
		}
	}
	for name, min := range services {
		if ss := st.services[name]; ss != nil && ss.cancel == nil {
			st.enqueueRead(name, min, true)
		}
	}
}

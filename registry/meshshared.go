package registry

import (
	"context"
	"fmt"
	"maps"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// The MeshWatcher's multiplexed entries: the proxy services, destinations
// and leaves past its pool of per-name blocking queries
// (Config.MaxMeshWatches). See the package doc, "Mesh".

// What a mesh re-read reads, the first part of its queue key
// ("proxy:web-sidecar-proxy", "leaf:web").
const (
	readProxy   = "proxy"   // /v1/health/service/<proxy service>
	readConnect = "connect" // /v1/health/connect/<destination>
	readService = "service" // /v1/health/service/<destination>
	readLeaf    = "leaf"    // /v1/agent/connect/ca/leaf/<service>
)

// meshFixedConns are the mesh's connections besides its pool: the proxy
// list, roots and intentions queries, the health-state queries, the
// readers and the occasional /v1/agent/self read.
const meshFixedConns = 3 + len(watchedStates) + sharedReaders + 1

// Leaf refresh pacing for multiplexed leaves. The local agent keeps each
// leaf in its cache and renews it (at 60-90% of its lifetime, and after a
// CA rotation); a plain read returns what it holds, so reading every
// leafRefresh picks a renewal up hours before the old leaf expires.
var (
	// leafRefresh is the longest a multiplexed leaf goes unread.
	leafRefresh = 5 * time.Minute
	// leafMinRefresh is the shortest pause between two reads of a leaf
	// outside a rotation: a leaf close to its end (the agent did not
	// renew it) is read every quarter of its remaining life, never more
	// often than this.
	leafMinRefresh = 5 * time.Second
	// leafRotationPoll and leafRotationWindow: after the active root
	// changes, each multiplexed leaf is read this often until it changes
	// (the agent spreads re-signing over up to 30 s), for at most the
	// window.
	leafRotationPoll   = time.Second
	leafRotationWindow = 2 * time.Minute
	// leafTick is how often due leaves are queued.
	leafTick = 250 * time.Millisecond
)

// meshShared is the state of the multiplexed mesh entries, guarded by
// meshState.mu.
type meshShared struct {
	count    int // multiplexed entries (proxy services, destinations, leaves)
	reported int // count as last told to Hooks.Watches
	// watched is how many multiplexed proxy services and destinations the
	// health-state watches serve: they run while it is not 0, gen telling
	// their answers from stopped ones'.
	watched int
	cancel  context.CancelFunc
	gen     int
	states  [len(watchedStates)]stateSet

	readQueue
	readers bool                 // the readers and the leaf scheduler are started
	marks   map[string]*readMark // by queue key: each entry's last read
}

// readMark is what a multiplexed entry's last read saw, to tell whether
// the next one is suspect (as Watcher.loop does for a blocking query).
type readMark struct {
	index uint64
	epoch int
	lost  int64
}

func newMeshShared() meshShared {
	return meshShared{readQueue: newReadQueue(), marks: map[string]*readMark{}}
}

// readyLocked tells the readers whether they may read: not before the
// health-state baseline (a read before it could miss a change the
// baseline already shows).
func (mx *meshShared) readyLocked() bool {
	if mx.cancel == nil {
		return true
	}
	for _, set := range mx.states {
		if !set.synced {
			return false
		}
	}
	return true
}

// roomLocked reports whether the pool has room for cost more queries.
func (st *meshState) roomLocked(cost int) bool {
	return st.pool == 0 || st.own+cost <= st.pool
}

// startProxyLocked watches a new proxy service: with a blocking query of
// its own while the pool has room, else multiplexed. The caller holds
// st.mu.
func (st *meshState) startProxyLocked(ps *proxyState) {
	if !st.roomLocked(1) {
		ps.cancel = nil
		st.multiplexLocked(true, readProxy+":"+ps.name)
		return
	}
	ctx, cancel := context.WithCancel(st.ctx)
	ps.cancel = cancel
	st.own++
	st.wg.Go(func() { st.watchProxy(ctx, ps) })
}

func (st *meshState) dropProxyLocked(ps *proxyState) {
	delete(st.proxies, ps.name)
	if ps.cancel == nil {
		st.unmultiplexLocked(true, readProxy+":"+ps.name)
		return
	}
	ps.cancel()
	st.own--
}

func (st *meshState) startDestLocked(ds *destState) {
	if !st.roomLocked(2) {
		ds.cancel = nil
		st.multiplexLocked(true, readConnect+":"+ds.name, readService+":"+ds.name)
		return
	}
	ctx, cancel := context.WithCancel(st.ctx)
	ds.cancel = cancel
	st.own += 2
	st.wg.Go(func() { st.watchDest(ctx, ds) })
	st.wg.Go(func() { st.watchDestInstances(ctx, ds) })
}

func (st *meshState) dropDestLocked(ds *destState) {
	delete(st.dests, ds.name)
	if ds.cancel == nil {
		st.unmultiplexLocked(true, readConnect+":"+ds.name, readService+":"+ds.name)
		return
	}
	ds.cancel()
	st.own -= 2
}

func (st *meshState) startLeafLocked(name string, ls *leafState) {
	if !st.roomLocked(1) {
		ls.cancel, ls.due = nil, time.Time{} // queued now; due once read
		st.multiplexLocked(false, readLeaf+":"+name)
		return
	}
	ctx, cancel := context.WithCancel(st.ctx)
	ls.cancel = cancel
	st.own++
	st.wg.Go(func() { st.watchLeaf(ctx, name, ls) })
}

func (st *meshState) dropLeafLocked(name string, ls *leafState) {
	delete(st.leaves, name)
	if ls.cancel == nil {
		st.unmultiplexLocked(false, readLeaf+":"+name)
		return
	}
	ls.cancel()
	st.own--
}

// multiplexLocked starts multiplexing an entry read through keys: their
// first reads are queued, and the readers (and, for an entry the
// health-state watches serve, those) start with the first such entry.
// The caller holds st.mu.
func (st *meshState) multiplexLocked(healthFed bool, keys ...string) {
	mx := &st.mx
	mx.count++
	lost := st.m.w.lost.load()
	for _, k := range keys {
		// Nothing was known before the first read: it cannot be
		// suspect of losing anything.
		mx.marks[k] = &readMark{epoch: mx.epoch, lost: lost}
		mx.enqueue(k, 0, true)
	}
	if healthFed {
		mx.watched++
		if mx.cancel == nil {
			ctx, cancel := context.WithCancel(st.ctx)
			mx.cancel = cancel
			mx.gen++
			gen := mx.gen
			for i, state := range watchedStates {
				st.wg.Go(func() {
					st.m.w.watchHealthState(ctx, "mesh:health-state:"+state, state, func(checks consulapi.HealthChecks, index uint64, suspect string) {
						st.applyHealthState(gen, i, checks, index, suspect)
					})
				})
			}
		}
	}
	if !mx.readers {
		mx.readers = true
		for range sharedReaders {
			st.wg.Go(func() { st.readMesh(st.ctx) })
		}
		st.wg.Go(func() { st.scheduleLeaves(st.ctx) })
	}
}

// unmultiplexLocked ends an entry's multiplexing (it was dropped, or gets
// blocking queries of its own). The caller holds st.mu.
func (st *meshState) unmultiplexLocked(healthFed bool, keys ...string) {
	mx := &st.mx
	mx.count--
	for _, k := range keys {
		delete(mx.pending, k)
		delete(mx.marks, k)
	}
	if healthFed {
		mx.watched--
		if mx.watched == 0 && mx.cancel != nil {
			mx.cancel()
			mx.cancel, mx.states = nil, [len(watchedStates)]stateSet{}
		}
	}
}

// fillPoolLocked gives the pool's free places to multiplexed entries
// after entries with queries of their own were dropped: proxy services
// first, then destinations, then leaves, each by name. The caller holds
// st.mu.
func (st *meshState) fillPoolLocked() {
	if st.mx.count == 0 || !st.roomLocked(1) {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(st.proxies)) {
		if ps := st.proxies[name]; ps.cancel == nil && st.roomLocked(1) {
			st.unmultiplexLocked(true, readProxy+":"+name)
			st.startProxyLocked(ps)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.dests)) {
		if ds := st.dests[name]; ds.cancel == nil && st.roomLocked(2) {
			st.unmultiplexLocked(true, readConnect+":"+name, readService+":"+name)
			st.startDestLocked(ds)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.leaves)) {
		if ls := st.leaves[name]; ls.cancel == nil && st.roomLocked(1) {
			st.unmultiplexLocked(false, readLeaf+":"+name)
			st.startLeafLocked(name, ls)
		}
	}
}

// reportMultiplexed tells Hooks.Watches how the number of multiplexed
// mesh entries changed since the last report. Called without st.mu held.
func (st *meshState) reportMultiplexed() {
	st.mu.Lock()
	delta := st.mx.count - st.mx.reported
	st.mx.reported = st.mx.count
	st.mu.Unlock()
	st.m.w.hooks.watches(KindMeshMultiplexed, delta)
}

// unreportMultiplexed takes the reported entries out of the count again,
// when Run ends.
func (st *meshState) unreportMultiplexed() {
	st.mu.Lock()
	n := st.mx.reported
	st.mx.reported = 0
	st.mu.Unlock()
	st.m.w.hooks.watches(KindMeshMultiplexed, -n)
}

// sweepLocked queues a read of every multiplexed proxy service and
// destination, at the sweep pace: the proxy list's index moved, so some
// registration changed, and the list does not say which. The caller holds
// st.mu.
func (st *meshState) sweepLocked() {
	for name, ps := range st.proxies {
		if ps.cancel == nil {
			st.mx.enqueue(readProxy+":"+name, 0, false)
		}
	}
	for name, ds := range st.dests {
		if ds.cancel == nil {
			st.mx.enqueue(readConnect+":"+name, 0, false)
			st.mx.enqueue(readService+":"+name, 0, false)
		}
	}
}

// applyHealthState queues re-reads for the checks that entered or left
// watchedStates[i] (see state.applyHealthState): a check of a multiplexed
// proxy service re-reads it; a check of any proxy service re-reads the
// connect health of the multiplexed destinations its sidecars front; a
// check of a multiplexed destination re-reads both its reads; a node
// check, every multiplexed entry with an instance on the node.
//
// Reads of a service's own health carry the index they must reach.
// Connect health reads carry none (they are consistent, never stale):
// the change was to another service's check, and Consul's connect index
// is not documented to follow it.
func (st *meshState) applyHealthState(gen, i int, checks consulapi.HealthChecks, index uint64, suspect string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	mx := &st.mx
	if gen != mx.gen || mx.cancel == nil {
		return // a stopped watch's last answer
	}
	if suspect != "" {
		mx.epoch++
	}
	services, nodes, baseline := mx.states[i].update(checks, index)
	if baseline {
		mx.wakeReaders()
		return
	}
	connect := func(dest string) {
		if ds := st.dests[dest]; ds != nil && ds.cancel == nil {
			mx.enqueue(readConnect+":"+dest, 0, true)
		}
	}
	for name, min := range services {
		if ps := st.proxies[name]; ps != nil {
			if ps.cancel == nil {
				mx.enqueue(readProxy+":"+name, min, true)
			}
			for _, sc := range ps.sidecars {
				connect(sc.Service)
			}
		}
		if ds := st.dests[name]; ds != nil && ds.cancel == nil {
			mx.enqueue(readService+":"+name, min, true)
			connect(name)
		}
	}
	if len(nodes) == 0 {
		return
	}
	for name, ps := range st.proxies {
		for _, sc := range ps.sidecars {
			if min, ok := nodes[sc.Node]; ok {
				if ps.cancel == nil {
					mx.enqueue(readProxy+":"+name, min, true)
				}
				connect(sc.Service)
			}
		}
	}
	for name, ds := range st.dests {
		if ds.cancel != nil || ds.raw == nil {
			continue
		}
		for _, ep := range ds.raw.Endpoints {
			if min, ok := nodes[ep.Node]; ok {
				mx.enqueue(readService+":"+name, min, true)
				connect(name)
				break
			}
		}
	}
}

// rotateLeavesLocked reads every multiplexed leaf again after the active
// root changed, and keeps reading each every leafRotationPoll until the
// agent has renewed it (or leafRotationWindow passes). The caller holds
// st.mu.
func (st *meshState) rotateLeavesLocked() {
	now := time.Now()
	for name, ls := range st.leaves {
		if ls.cancel != nil {
			continue
		}
		ls.rotateUntil, ls.rotateFrom = now.Add(leafRotationWindow), ""
		if ls.leaf != nil {
			ls.rotateFrom = ls.leaf.SerialNumber
		}
		ls.due = time.Time{}
		// At the sweep pace, behind reads asked for by health changes:
		// the agent takes a while to re-sign them all anyway.
		st.mx.enqueue(readLeaf+":"+name, 0, false)
	}
}

// leafDueLocked is when a multiplexed leaf is read next, after a read at
// now. The caller holds st.mu.
func leafDueLocked(ls *leafState, now time.Time) time.Time {
	if now.Before(ls.rotateUntil) {
		if ls.leaf == nil || ls.leaf.SerialNumber == ls.rotateFrom {
			return now.Add(leafRotationPoll)
		}
		ls.rotateUntil = time.Time{} // renewed
	}
	wait := leafRefresh
	if ls.leaf != nil {
		wait = min(wait, max(ls.leaf.NotAfter.Sub(now)/4, leafMinRefresh))
	}
	return now.Add(wait)
}

// scheduleLeaves queues the reads of multiplexed leaves as they fall due,
// at the sweep pace.
func (st *meshState) scheduleLeaves(ctx context.Context) {
	t := time.NewTicker(leafTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		st.mu.Lock()
		for name, ls := range st.leaves {
			if ls.cancel == nil && !ls.due.IsZero() && !now.Before(ls.due) {
				ls.due = time.Time{}
				st.mx.enqueue(readLeaf+":"+name, 0, false)
			}
		}
		st.mu.Unlock()
	}
}

// readMesh is one of the mesh's reader goroutines: it re-reads the queued
// multiplexed entries, one plain (non-blocking) query each.
func (st *meshState) readMesh(ctx context.Context) {
	w := st.m.w
	for {
		key, r, pause, ok := st.mx.next(ctx, &st.mu, st.mx.readyLocked)
		if !ok || !sleep(ctx, pause) {
			return
		}
		kind, name, _ := strings.Cut(key, ":")
		qctx, cancel := context.WithTimeout(ctx, readTimeout)
		var conns atomic.Int32
		qctx = httptrace.WithClientTrace(qctx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { conns.Add(1) },
		})
		opts := (&consulapi.QueryOptions{AllowStale: w.cfg.AllowStale && !r.consistent}).WithContext(qctx)
		issued := w.lost.load() // see Watcher.loop
		var (
			entries []*consulapi.ServiceEntry
			lc      *consulapi.LeafCert
			meta    *consulapi.QueryMeta
			err     error
		)
		switch kind {
		case readProxy, readService:
			entries, meta, err = w.client.Health().Service(name, "", false, opts)
		case readConnect:
			entries, meta, err = w.client.Health().Connect(name, "", false, opts)
		case readLeaf:
			lc, meta, err = w.client.Agent().ConnectCALeaf(name, opts)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.hooks.request(KindMeshRead, err)
		var l *Leaf
		if kind == readLeaf {
			if err == nil {
				l, err = leaf(name, lc)
			}
			if err != nil {
				err = keyFreeErr(err)
			}
		}
		if err != nil {
			st.connectError(err)
			st.meshReadFailed(ctx, kind, name, r, redactErr(err, w.cfg.Token))
			continue
		}
		if kind == readLeaf {
			st.applyLeafRead(name, l)
			st.finishRead(key)
			continue
		}
		target, suspect, stale := st.markRead(key, kind, name, r, meta, conns.Load() > 1, issued)
		switch t := target.(type) {
		case *proxyState:
			st.applyProxy(t, sidecars(w.cfg.Datacenter, entries), suspect)
		case *destState:
			if kind == readConnect {
				d := destination(name, w.cfg.Datacenter, entries)
				st.applyDest(t, &d, suspect)
			} else {
				st.applyDestInstances(t, instancesHealth(name, w.cfg.Datacenter, entries), suspect)
			}
		}
		// Only now may another reader take the entry: its answer must
		// not land before this one (readQueue.inFlight).
		st.finishRead(key)
		if stale && !sleep(ctx, w.cfg.BackoffMin) {
			return // give the lagging server a moment
		}
	}
}

// finishRead ends a reader's read of key (readQueue.finish).
func (st *meshState) finishRead(key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.mx.finish(key)
}

// markRead records a re-read's index and tells whether it is suspect (as
// state.applyRead does). target is the entry to apply it to, nil when it
// is no longer multiplexed or the answer was older than the change that
// asked for it (stale: the read is queued again).
func (st *meshState) markRead(key, kind, name string, r *readReq, meta *consulapi.QueryMeta, retried bool, issued int64) (target any, suspect string, stale bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	mx := &st.mx
	mark := mx.marks[key]
	switch kind {
	case readProxy:
		if ps := st.proxies[name]; ps != nil && ps.cancel == nil {
			target = ps
		}
	default:
		if ds := st.dests[name]; ds != nil && ds.cancel == nil {
			target = ds
		}
	}
	if target == nil || mark == nil {
		return nil, "", false // dropped, or has queries of its own now
	}
	mx.failures = 0
	if r.minIndex > 0 && meta.LastIndex < r.minIndex && r.retries < staleRetries {
		r.retries++
		mx.requeue(key, r)
		return nil, "", true
	}
	if retried {
		st.m.w.lost.add()
	}
	switch {
	case meta.LastIndex != 0 && meta.LastIndex < mark.index:
		suspect = reasonIndexReset
	case mark.epoch != mx.epoch || mark.lost != st.m.w.lost.load() || retried:
		suspect = reasonReconnect
	case !meta.KnownLeader && meta.QueryBackend != consulapi.QueryBackendStreaming:
		suspect = reasonNoLeader
	}
	*mark = readMark{index: meta.LastIndex, epoch: mx.epoch, lost: issued}
	return target, suspect, false
}

// applyLeafRead records a multiplexed leaf's read and when to read it
// next.
func (st *meshState) applyLeafRead(name string, l *Leaf) {
	st.mu.Lock()
	ls := st.leaves[name]
	if ls == nil || ls.cancel != nil {
		st.mu.Unlock()
		return
	}
	st.mx.failures = 0
	ls.failures = 0
	st.mu.Unlock()
	st.applyLeaf(name, ls, l)
	st.mu.Lock()
	if st.leaves[name] == ls && ls.cancel == nil {
		ls.due = leafDueLocked(ls, time.Now())
	}
	st.mu.Unlock()
}

// meshReadFailed queues a failed read again (a leaf: after its own
// backoff, the last good leaf staying in use) and pauses this reader
// with the readers' shared backoff.
func (st *meshState) meshReadFailed(ctx context.Context, kind, name string, r *readReq, err error) {
	key := kind + ":" + name
	if kind == readLeaf {
		err = fmt.Errorf("leaf certificate for %s (the last good one stays in use): %w", name, err)
	}
	st.m.w.failedRead(ctx, &st.mu, &st.mx.readQueue, "mesh:read:"+key, err, func() {
		switch kind {
		case readLeaf:
			if ls := st.leaves[name]; ls != nil && ls.cancel == nil {
				ls.failures++
				ls.due = time.Now().Add(st.m.w.backoff(ls.failures))
				if !ls.tried {
					ls.tried = true
					st.notify() // the first sync need not wait for it
				}
			}
		case readProxy:
			if ps := st.proxies[name]; ps != nil && ps.cancel == nil {
				st.mx.requeue(key, r)
			}
		default:
			if ds := st.dests[name]; ds != nil && ds.cancel == nil {
				st.mx.requeue(key, r)
			}
		}
		st.mx.finish(key)
	})
}

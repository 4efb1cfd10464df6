package registry

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"
)

const healthStatePath = "/v1/health/state/critical"

// setMany registers services s00, s01, ... with one instance each
// (sNN-1 on node nNN%3, port 8000+NN) and a passing check.
func setMany(f *fakeConsul, n int) []string {
	var names []string
	for i := range n {
		name := fmt.Sprintf("s%02d", i)
		f.Set(name, entry(fmt.Sprintf("n%d", i%3), name+"-1", "10.2.0.1", 8000+i, name+"-1:c=passing"))
		names = append(names, name)
	}
	return names
}

// instanceOf returns the one instance of name in s.
func instanceOf(t *testing.T, s *Snapshot, name string) Instance {
	t.Helper()
	svc, ok := s.Service(name)
	if !ok || len(svc.Instances) != 1 {
		t.Fatalf("%s in snapshot: %+v (present %t); want one instance", name, svc, ok)
	}
	return svc.Instances[0]
}

// until waits for a snapshot that satisfies cond, and returns it.
func (h *harness) until(what string, cond func(*Snapshot) bool) *Snapshot {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-h.snaps:
			if cond(s) {
				return s
			}
		case <-deadline:
			h.t.Fatalf("%s: no such snapshot within 5s", what)
			return nil
		}
	}
}

func (h *harness) counts() (requests, watches map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return cloneMap(h.requests), cloneMap(h.watches)
}

func cloneMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func withPool(n int) func(*Config) {
	return func(c *Config) { c.MaxServiceWatches = n }
}

func TestServicesBeyondThePoolAreRoutable(t *testing.T) {
	f := newFakeConsul(t)
	names := setMany(f, 12)
	h := start(t, f, withPool(3))
	s := h.next()
	if got := s.Names(); !cmp.Equal(got, names) {
		t.Fatalf("first snapshot has %v; want %v", got, names)
	}
	for i, name := range names {
		if in := instanceOf(t, s, name); in.Port != 8000+i || in.Health != Healthy {
			t.Errorf("%s: %+v; want port %d, healthy", name, in, 8000+i)
		}
	}
	if got := h.w.pooled(); !cmp.Equal(got, []string{"s00", "s01", "s02"}) {
		t.Errorf("services with a watch of their own: %v; want the first 3 by name", got)
	}
	if got := h.w.watched(); !cmp.Equal(got, names) {
		t.Errorf("watched %v; want every service", got)
	}
	// One query each for the pool, none for the others: they are read
	// once, then watched through the shared health-state query.
	for _, name := range names[3:] {
		if n := f.Requests(healthPath(name)); n != 1 {
			t.Errorf("%s read %d times; want once", name, n)
		}
	}
	_, watches := h.counts()
	want := map[string]int{KindServices: 1, KindHealth: 3, KindHealthState: 2, KindMultiplexed: 9}
	if diff := cmp.Diff(want, watches); diff != "" {
		t.Errorf("Hooks.Watches sums (-want +got):\n%s", diff)
	}
	h.stop()
	_, watches = h.counts()
	for kind, n := range watches {
		if n != 0 {
			t.Errorf("after Run returned, %d watches of kind %s; want 0", n, kind)
		}
	}
}

func TestMultiplexedHealthFlip(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 8)
	h := start(t, f, withPool(2))
	h.next()
	eventually(t, "health-state query blocking", func() bool { return f.Requests(healthStatePath) >= 2 })
	f.ResetRequests()

	f.Set("s05", entry("n2", "s05-1", "10.2.0.1", 8005, "s05-1:c=critical"))
	s := h.next()
	if in := instanceOf(t, s, "s05"); in.Health != Unhealthy {
		t.Errorf("s05 after its check went critical: %s; want unhealthy", in.Health)
	}
	// Only the flipped service is read again (the pool's s00 and s01
	// query on their own, as their blocking waits end).
	got := slices.DeleteFunc(healthQueried(f), func(n string) bool { return n == "s00" || n == "s01" })
	if !cmp.Equal(got, []string{"s05"}) {
		t.Errorf("multiplexed services read after the flip: %v; want [s05]", got)
	}
	f.Set("s05", entry("n2", "s05-1", "10.2.0.1", 8005, "s05-1:c=passing"))
	s = h.next()
	if in := instanceOf(t, s, "s05"); in.Health != Healthy {
		t.Errorf("s05 after its check passed again: %s; want healthy", in.Health)
	}
	// The first read of s05 is consistent; the re-reads after its checks
	// moved may be stale (the config allows it): they name the index
	// they must reach.
	urls, _ := f.Seen()
	var reads []bool
	for _, u := range urls {
		if strings.HasPrefix(u, healthPath("s05")) {
			reads = append(reads, strings.Contains(u, "stale"))
		}
	}
	if !cmp.Equal(reads, []bool{false, true, true}) {
		t.Errorf("reads of s05 stale: %v; want [false true true]", reads)
	}

	// A node check names no service: every multiplexed service with an
	// instance on the node is read again. n1 hosts s01 (pooled), s04, s07.
	f.ResetRequests()
	for _, i := range []int{1, 4, 7} {
		name := fmt.Sprintf("s%02d", i)
		f.Set(name, entry("n1", name+"-1", "10.2.0.1", 8000+i, name+"-1:c=passing", "node:serfHealth=critical"))
	}
	s = h.until("n1's services unhealthy", func(s *Snapshot) bool {
		return instanceOf(t, s, "s04").Health == Unhealthy && instanceOf(t, s, "s07").Health == Unhealthy
	})
	if in := instanceOf(t, s, "s00"); in.Health != Healthy {
		t.Errorf("s00 on n0: %s; want healthy", in.Health)
	}
}

func TestMultiplexedRegistrationChanges(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 6)
	h := start(t, f, withPool(2))
	h.next()

	// A new port changes no check: the catalog's index moves, and the
	// sweep reads every multiplexed service again.
	f.Set("s04", entry("n1", "s04-1", "10.2.0.1", 9004, "s04-1:c=passing"))
	s := h.next()
	if in := instanceOf(t, s, "s04"); in.Port != 9004 {
		t.Errorf("s04 after its port changed: %d; want 9004", in.Port)
	}

	// A second instance, passing at once.
	f.Set("s05", entry("n2", "s05-1", "10.2.0.1", 8005, "s05-1:c=passing"), entry("n0", "s05-2", "10.2.0.2", 8005, "s05-2:c=passing"))
	s = h.next()
	if svc, _ := s.Service("s05"); len(svc.Instances) != 2 {
		t.Errorf("s05 after a second instance registered: %+v; want 2 instances", svc.Instances)
	}

	// A new service (past the pool) and one deregistered.
	f.Set("s06", entry("n0", "s06-1", "10.2.0.1", 8006, "s06-1:c=passing"))
	s = h.until("s06 published", func(s *Snapshot) bool { _, ok := s.Service("s06"); return ok })
	if in := instanceOf(t, s, "s06"); in.Port != 8006 {
		t.Errorf("new s06: %+v; want port 8006", in)
	}
	f.Set("s03")
	f.Remove("s03")
	h.until("s03 gone", func(s *Snapshot) bool { _, ok := s.Service("s03"); return !ok })
	if got := h.failStatics(); len(got) != 0 {
		t.Errorf("fail static for real changes: %v", got)
	}
}

func TestPoolRefillsWhenAWatchedServiceLeaves(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 5)
	h := start(t, f, withPool(2))
	h.next()
	f.Set("s00")
	f.Remove("s00")
	h.until("s00 gone", func(s *Snapshot) bool { _, ok := s.Service("s00"); return !ok })
	eventually(t, "s02 promoted to the pool", func() bool { return slices.Equal(h.w.pooled(), []string{"s01", "s02"}) })
	// Promoted, it follows its own blocking query.
	f.Set("s02", entry("n2", "s02-1", "10.2.0.1", 8002, "s02-1:c=warning", "s02-1:x=critical"))
	s := h.next()
	if in := instanceOf(t, s, "s02"); in.Health != Unhealthy {
		t.Errorf("s02 after promotion and a critical check: %s; want unhealthy", in.Health)
	}
	eventually(t, "2 watches of kind health and 2 multiplexed", func() bool {
		_, watches := h.counts()
		return watches[KindHealth] == 2 && watches[KindMultiplexed] == 2
	})
}

func TestThrottledReadsBackOffWithJitter(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 10)
	h := start(t, f, withPool(1))
	h.next()

	// The agent refuses every re-read (429, as past its connection cap),
	// while health changes keep asking for them.
	f.Fail(http.StatusTooManyRequests, "/v1/health/service/")
	f.ResetRequests()
	for i := 1; i < 10; i++ {
		name := fmt.Sprintf("s%02d", i)
		f.Set(name, entry(fmt.Sprintf("n%d", i%3), name+"-1", "10.2.0.1", 8000+i, name+"-1:c=critical"))
	}
	time.Sleep(time.Second)
	reads := 0
	for i := 1; i < 10; i++ {
		reads += f.Requests(healthPath(fmt.Sprintf("s%02d", i)))
	}
	// With 4 readers backing off from 5 ms to 40 ms, a second of failures
	// is about 100 reads; a tight loop would be thousands.
	if reads > 250 {
		t.Errorf("%d re-reads in 1s of 429s; want them backing off (at most 250)", reads)
	}
	requests, _ := h.counts()
	if requests["read/throttled"] == 0 {
		t.Errorf("requests %v; want read/throttled counted", requests)
	}
	if n := len(h.watchErrors()); n == 0 {
		t.Errorf("no watch errors reported for the 429s")
	}
	// No snapshot while Consul refuses: the last state stays.
	h.none(50 * time.Millisecond)

	f.Fail(0, "")
	s := h.until("every flip published after the 429s end", func(s *Snapshot) bool {
		for i := 1; i < 10; i++ {
			if instanceOf(t, s, fmt.Sprintf("s%02d", i)).Health != Unhealthy {
				return false
			}
		}
		return true
	})
	if in := instanceOf(t, s, "s00"); in.Health != Healthy {
		t.Errorf("s00: %s; want healthy", in.Health)
	}
	if got := h.failStatics(); len(got) != 0 {
		t.Errorf("fail static after 429s: %v", got)
	}
}

func TestBackoffHasJitter(t *testing.T) {
	w := &Watcher{cfg: Config{BackoffMin: time.Millisecond, BackoffMax: time.Second}}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[w.backoff(5)] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 backoffs for retry 5 took %d distinct values; want them spread (jitter)", len(seen))
	}
}

func TestMultiplexingKeepsConnectionsWithinBudget(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 60)
	const pool = 5
	h := start(t, f, withPool(pool))
	h.next()
	for i := range 20 {
		name := fmt.Sprintf("s%02d", i*3)
		f.Set(name, entry(fmt.Sprintf("n%d", i*3%3), name+"-1", "10.2.0.1", 9000+i, name+"-1:c=critical"))
	}
	h.until("the last change published", func(s *Snapshot) bool { return instanceOf(t, s, "s57").Port == 9019 })
	// The pool's queries, the catalog's, the health-state queries', and
	// the readers'.
	if got, budget := f.PeakConns(), pool+1+len(watchedStates)+sharedReaders; got > budget {
		t.Errorf("%d connections open at once; want at most %d", got, budget)
	}
}

func TestMultiplexedReadWaitsForTheChangeThatAskedForIt(t *testing.T) {
	// A re-read that comes back older than the change (a lagging server
	// answering a stale read) is tried again.
	st := &state{services: map[string]*svcState{}, sh: newShared(), w: &Watcher{}, pool: 1, own: 1}
	ss := &svcState{name: "a", inCatalog: true}
	st.services["a"] = ss
	st.sh.count = 1
	r := &readReq{minIndex: 50}
	if !st.applyRead("a", r, Service{Name: "a"}, &consulapi.QueryMeta{LastIndex: 40, KnownLeader: true}, false, 0) {
		t.Fatalf("a read at index 40 for a change at 50 was taken")
	}
	if p := st.sh.pending["a"]; p == nil || p.minIndex != 50 || p.retries != 1 {
		t.Fatalf("pending after a stale read: %+v; want a retry for index 50", p)
	}
	if st.applyRead("a", &readReq{minIndex: 50}, Service{Name: "a"}, &consulapi.QueryMeta{LastIndex: 50, KnownLeader: true}, false, 0) {
		t.Errorf("a read at index 50 for a change at 50 was retried")
	}
	if !ss.synced {
		t.Errorf("a read that reached the change's index was not applied")
	}
}

func TestMultiplexedServicesFailStaticAcrossAgentRestart(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 6)
	h := start(t, f, withPool(2))
	h.next()
	f.Restart(5)
	// Every registration is lost: the multiplexed ones are held too.
	eventually(t, "fail static for s05", func() bool {
		return slices.ContainsFunc(h.failStatics(), func(s string) bool { return len(s) > 4 && s[:4] == "s05:" })
	})
	f.Set("s04", entry("n1", "s04-1", "10.2.0.1", 9004, "s04-1:c=passing"))
	s := h.until("s04 live again", func(s *Snapshot) bool { return instanceOf(t, s, "s04").Port == 9004 })
	if in := instanceOf(t, s, "s05"); in.Port != 8005 {
		t.Errorf("s05 while held: %+v; want its last known instance", in)
	}
}

func TestWantRefillsThePool(t *testing.T) {
	f := newFakeConsul(t)
	setMany(f, 6)
	h := startWith(t, f, withPool(2), func(w *Watcher) { w.Want([]string{"s00", "s01", "s02", "s03", "s04", "s05"}) })
	h.next()
	h.w.Want([]string{"s03", "s04", "s05"})
	s := h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"s03", "s04", "s05"}) {
		t.Fatalf("after Want shrank: %v; want [s03 s04 s05]", got)
	}
	if got := h.w.pooled(); !cmp.Equal(got, []string{"s03", "s04"}) {
		t.Errorf("services with a query of their own: %v; want [s03 s04]", got)
	}
	// A stopped query counts until its goroutine is gone.
	eventually(t, "2 watches of kind health and 1 multiplexed", func() bool {
		_, watches := h.counts()
		return watches[KindHealth] == 2 && watches[KindMultiplexed] == 1
	})
	// The one left multiplexed still follows its health.
	f.Set("s05", entry("n2", "s05-1", "10.2.0.1", 8005, "s05-1:c=critical"))
	h.until("s05 unhealthy", func(s *Snapshot) bool { return instanceOf(t, s, "s05").Health == Unhealthy })
}

// An entry is read by one reader at a time: a read of it asked for while
// another is in flight waits, and is taken only once that one finishes,
// so an older answer never lands after a newer one (two readers of one
// service put its older instances back when the first was slower).
func TestReadQueueOneReaderPerEntry(t *testing.T) {
	q := newReadQueue()
	q.enqueue("web", 0, true)
	q.enqueue("api", 0, false)
	name, r := q.pop()
	if name != "web" || r == nil {
		t.Fatalf("first pop: %q; want web", name)
	}
	q.enqueue("web", 7, false) // a change while web's read is in flight
	if name, _ := q.pop(); name != "api" {
		t.Fatalf("second pop: %q; want api (web is in flight)", name)
	}
	if name, _ := q.pop(); name != "" {
		t.Fatalf("third pop: %q; want nothing until web's read finishes", name)
	}
	q.finish("web")
	name, r = q.pop()
	if name != "web" || r == nil || r.minIndex != 7 {
		t.Fatalf("after web's read finished: %q %+v; want web's waiting read (minIndex 7)", name, r)
	}
	q.finish("api")
	q.finish("web")
	if name, _ := q.pop(); name != "" {
		t.Fatalf("nothing pending: popped %q", name)
	}
	// A failed read queued again while in flight is taken once finished.
	q.enqueue("db", 0, false)
	name, r = q.pop()
	q.requeue(name, r)
	if got, _ := q.pop(); got != "" {
		t.Fatalf("requeued while in flight: popped %q", got)
	}
	q.finish("db")
	if got, _ := q.pop(); got != "db" {
		t.Fatalf("after the failed read finished: popped %q; want db", got)
	}
}

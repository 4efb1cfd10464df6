package registry

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const catalogPath = "/v1/catalog/services"

func healthPath(name string) string { return "/v1/health/service/" + name }

// healthQueried returns the services whose health was queried since the
// fake's last ResetRequests, sorted.
func healthQueried(f *fakeConsul) []string {
	var out []string
	for _, p := range f.Queried() {
		if name, ok := strings.CutPrefix(p, healthPath("")); ok {
			out = append(out, name)
		}
	}
	return out
}

// covers lists which of names s covers, as "name" or "!name".
func covers(s *Snapshot, names ...string) []string {
	var out []string
	for _, n := range names {
		if !s.Covers(n) {
			n = "!" + n
		}
		out = append(out, n)
	}
	return out
}

func TestEveryServiceWatchedUntilWant(t *testing.T) {
	f := newFakeConsul(t)
	for _, name := range []string{"a", "b", "c"} {
		f.Set(name, entry("n1", name+"-1", "10.1.0.1", 80))
	}
	h := start(t, f, nil)
	s := h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("before Want: snapshot has %v; want [a b c]", got)
	}
	if got := covers(s, "a", "b", "c", "nope"); !cmp.Equal(got, []string{"a", "b", "c", "nope"}) {
		t.Errorf("before Want: covers %v; want every name", got)
	}
	if got := healthQueried(f); !cmp.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("before Want: health queried for %v; want [a b c]", got)
	}

	h.w.Want([]string{"a"})
	s = h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("after Want([a]): snapshot has %v; want [a]", got)
	}
	if got := covers(s, "a", "b", "c"); !cmp.Equal(got, []string{"a", "!b", "!c"}) {
		t.Errorf("after Want([a]): covers %v; want [a !b !c]", got)
	}
	if got := h.w.watched(); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("after Want([a]): watching %v; want [a]", got)
	}
	// b and c are no longer queried (one query in flight when their watch
	// stopped may still land); a still is.
	f.ResetRequests()
	time.Sleep(600 * time.Millisecond) // three blocking waits
	if n := f.Requests(healthPath("a")); n < 2 {
		t.Errorf("a queried %d times in 600ms; want it still watched", n)
	}
	for _, name := range []string{"b", "c"} {
		if n := f.Requests(healthPath(name)); n > 1 {
			t.Errorf("%s queried %d times after it stopped being wanted", name, n)
		}
	}
	if fs := h.failStatics(); len(fs) != 0 {
		t.Errorf("FailStatic for services no longer wanted: %v", fs)
	}
}

func TestWantBeforeRun(t *testing.T) {
	f := newFakeConsul(t)
	for _, name := range []string{"a", "b", "c"} {
		f.Set(name, entry("n1", name+"-1", "10.1.0.1", 80))
	}
	h := startWith(t, f, nil, func(w *Watcher) { w.Want([]string{"a", "ghost"}) })
	s := h.next()
	want := []Service{{Name: "a", Instances: []Instance{inst("n1", "a-1", "10.1.0.1", 80, Healthy)}}}
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("first snapshot (-want +got):\n%s", diff)
	}
	// ghost is not in the catalog: known absent, so covered.
	if got := covers(s, "a", "ghost", "b", "c"); !cmp.Equal(got, []string{"a", "ghost", "!b", "!c"}) {
		t.Errorf("covers %v; want [a ghost !b !c]", got)
	}
	if got := healthQueried(f); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("health queried for %v; want only [a]", got)
	}
	h.none(300 * time.Millisecond)
	if got := healthQueried(f); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("health queried for %v; want only [a]", got)
	}
}

// TestWantStartsWatchAtOnce: a newly wanted service's watch starts without
// waiting for the catalog query (which blocks for a minute here), the
// snapshots cover it only once its first answer arrived, and changes
// elsewhere are published meanwhile.
func TestWantStartsWatchAtOnce(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80))
	f.Set("b", entry("n2", "b-1", "10.1.0.2", 90))
	h := startWith(t, f, func(c *Config) { c.WaitTime = time.Minute },
		func(w *Watcher) { w.Want([]string{"a"}) })
	s := h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"a"}) {
		t.Fatalf("first snapshot has %v; want [a]", got)
	}
	// The second catalog query is in, blocking for a minute.
	eventually(t, "catalog query blocking", func() bool { return f.Requests(catalogPath) >= 2 })
	catalogQueries := f.Requests(catalogPath)

	release := f.Stall(healthPath("b"))
	t.Cleanup(release)
	h.w.Want([]string{"a", "b"})
	eventually(t, "b queried", func() bool { return f.Requests(healthPath("b")) > 0 })
	if got := h.w.watched(); !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("watching %v; want [a b]", got)
	}
	// b has not answered: nothing new to publish, and nothing may claim to
	// cover b.
	h.none(300 * time.Millisecond)

	// A change to a is published while b is still waiting for its answer.
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80, "svc=critical"))
	flipped := time.Now()
	s = h.next()
	if took := time.Since(flipped); took > 2*time.Second {
		t.Errorf("a's health change published after %s; want promptly", took)
	}
	want := []Service{{Name: "a", Instances: []Instance{inst("n1", "a-1", "10.1.0.1", 80, Unhealthy)}}}
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("while b is slow (-want +got):\n%s", diff)
	}
	if s.Covers("b") {
		t.Errorf("a snapshot covers b before b's first answer")
	}

	release()
	s = h.next()
	want = append(want, Service{Name: "b", Instances: []Instance{inst("n2", "b-1", "10.1.0.2", 90, Healthy)}})
	if diff := cmp.Diff(want, dump(s)); diff != "" {
		t.Errorf("after b's first answer (-want +got):\n%s", diff)
	}
	if got := covers(s, "a", "b"); !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("after b's first answer: covers %v; want [a b]", got)
	}
	if n := f.Requests(catalogPath); n != catalogQueries {
		t.Errorf("the catalog was queried %d more times; want the one blocking query throughout", n-catalogQueries)
	}
}

func TestWantDropsServiceWithoutFailStatic(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80))
	f.Set("b", entry("n2", "b-1", "10.1.0.2", 90))
	h := startWith(t, f, nil, func(w *Watcher) { w.Want([]string{"a", "b"}) })
	if got := h.next().Names(); !cmp.Equal(got, []string{"a", "b"}) {
		t.Fatalf("first snapshot has %v; want [a b]", got)
	}

	h.w.Want([]string{"b"})
	s := h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"b"}) {
		t.Errorf("after Want([b]): snapshot has %v; want [b]", got)
	}
	if got := covers(s, "a", "b"); !cmp.Equal(got, []string{"!a", "b"}) {
		t.Errorf("after Want([b]): covers %v; want [!a b]", got)
	}
	n := f.Requests(healthPath("a"))
	time.Sleep(600 * time.Millisecond)
	if m := f.Requests(healthPath("a")); m > n+1 {
		t.Errorf("a still watched after it stopped being wanted: %d more queries", m-n)
	}
	if fs := h.failStatics(); len(fs) != 0 {
		t.Errorf("FailStatic for a service no longer wanted: %v", fs)
	}
	h.none(0)

	// Wanted again: watched again, covered once its answer is in.
	h.w.Want([]string{"a", "b"})
	s = h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"a", "b"}) || !s.Covers("a") {
		t.Errorf("a wanted again: snapshot has %v, covers a %t; want [a b], true", got, s.Covers("a"))
	}
}

// A held service (fail static) that stops being wanted is simply dropped:
// the hold ends with its watch, nothing expires later.
func TestWantDropsHeldService(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80))
	f.Set("b", entry("n2", "b-1", "10.1.0.2", 90))
	for range 5 {
		f.Bump()
	}
	h := start(t, f, func(c *Config) { c.StaleHold = 500 * time.Millisecond })
	before := h.next()

	f.ResetIndex()
	eventually(t, "FailStatic for a and b", func() bool { return len(h.failStatics()) == 2 })
	h.w.Want([]string{"b"})
	s := h.next()
	b, _ := before.Service("b")
	if diff := cmp.Diff([]Service{b}, dump(s)); diff != "" {
		t.Errorf("after Want([b]) (-want +got):\n%s", diff)
	}
	// b's hold expires: b is gone from Consul (still covered, now absent).
	s = h.next()
	if s.Len() != 0 || !s.Covers("b") || s.Covers("a") {
		t.Errorf("after b's hold: snapshot has %v, covers %v; want nothing, [!a b]", s.Names(), covers(s, "a", "b"))
	}
	h.none(300 * time.Millisecond)
	if fs := h.failStatics(); len(fs) != 2 {
		t.Errorf("FailStatic calls: %v; want only the two before Want", fs)
	}
	if logs := h.logs.String(); strings.Count(logs, "stale hold expired") != 1 || !strings.Contains(logs, "consul says\" service=b ") {
		t.Errorf("want one hold expiry, b's:\n%s", logs)
	}
}

func TestWantedServiceNotInCatalog(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80))
	h := startWith(t, f, nil, func(w *Watcher) { w.Want([]string{"a", "ghost"}) })
	s := h.next()
	if got, cov := s.Names(), covers(s, "a", "ghost"); !cmp.Equal(got, []string{"a"}) || !cmp.Equal(cov, []string{"a", "ghost"}) {
		t.Errorf("first snapshot has %v, covers %v; want [a], [a ghost]", got, cov)
	}

	// ghost registers: watched from the catalog answer that lists it, and
	// covered (as absent) until its first health answer is in.
	f.Set("ghost", entry("n2", "ghost-1", "10.1.0.2", 90))
	s = h.next()
	if got := s.Names(); !cmp.Equal(got, []string{"a", "ghost"}) || !s.Covers("ghost") {
		t.Errorf("ghost registered: snapshot has %v, covers ghost %t; want [a ghost], true", got, s.Covers("ghost"))
	}

	// Newly covering an absent service is a change worth publishing.
	h.w.Want([]string{"a", "ghost", "phantom"})
	s = h.next()
	if got, cov := s.Names(), covers(s, "a", "ghost", "phantom"); !cmp.Equal(got, []string{"a", "ghost"}) ||
		!cmp.Equal(cov, []string{"a", "ghost", "phantom"}) {
		t.Errorf("phantom wanted: snapshot has %v, covers %v; want [a ghost], [a ghost phantom]", got, cov)
	}

	// ghost deregisters: covered, and absent.
	f.Remove("ghost")
	eventually(t, "ghost dropped", func() bool {
		s = h.next()
		if !s.Covers("ghost") {
			t.Errorf("a snapshot stopped covering ghost")
		}
		_, ok := s.Service("ghost")
		return !ok
	})
	if fs := h.failStatics(); len(fs) != 0 {
		t.Errorf("FailStatic: %v", fs)
	}
}

func TestWantNothing(t *testing.T) {
	f := newFakeConsul(t)
	f.Set("a", entry("n1", "a-1", "10.1.0.1", 80))
	h := startWith(t, f, nil, func(w *Watcher) { w.Want(nil) })
	s := h.next()
	if s.Len() != 0 || s.Covers("a") {
		t.Errorf("Want(nil): snapshot has %v, covers a %t; want nothing", s.Names(), s.Covers("a"))
	}
	if got := healthQueried(f); len(got) != 0 {
		t.Errorf("Want(nil): health queried for %v; want none", got)
	}
}

// TestWantConcurrently calls Want from several goroutines while the watcher
// runs (for the race detector), then checks the latest call won and that
// Run leaves nothing behind, including a watch stuck on a slow answer.
func TestWantConcurrently(t *testing.T) {
	f := newFakeConsul(t)
	var names []string
	for i := range 12 {
		name := fmt.Sprintf("s%d", i)
		names = append(names, name)
		f.Set(name, entry("n1", name+"-1", "10.1.0.1", 80+i))
	}
	release := f.Stall(healthPath("s3"))
	t.Cleanup(release)
	h := startWith(t, f, nil, func(w *Watcher) { w.Want([]string{"s1"}) })

	var (
		last atomic.Pointer[Snapshot]
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	// The first snapshot waits for a full sync of what is wanted, which
	// never comes while s3 (stalled) is wanted; on a loaded machine the
	// storm of Want calls below could otherwise begin before it and keep
	// a never-synced service wanted at every moment until the end.
	last.Store(h.next())
	wg.Go(func() {
		for {
			select {
			case s := <-h.snaps:
				last.Store(s)
			case <-stop:
				return
			}
		}
	})
	var callers sync.WaitGroup
	for range 4 {
		callers.Go(func() {
			for range 40 {
				var want []string
				for _, n := range names {
					if rand.N(3) == 0 {
						want = append(want, n)
					}
				}
				h.w.Want(want)
				time.Sleep(time.Duration(rand.N(3)) * time.Millisecond)
			}
		})
	}
	callers.Wait()
	h.w.Want([]string{"s1", "s3"}) // s3 never answers
	eventually(t, "latest Want published", func() bool {
		s := last.Load()
		return s != nil && cmp.Equal(s.Names(), []string{"s1"}) &&
			cmp.Equal(covers(s, "s1", "s3", "s2"), []string{"s1", "!s3", "!s2"})
	})
	if got := h.w.watched(); !cmp.Equal(got, []string{"s1", "s3"}) {
		t.Errorf("watching %v; want [s1 s3]", got)
	}
	h.stop()
	close(stop)
	wg.Wait()

	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "registry.(*Watcher)") || strings.Contains(stacks, "registry.(*state)") {
		t.Errorf("watcher goroutines still running after Run returned:\n%s", stacks)
	}
	// After Run: Want only records the set.
	h.w.Want([]string{"s2"})
	if got := h.w.watched(); got != nil {
		t.Errorf("watching %v after Run returned; want nothing", got)
	}
}

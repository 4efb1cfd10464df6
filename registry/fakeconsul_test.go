package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// fakeConsul is an in-process Consul HTTP API with the two endpoints the
// watcher uses and Consul's blocking query semantics: X-Consul-Index,
// X-Consul-KnownLeader and X-Consul-LastContact headers; `index` and `wait`
// parameters; `stale` honoured (without it and without a leader, 500 as a
// real server answers).
//
// Indexes follow Consul closely enough: one raft-like counter bumped by
// every write; the catalog's index is that of the last change to the service
// list, a service's health index that of the last change to that service
// (for an unknown service, the catalog's). A blocked query returns when its
// index changes (up, or down as after a snapshot restore) or when its wait
// ends.
//
// Like Consul 1.10+ with its default use_streaming_backend, blocking health
// queries (index > 0) are answered by the "streaming" backend, which never
// sets X-Consul-KnownLeader (always false); SetStreaming(false) turns that
// off.
type fakeConsul struct {
	t   testing.TB
	srv *httptest.Server

	mu          sync.Mutex
	index       uint64
	catIndex    uint64 // moves on every registration change, not on health changes
	checksIndex uint64 // moves on every check change
	services    map[string]*fakeService
	knownLeader bool
	streaming   bool
	failStatus  int           // answer every request with this status when non-zero
	failPrefix  string        // ...whose path starts with this ("" = all)
	noBlock     bool          // answer at once, ignoring index and wait (a misbehaving proxy)
	zeroIndex   bool          // always send X-Consul-Index: 0
	wake        chan struct{} // closed and replaced on every change
	generation  int           // bumped by Restart
	requests    map[string]int
	stalls      map[string]chan struct{} // requests to these paths wait until it is closed
	urls        []string
	tokens      map[string]bool
	connect     fakeConnect // Connect CA and connect health (connect_fake_test.go)
	conns       int         // connections open now
	peakConns   int         // most connections open at once
}

type generationKey struct{}

type fakeService struct {
	index   uint64
	entries []*consulapi.ServiceEntry
}

func newFakeConsul(t testing.TB) *fakeConsul {
	f := &fakeConsul{
		t:           t,
		index:       10,
		catIndex:    10,
		checksIndex: 10,
		services:    map[string]*fakeService{},
		knownLeader: true,
		streaming:   true,
		wake:        make(chan struct{}),
		requests:    map[string]int{},
		stalls:      map[string]chan struct{}{},
		tokens:      map[string]bool{},
		connect:     newFakeConnect(),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/catalog/services", f.catalog)
	mux.HandleFunc("GET /v1/health/service/{name}", f.health)
	mux.HandleFunc("GET /v1/health/state/{state}", f.healthState)
	f.connectRoutes(mux)
	f.srv = httptest.NewUnstartedServer(mux)
	// Each connection belongs to the agent incarnation that accepted it.
	f.srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		f.mu.Lock()
		defer f.mu.Unlock()
		return context.WithValue(ctx, generationKey{}, f.generation)
	}
	f.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch state {
		case http.StateNew:
			f.conns++
			f.peakConns = max(f.peakConns, f.conns)
		case http.StateClosed, http.StateHijacked:
			f.conns--
		}
	}
	f.srv.Start()
	t.Cleanup(func() {
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

// Addr is the host:port to give the watcher.
func (f *fakeConsul) Addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// changeLocked bumps the index and wakes blocked queries. f.mu is held.
func (f *fakeConsul) changeLocked() uint64 {
	f.index++
	close(f.wake)
	f.wake = make(chan struct{})
	return f.index
}

// Set registers the service with exactly these entries (none: listed in the
// catalog, but no instances).
//
// As in Consul, the catalog's index moves when the registrations change
// (a new service, an instance added or removed, a new port...), the
// checks' index when the checks do.
func (f *fakeConsul) Set(name string, entries ...*consulapi.ServiceEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := f.changeLocked()
	old, ok := f.services[name]
	if !ok || !reflect.DeepEqual(registrations(old.entries), registrations(entries)) {
		f.catIndex = idx
	}
	if !ok || !reflect.DeepEqual(checksOf(old.entries), checksOf(entries)) {
		f.checksIndex = idx
	}
	f.services[name] = &fakeService{index: idx, entries: entries}
}

// registrations are entries without their checks.
func registrations(entries []*consulapi.ServiceEntry) []consulapi.ServiceEntry {
	var out []consulapi.ServiceEntry
	for _, e := range entries {
		c := *e
		c.Checks = nil
		out = append(out, c)
	}
	return out
}

func checksOf(entries []*consulapi.ServiceEntry) []*consulapi.HealthCheck {
	var out []*consulapi.HealthCheck
	for _, e := range entries {
		out = append(out, e.Checks...)
	}
	return out
}

// Remove takes the service out of the catalog, as Consul does once its last
// instance is deregistered.
func (f *fakeConsul) Remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.catIndex = f.changeLocked()
	if s, ok := f.services[name]; ok && len(checksOf(s.entries)) > 0 {
		f.checksIndex = f.catIndex
	}
	delete(f.services, name)
}

// PeakConns is the most connections the fake had open at once.
func (f *fakeConsul) PeakConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peakConns
}

// Bump is an unrelated write: the index moves, nothing we watch changes.
func (f *fakeConsul) Bump() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changeLocked()
}

// Restart models a dev agent restart: every registration is lost, the index
// restarts at index (low, but not necessarily lower than before), and every
// open connection breaks.
func (f *fakeConsul) Restart(index uint64) {
	f.mu.Lock()
	f.services = map[string]*fakeService{}
	f.connect.intentions = map[string]*consulapi.ServiceIntentionsConfigEntry{}
	f.index = index
	f.catIndex = index
	f.checksIndex = index
	f.connect.intentionsIndex = index
	f.generation++ // requests in flight die with their connection
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
	f.srv.CloseClientConnections()
}

// ResetIndex models a server that lost its state without dropping the
// connection (a snapshot restore): registrations are gone and the index
// went backwards; blocked queries return at once.
func (f *fakeConsul) ResetIndex() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services = map[string]*fakeService{}
	f.connect.intentions = map[string]*consulapi.ServiceIntentionsConfigEntry{}
	f.index = 3
	f.catIndex = 3
	f.checksIndex = 3
	f.connect.intentionsIndex = 3
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeConsul) SetStreaming(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streaming = on
}

func (f *fakeConsul) SetKnownLeader(ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.knownLeader = ok
}

// Fail makes requests under prefix answer with status (0: stop failing).
func (f *fakeConsul) Fail(status int, prefix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStatus, f.failPrefix = status, prefix
	if status != 0 {
		close(f.wake) // blocked queries see the failure now
		f.wake = make(chan struct{})
	}
}

func (f *fakeConsul) SetNoBlock(noBlock, zeroIndex bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noBlock, f.zeroIndex = noBlock, zeroIndex
}

// Requests is how many requests reached path.
func (f *fakeConsul) Requests(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[path]
}

// Queried returns the paths requested at least once since the last
// ResetRequests, sorted.
func (f *fakeConsul) Queried() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.requests))
}

// ResetRequests sets every path's request count back to 0.
func (f *fakeConsul) ResetRequests() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.requests)
}

// Stall makes requests to path wait (counted, but unanswered) until release
// is called: a slow answer.
func (f *fakeConsul) Stall(path string) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.stalls[path] = ch
	return sync.OnceFunc(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.stalls, path)
		close(ch)
	})
}

// Seen returns every request URL and every X-Consul-Token value received.
func (f *fakeConsul) Seen() (urls []string, tokens []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.urls), slices.Sorted(maps.Keys(f.tokens))
}

func (f *fakeConsul) catalog(w http.ResponseWriter, r *http.Request) {
	f.serve(w, r, func() (uint64, any) {
		out := map[string][]string{}
		proxiesOnly := r.URL.Query().Get("filter") == proxyFilter
		for name, s := range f.services {
			if proxiesOnly && !slices.ContainsFunc(s.entries, func(e *consulapi.ServiceEntry) bool {
				return e.Service.Kind == consulapi.ServiceKindConnectProxy
			}) {
				continue
			}
			tags := []string{}
			for _, e := range s.entries {
				tags = append(tags, e.Service.Tags...)
			}
			slices.Sort(tags)
			out[name] = slices.Compact(tags)
		}
		return f.catIndex, out
	})
}

func (f *fakeConsul) health(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f.serve(w, r, func() (uint64, any) {
		s, ok := f.services[name]
		if !ok {
			return f.catIndex, []*consulapi.ServiceEntry{}
		}
		entries := s.entries
		if entries == nil {
			entries = []*consulapi.ServiceEntry{}
		}
		return s.index, entries
	})
}

// healthState answers /v1/health/state/<state>: the checks in that
// state (every check for "any"). A check's ModifyIndex is its service's
// last change (a node check's, the node's latest). Like Consul it answers
// with the checks' index; unlike Consul, whose query on one state wakes
// only on writes to checks in that state, it wakes on any change.
func (f *fakeConsul) healthState(w http.ResponseWriter, r *http.Request) {
	state := r.PathValue("state")
	if r.URL.Query().Get("filter") != "" {
		http.Error(w, "fake consul: filters are not supported here", http.StatusBadRequest)
		return
	}
	f.serve(w, r, func() (uint64, any) {
		byKey := map[checkKey]*consulapi.HealthCheck{}
		for _, s := range f.services {
			for _, e := range s.entries {
				for _, c := range e.Checks {
					if state != consulapi.HealthAny && c.Status != state {
						continue
					}
					k := checkKey{c.Node, c.CheckID}
					if prev := byKey[k]; prev == nil || prev.ModifyIndex < s.index {
						cc := *c
						cc.ModifyIndex = s.index
						byKey[k] = &cc
					}
				}
			}
		}
		out := []*consulapi.HealthCheck{}
		for _, c := range byKey {
			out = append(out, c)
		}
		return f.checksIndex, out
	})
}

// serve runs one (possibly blocking) query. read runs with f.mu held and
// returns the result's index and body.
func (f *fakeConsul) serve(w http.ResponseWriter, r *http.Request, read func() (uint64, any)) {
	q := r.URL.Query()
	var minIndex uint64
	if v := q.Get("index"); v != "" {
		var err error
		if minIndex, err = strconv.ParseUint(v, 10, 64); err != nil {
			http.Error(w, "bad index", http.StatusBadRequest)
			return
		}
	}
	wait := 5 * time.Minute
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		wait = d
	}
	_, stale := q["stale"]
	streamed := minIndex > 0 && strings.HasPrefix(r.URL.Path, "/v1/health/service/")
	deadline := time.NewTimer(wait)
	defer deadline.Stop()

	f.mu.Lock()
	f.requests[r.URL.Path]++
	f.urls = append(f.urls, r.URL.String())
	f.tokens[r.Header.Get("X-Consul-Token")] = true
	if stall := f.stalls[r.URL.Path]; stall != nil {
		f.mu.Unlock()
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	var startIndex uint64
	started := false
	gen, _ := r.Context().Value(generationKey{}).(int)
	for {
		if f.generation != gen {
			// The agent this connection reached is gone: no answer, a
			// broken connection.
			f.mu.Unlock()
			panic(http.ErrAbortHandler)
		}
		if f.failStatus != 0 && strings.HasPrefix(r.URL.Path, f.failPrefix) {
			status := f.failStatus
			f.mu.Unlock()
			http.Error(w, "rpc error: injected failure", status)
			return
		}
		if !f.knownLeader && !stale {
			f.mu.Unlock()
			http.Error(w, "No cluster leader", http.StatusInternalServerError)
			return
		}
		idx, body := read()
		if !started {
			startIndex, started = idx, true
		}
		if f.noBlock || minIndex == 0 || idx > minIndex || idx != startIndex {
			knownLeader, backend := f.knownLeader, "blocking-query"
			if streamed && f.streaming {
				knownLeader, backend = false, "streaming"
			}
			if f.zeroIndex {
				idx = 0
			}
			aclHeader := f.connect.aclHeader
			f.mu.Unlock()
			b, err := json.Marshal(body)
			if err != nil {
				f.t.Errorf("fake consul: %v", err)
			}
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			h.Set("X-Consul-KnownLeader", strconv.FormatBool(knownLeader))
			h.Set("X-Consul-LastContact", "0")
			h.Set("X-Consul-Query-Backend", backend)
			if aclHeader != "" {
				h.Set("X-Consul-Default-ACL-Policy", aclHeader)
			}
			_, _ = w.Write(b)
			return
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			minIndex = 0 // answer with whatever is there
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
}

// entry builds a health answer entry. Checks are "id=status" pairs; a check
// id starting "node:" is a node check (no service ID).
func entry(node, id, addr string, port int, checks ...string) *consulapi.ServiceEntry {
	name, _, _ := strings.Cut(id, "-")
	e := &consulapi.ServiceEntry{
		Node: &consulapi.Node{Node: node, Address: "10.0.0." + strconv.Itoa(len(node)), Datacenter: "dc1"},
		Service: &consulapi.AgentService{
			ID: id, Service: name, Address: addr, Port: port,
			Weights: consulapi.AgentWeights{Passing: 1, Warning: 1},
		},
	}
	for _, c := range checks {
		cid, status, ok := strings.Cut(c, "=")
		if !ok {
			panic(fmt.Sprintf("check %q: want id=status", c))
		}
		hc := &consulapi.HealthCheck{Node: node, CheckID: cid, Name: cid, Status: status}
		if after, isNode := strings.CutPrefix(cid, "node:"); isNode {
			hc.CheckID = after
		} else {
			hc.ServiceID, hc.ServiceName = id, name
		}
		e.Checks = append(e.Checks, hc)
	}
	return e
}

package registry

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// fakeConnect is the fake Consul's Connect side: CA roots, leaves, and
// /v1/health/connect/<service> computed from the registered services (a
// connect-proxy entry whose Proxy.DestinationServiceName is the service, or
// a Connect-native instance of it). Guarded by fakeConsul.mu.
type fakeConnect struct {
	disabled   bool // every Connect endpoint answers 500 as Consul does with connect off
	roots      *consulapi.CARootList
	rootsIndex uint64
	leaves     map[string]*fakeLeaf

	// intentions are the service-intentions config entries, by name;
	// intentionsIndex is the index of their last change.
	intentions      map[string]*consulapi.ServiceIntentionsConfigEntry
	intentionsIndex uint64
	// aclHeader is sent as X-Consul-Default-ACL-Policy on every answer
	// ("" = not sent). Consul sends its acl.default_policy, "allow" on a
	// dev agent.
	aclHeader string
	// self is /v1/agent/self: selfStatus, when not 0, is an error status
	// instead (403 as for a token without agent:read); selfRaw, when not
	// "", the body instead.
	selfACLs   bool
	selfPolicy string
	selfStatus int
	selfRaw    string
}

type fakeLeaf struct {
	index    uint64
	cert     *consulapi.LeafCert
	failBody string // answer 500 with this body instead, when not ""
	raw      string // answer 200 with this body instead, when not ""
}

func newFakeConnect() fakeConnect {
	return fakeConnect{
		leaves: map[string]*fakeLeaf{}, intentions: map[string]*consulapi.ServiceIntentionsConfigEntry{},
		intentionsIndex: 1, aclHeader: "allow", selfPolicy: "allow",
	}
}

func (f *fakeConsul) connectRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/health/connect/{name}", f.connectHealth)
	mux.HandleFunc("GET /v1/agent/connect/ca/roots", f.caRoots)
	mux.HandleFunc("GET /v1/agent/connect/ca/leaf/{name}", f.caLeaf)
	mux.HandleFunc("GET /v1/config/service-intentions", f.listIntentions)
	mux.HandleFunc("GET /v1/agent/self", f.agentSelf)
}

// listIntentions serves the service-intentions list, sorted by name, as
// Consul does (config entries work with Connect disabled too).
func (f *fakeConsul) listIntentions(w http.ResponseWriter, r *http.Request) {
	f.serve(w, r, func() (uint64, any) {
		out := []*consulapi.ServiceIntentionsConfigEntry{}
		for _, name := range slices.Sorted(maps.Keys(f.connect.intentions)) {
			out = append(out, f.connect.intentions[name])
		}
		return f.connect.intentionsIndex, out
	})
}

func (f *fakeConsul) agentSelf(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests[r.URL.Path]++
	stall := f.stalls[r.URL.Path]
	f.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	c := f.connect
	f.mu.Unlock()
	if c.aclHeader != "" {
		w.Header().Set("X-Consul-Default-ACL-Policy", c.aclHeader)
	}
	switch {
	case c.selfStatus != 0:
		http.Error(w, "Permission denied: token lacks permission 'agent:read'", c.selfStatus)
		return
	case c.selfRaw != "":
		_, _ = w.Write([]byte(c.selfRaw))
		return
	}
	body := map[string]any{
		"Config": map[string]any{"Datacenter": "dc1", "Version": "1.14.11"},
		"DebugConfig": map[string]any{
			"ACLsEnabled": c.selfACLs,
			"ACLResolverSettings": map[string]any{
				"ACLsEnabled": c.selfACLs, "ACLDefaultPolicy": c.selfPolicy,
			},
		},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// SetIntentions writes a service-intentions entry (Kind and Name filled
// in from name); DeleteIntentions removes it.
func (f *fakeConsul) SetIntentions(name string, sources ...*consulapi.SourceIntention) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connect.intentions[name] = &consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: name, Sources: sources}
	f.connect.intentionsIndex = f.changeLocked()
}

// SetIntentionsEntry writes an entry as given (for odd ones).
func (f *fakeConsul) SetIntentionsEntry(e *consulapi.ServiceIntentionsConfigEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.Kind = consulapi.ServiceIntentions
	f.connect.intentions[e.Name] = e
	f.connect.intentionsIndex = f.changeLocked()
}

func (f *fakeConsul) DeleteIntentions(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.connect.intentions, name)
	f.connect.intentionsIndex = f.changeLocked()
}

// SetACLs sets what the agent says about ACLs: /v1/agent/self's
// ACLsEnabled and default policy, the X-Consul-Default-ACL-Policy header,
// and selfStatus (0, or an error status /v1/agent/self answers with).
func (f *fakeConsul) SetACLs(enabled bool, policy, header string, selfStatus int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connect.selfACLs, f.connect.selfPolicy, f.connect.aclHeader, f.connect.selfStatus = enabled, policy, header, selfStatus
}

// SetSelfRaw makes /v1/agent/self answer 200 with body ("": normal).
func (f *fakeConsul) SetSelfRaw(body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connect.selfRaw = body
}

// disabledAnswer writes Consul's answer on a Connect endpoint with Connect
// off, and reports whether it did.
func (f *fakeConsul) disabledAnswer(w http.ResponseWriter) bool {
	f.mu.Lock()
	off := f.connect.disabled
	f.mu.Unlock()
	if off {
		http.Error(w, "Connect must be enabled in order to use this endpoint", http.StatusInternalServerError)
	}
	return off
}

func (f *fakeConsul) connectHealth(w http.ResponseWriter, r *http.Request) {
	if f.disabledAnswer(w) {
		return
	}
	name := r.PathValue("name")
	f.serve(w, r, func() (uint64, any) {
		out := []*consulapi.ServiceEntry{}
		for _, s := range f.services {
			for _, e := range s.entries {
				switch {
				case e.Service.Kind == consulapi.ServiceKindConnectProxy && e.Service.Proxy != nil &&
					e.Service.Proxy.DestinationServiceName == name:
				case e.Service.Kind == consulapi.ServiceKindTypical && e.Service.Service == name &&
					e.Service.Connect != nil && e.Service.Connect.Native:
				default:
					continue
				}
				out = append(out, e)
			}
		}
		return f.index, out
	})
}

func (f *fakeConsul) caRoots(w http.ResponseWriter, r *http.Request) {
	if f.disabledAnswer(w) {
		return
	}
	f.serve(w, r, func() (uint64, any) {
		if f.connect.roots == nil {
			return f.index, &consulapi.CARootList{Roots: []*consulapi.CARoot{}}
		}
		return f.connect.rootsIndex, f.connect.roots
	})
}

func (f *fakeConsul) caLeaf(w http.ResponseWriter, r *http.Request) {
	if f.disabledAnswer(w) {
		return
	}
	name := r.PathValue("name")
	f.mu.Lock()
	l := f.connect.leaves[name]
	var failBody, raw string
	if l != nil {
		failBody, raw = l.failBody, l.raw
	}
	f.mu.Unlock()
	switch {
	case l == nil:
		http.Error(w, "no leaf for "+name+" in the fake", http.StatusInternalServerError)
		return
	case failBody != "":
		http.Error(w, failBody, http.StatusInternalServerError)
		return
	case raw != "":
		w.Header().Set("X-Consul-Index", "1")
		_, _ = w.Write([]byte(raw))
		return
	}
	f.serve(w, r, func() (uint64, any) {
		l := f.connect.leaves[name]
		return l.index, l.cert
	})
}

// SetConnectDisabled makes every Connect endpoint answer as Consul does
// with connect { enabled = false }.
func (f *fakeConsul) SetConnectDisabled(off bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connect.disabled = off
	close(f.wake)
	f.wake = make(chan struct{})
}

// SetRoots sets the CA roots: one per CA, the first active.
func (f *fakeConsul) SetRoots(trustDomain string, cas ...*testenv.CA) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rl := &consulapi.CARootList{TrustDomain: trustDomain}
	for i, ca := range cas {
		id := fmt.Sprintf("root-%d", i+1)
		rl.Roots = append(rl.Roots, &consulapi.CARoot{ID: id, Name: "fake " + id, RootCertPEM: string(ca.PEM), Active: i == 0})
		if i == 0 {
			rl.ActiveRootID = id
		}
	}
	f.connect.roots = rl
	f.connect.rootsIndex = f.changeLocked()
}

// SetLeaf issues a leaf for service from ca with the SPIFFE ID Consul would
// give it, and returns it (the key is in KeyPEM).
func (f *fakeConsul) SetLeaf(t testing.TB, ca *testenv.CA, trustDomain, service string, serial int64) *testenv.Leaf {
	t.Helper()
	uri := &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/ns/default/dc/dc1/svc/" + service}
	l := ca.Issue(t, LeafOptionsFor(service, uri, serial))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connect.leaves[service] = &fakeLeaf{
		index: f.changeLocked(),
		cert: &consulapi.LeafCert{
			SerialNumber: fmt.Sprint(serial), CertPEM: string(l.CertPEM), PrivateKeyPEM: string(l.KeyPEM),
			Service: service, ServiceURI: uri.String(),
		},
	}
	return l
}

// LeafOptionsFor is a leaf with a SPIFFE URI SAN, as Consul issues.
func LeafOptionsFor(service string, uri *url.URL, serial int64) testenv.LeafOptions {
	o := testenv.LeafOptions{Name: service, Serial: serial, Client: true}
	if uri != nil {
		o.URIs = []*url.URL{uri}
	}
	return o
}

// FailLeaf makes the service's leaf endpoint answer 500 with body ("":
// stop failing). raw, when not "", is a 200 answer with that body instead.
func (f *fakeConsul) FailLeaf(service, body, raw string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.connect.leaves[service]
	if l == nil {
		l = &fakeLeaf{}
		f.connect.leaves[service] = l
	}
	l.failBody, l.raw = body, raw
	close(f.wake)
	f.wake = make(chan struct{})
}

// sidecarEntry is a health entry of a connect-proxy registration as Consul
// makes it from a SidecarService: public port, destination, local app port
// and upstreams ("name:port" pairs). Checks as in entry.
func sidecarEntry(node, serviceID string, port, localPort int, config map[string]any, upstreams []string, checks ...string) *consulapi.ServiceEntry {
	dest, _, _ := strings.Cut(serviceID, "-")
	e := entry(node, serviceID+"-sidecar-proxy", "", port, checks...)
	e.Service.Service = dest + "-sidecar-proxy"
	e.Service.Kind = consulapi.ServiceKindConnectProxy
	for _, c := range e.Checks {
		if c.ServiceID != "" {
			c.ServiceName = e.Service.Service
		}
	}
	p := &consulapi.AgentServiceConnectProxyConfig{
		DestinationServiceName: dest, DestinationServiceID: serviceID,
		LocalServiceAddress: "127.0.0.1", LocalServicePort: localPort, Config: config,
	}
	for _, u := range upstreams {
		name, port, _ := strings.Cut(u, ":")
		var n int
		fmt.Sscan(port, &n)
		p.Upstreams = append(p.Upstreams, consulapi.Upstream{DestinationType: consulapi.UpstreamDestTypeService, DestinationName: name, LocalBindPort: n})
	}
	e.Service.Proxy = p
	return e
}

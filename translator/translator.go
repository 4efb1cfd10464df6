// Package translator turns a registry snapshot and a policy set into one IR
// config per proxy group, plus diagnostics for the operator.
//
// It is pure: no clock, no I/O, no logging, sorted iteration. The same
// inputs give the same IR on every replica, which is what makes
// content-hash versions and golden tests work.
package translator

import (
	"fmt"
	"net"
	"sort"
	"strconv"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// Result is one translation.
type Result struct {
	// Configs holds one config per proxy group in the policy set, sorted by
	// group name.
	Configs []*ir.Config
	// Diagnostics are warnings about the inputs, each naming the policy
	// file and line it concerns (a route to a service Consul does not know,
	// odd Consul data). The configs are complete regardless.
	Diagnostics policy.Diagnostics
}

// Config returns the named group's config.
func (r *Result) Config(group string) (*ir.Config, bool) {
	i := sort.Search(len(r.Configs), func(i int) bool { return r.Configs[i].Group >= group })
	if i < len(r.Configs) && r.Configs[i].Group == group {
		return r.Configs[i], true
	}
	return nil, false
}

// Translate builds every proxy group's IR, without the Connect mesh: routes
// through the mesh answer 503 (see TranslateWith).
func Translate(snap *registry.Snapshot, set *policy.Set) *Result {
	return TranslateWith(snap, set, nil)
}

// TranslateWith builds every proxy group's IR; mesh (nil when the mesh is
// off or has not synced) is what routes through the mesh need: the CA
// roots, each group's leaf certificate and its destinations' sidecars.
func TranslateWith(snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot) *Result {
	t := newTranslation(snap, set, mesh)
	t.translate()
	return t.res
}

func newTranslation(snap *registry.Snapshot, set *policy.Set, mesh *registry.MeshSnapshot) *translation {
	return &translation{snap: snap, set: set, mesh: mesh, res: &Result{}, warned: map[string]bool{}}
}

// translate fills t.res with every group's config.
func (t *translation) translate() {
	for _, g := range t.set.Groups {
		t.res.Configs = append(t.res.Configs, t.group(&g))
	}
	sort.Slice(t.res.Configs, func(i, j int) bool { return t.res.Configs[i].Group < t.res.Configs[j].Group })
}

type translation struct {
	snap   *registry.Snapshot
	set    *policy.Set
	mesh   *registry.MeshSnapshot // nil: no mesh
	res    *Result
	warned map[string]bool // warnings already given
	// served is what each service's sidecars serve (serves), computed
	// on first use.
	served map[string]ir.Protocol
	// cache holds an EdgeTranslator's clusters (nil: translate every
	// cluster); record, when set, collects every warning given, even
	// one given before, for the cluster being cached.
	cache  *clusterCache
	record *[]policy.Diagnostic
}

// warn records a warning once, however many groups run into it.
func (t *translation) warn(pos policy.Pos, format string, args ...any) {
	t.diagnose(policy.Diagnostic{Pos: pos, Severity: policy.SeverityWarning, Message: fmt.Sprintf(format, args...)})
}

// diagnose records a diagnostic once, however many groups run into it.
func (t *translation) diagnose(d policy.Diagnostic) {
	if t.record != nil {
		*t.record = append(*t.record, d)
	}
	if key := d.String(); !t.warned[key] {
		t.warned[key] = true
		t.res.Diagnostics = append(t.res.Diagnostics, d)
	}
}

func (t *translation) group(g *policy.ProxyGroup) *ir.Config {
	cfg := &ir.Config{Group: g.Name}
	gm := t.groupMesh(g)
	var refs []serviceRef
	if t.cache != nil && gm == nil {
		refs = t.cachedListeners(g, cfg)
	} else {
		refs = t.listeners(g, gm, cfg)
	}
	authz, grpcAuthz := authClusters(g)
	t.warnPlainJWKS(g)
	http2 := make(map[string]bool, len(refs))
	if len(refs) > 0 { // nil when none, as appending leaves it
		cfg.Clusters = make([]ir.Cluster, 0, len(refs)+2) // tracing and rate limit clusters may follow
	}
	for _, ref := range refs {
		var c ir.Cluster
		if t.cache != nil {
			c = t.cachedCluster(ref.name, &ref.subset, ref.pos, ref.unregistered)
		} else {
			c = t.cluster(ref.name, &ref.subset, ref.pos, ref.unregistered)
		}
		if grpcAuthz[ref.name] && ref.subset.IsZero() {
			c.HTTP2 = true
		}
		http2[ref.name] = c.HTTP2
		cfg.Clusters = append(cfg.Clusters, c)
	}
	if g.RateLimitService != nil {
		cfg.Clusters = append(cfg.Clusters, t.rateLimitCluster(g.RateLimitService))
	}
	cfg.Clusters = append(cfg.Clusters, authz...)
	if g.Tracing != nil {
		cfg.Clusters = append(cfg.Clusters, tracingCluster(g.Tracing))
	}
	if g.Tracing != nil || len(authz) > 0 || g.RateLimitService != nil {
		sort.SliceStable(cfg.Clusters, func(i, j int) bool { return cfg.Clusters[i].Service < cfg.Clusters[j].Service })
	}
	// Envoy passes a WebSocket upgrade to an HTTP/1.1 upstream only.
	for _, l := range g.Listeners {
		for _, vh := range l.Hosts {
			for _, r := range vh.Routes {
				if !l.WebSocket && !r.WebSocket {
					continue
				}
				if r.Mesh {
					t.warn(r.Pos, "route allows WebSocket upgrades but reaches its services through the mesh, whose sidecars do not pass upgrades yet; the upgrade will fail")
					continue
				}
				for _, svc := range routeServices(&r) {
					if http2[svc.name] {
						t.warn(r.Pos, "route allows WebSocket upgrades but service %q is spoken to over HTTP/2 (its protocol); the upgrade will fail: route WebSockets to an HTTP/1.1 service", svc.name)
					}
				}
			}
		}
	}
	cfg.Mesh = gm.done()
	return cfg
}

// listeners translates a group's listeners and secrets into cfg, sorted by
// name, and returns the clusters its routes name (not through the mesh),
// each with the first route naming it, sorted by key.
func (t *translation) listeners(g *policy.ProxyGroup, gm *groupMesh, cfg *ir.Config) []serviceRef {
	services := map[string]serviceRef{} // cluster key -> first route naming it
	secrets := map[string]bool{}
	for _, l := range g.Listeners {
		il := ir.Listener{Name: l.Name, Address: l.Address, Port: l.Port, Source: l.Pos.String(), WebSocket: l.WebSocket, XFFTrustedHops: l.XFFTrustedHops}
		if a := g.EffectiveAccessLog(); a != nil {
			il.AccessLog = &ir.AccessLog{Path: a.Path, Format: a.Format}
		}
		if tr := g.Tracing; tr != nil {
			il.Tracing = &ir.Tracing{Cluster: ir.TracingCluster, Sampling: uint32(tr.Sampling), ServiceName: tr.ServiceName}
		}
		il.RateLimitService = rateLimitService(g)
		if l.TLS != nil {
			il.TLS = &ir.TLS{}
			for _, name := range l.TLS.Certificates {
				il.TLS.Secrets = append(il.TLS.Secrets, name)
				cert, ok := t.set.Certificate(name)
				if !ok {
					// policy validation rejects this; never reached with a valid set.
					continue
				}
				if il.TLS.ClientCA == "" && len(cert.CAPEM) > 0 {
					il.TLS.ClientCA = name
				}
				if !secrets[name] {
					secrets[name] = true
					cfg.Secrets = append(cfg.Secrets, secret(&cert))
				}
			}
		}
		limitHosts := limitHostNames(&l)
		for hi, vh := range l.Hosts {
			ivh := ir.VirtualHost{
				Name: vh.Domains[0], Domains: vh.Domains,
				HTTPSRedirect:   l.TLS == nil && (vh.HTTPSRedirect || l.HTTPSRedirect),
				RequestHeaders:  headers(vh.RequestHeaders),
				ResponseHeaders: headers(vh.ResponseHeaders),
			}
			ivh.GlobalRateLimits = globalRateLimits(hostLimitID(l.Name, limitHosts[hi]), vh.GlobalRateLimits)
			if len(vh.Routes) > 0 { // nil when none, as appending leaves it
				ivh.Routes = make([]ir.Route, 0, len(vh.Routes))
			}
			for _, r := range vh.Routes {
				out := route(&r)
				out.CORS = routeCORS(&vh, &r)
				out.IPAccess = ipAccess(&l, &vh, &r)
				out.GlobalRateLimits = globalRateLimits(routeLimitID(l.Name, limitHosts[hi], r.Name), r.GlobalRateLimits)
				routeAuth(&l, &vh, &r, &out)
				if r.Mesh {
					// Its services are reached through their sidecars,
					// not their own clusters.
					gm.route(t, &r, &out)
					ivh.Routes = append(ivh.Routes, out)
					continue
				}
				t.hash(&r, &out)
				ivh.Routes = append(ivh.Routes, out)
				for _, svc := range append(routeServices(&r), mirrorServices(&r)...) {
					if _, ok := services[svc.key()]; !ok {
						services[svc.key()] = svc
					}
				}
			}
			il.VirtualHosts = append(il.VirtualHosts, ivh)
		}
		listenerAuth(&l, &il)
		for _, svc := range authServices(&l) {
			if _, ok := services[svc.key()]; !ok {
				services[svc.key()] = svc
			}
		}
		httpsRedirectRest(&l, &il)
		requestLimits(&l, &il)
		if rr := l.RateLimitResponse; rr != nil {
			il.RateLimitResponse = &ir.RateLimitResponse{Body: rr.Body, ContentType: rr.ContentType}
		}
		cfg.Listeners = append(cfg.Listeners, il)
	}
	gm.dropNameClashes(t, services, cfg.Listeners)
	sort.Slice(cfg.Listeners, func(i, j int) bool { return cfg.Listeners[i].Name < cfg.Listeners[j].Name })
	sort.Slice(cfg.Secrets, func(i, j int) bool { return cfg.Secrets[i].Name < cfg.Secrets[j].Name })
	keys := make([]string, 0, len(services))
	for key := range services {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	refs := make([]serviceRef, len(keys))
	for i, key := range keys {
		refs[i] = services[key]
	}
	return refs
}

// tracingCluster is the cluster of a group's tracing collector: its
// address (Envoy resolves a DNS name), spoken to over HTTP/2 as gRPC is.
func tracingCluster(tr *policy.Tracing) ir.Cluster {
	host, port, _ := net.SplitHostPort(tr.Address) // policy validation checked it
	p, _ := strconv.Atoi(port)
	return ir.Cluster{Service: ir.TracingCluster, Source: tr.Pos.String(), HTTP2: true, DNS: net.ParseIP(host) == nil,
		Endpoints: []ir.Endpoint{{ID: tr.Address, Address: host, Port: uint32(p), Health: ir.Healthy, Weight: 1}}}
}

// serviceRef is a route's reference to a service, or to a subset of its
// instances: one cluster.
type serviceRef struct {
	name   string
	pos    policy.Pos
	subset policy.Subset
	// unregistered says what a missing service costs, for the warning
	// when Consul does not know it ("" is a route's: its requests answer
	// 503).
	unregistered string
}

// key identifies the cluster: the service and the subset's label (a space
// cannot occur in a service name).
func (s *serviceRef) key() string { return s.name + " " + s.subset.String() }

func routeServices(r *policy.Route) []serviceRef {
	if r.Service != "" {
		return []serviceRef{{name: r.Service, pos: r.Pos, subset: r.Subset}}
	}
	var out []serviceRef
	for _, w := range r.Split {
		out = append(out, serviceRef{name: w.Service, pos: w.Pos, subset: w.Subset})
	}
	return out
}

func route(r *policy.Route) ir.Route {
	out := ir.Route{
		Name:      r.Name,
		Source:    r.Pos.String(),
		WebSocket: r.WebSocket,
		Match:     match(&r.Match),
	}
	if r.Timeout != nil {
		d := ir.D(*r.Timeout)
		out.Timeout = &d
	}
	if r.RateLimit != nil {
		out.RateLimit = rateLimit(r.RateLimit)
	}
	out.ResponseHeaders = headers(r.ResponseHeaders)
	if r.Redirect != nil {
		out.Redirect = redirect(r.Redirect, &r.Match)
		return out
	}
	if dr := r.DirectResponse; dr != nil {
		out.DirectResponse = &ir.DirectResponse{Status: dr.Status, Body: dr.Body, ContentType: dr.ContentType}
		return out
	}
	forwardChanges(r, &out)
	if r.Service != "" {
		out.Backends = []ir.Backend{{Service: r.Service, Subset: r.Subset.String(), Weight: 1}}
	}
	for _, w := range r.Split {
		out.Backends = append(out.Backends, ir.Backend{Service: w.Service, Subset: w.Subset.String(), Weight: w.Weight})
	}
	switch {
	case r.Retries == nil:
		// Safe retries even when the file asks for none: see
		// policy.ImplicitRetryOn.
		out.Retries = &ir.Retries{Attempts: policy.ImplicitRetryAttempts, On: policy.ImplicitRetryOn()}
	case r.Retries.Attempts > 0:
		out.Retries = retries(r.Retries)
	}
	return out
}

func secret(c *policy.Certificate) ir.Secret {
	return ir.Secret{
		Name:    c.Name,
		Source:  c.Pos.String(),
		CertPEM: string(c.CertPEM),
		KeyPEM:  ir.PrivateKey(c.KeyPEM),
		CAPEM:   string(c.CAPEM),
	}
}

// Services lists every Consul service the policy set routes to directly
// (not through the mesh: see MeshDestinations), its groups' rate limit
// services found in Consul, and the mesh identities of
// its groups that route through the mesh (MeshIdentities: a group may not
// present a registered service's identity, so the registry must say
// whether one is), sorted: the registry needs to watch these and no
// others.
func Services(set *policy.Set) []string {
	seen := map[string]bool{}
	for _, g := range set.Groups {
		if g.UsesMesh() {
			seen[g.MeshService()] = true
		}
		if s := g.RateLimitService; s != nil && s.Service != "" {
			seen[s.Service] = true
		}
		for _, l := range g.Listeners {
			for _, ref := range authServices(&l) {
				seen[ref.name] = true
			}
		}
		eachRoute(&g, func(r *policy.Route) {
			if !r.Mesh {
				for _, ref := range append(routeServices(r), mirrorServices(r)...) {
					seen[ref.name] = true
				}
			}
		})
	}
	return sortedKeys(seen)
}

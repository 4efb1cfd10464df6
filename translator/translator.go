// Package translator turns a registry snapshot and a policy set into one IR
// config per proxy group, plus diagnostics for the operator.
//
// It is pure: no clock, no I/O, no logging, sorted iteration. The same
// inputs give the same IR on every replica, which is what makes
// content-hash versions and golden tests work.
package translator

import (
	"fmt"
	"sort"

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
	t := &translation{snap: snap, set: set, mesh: mesh, res: &Result{}, warned: map[string]bool{}}
	for _, g := range set.Groups {
		t.res.Configs = append(t.res.Configs, t.group(&g))
	}
	sort.Slice(t.res.Configs, func(i, j int) bool { return t.res.Configs[i].Group < t.res.Configs[j].Group })
	return t.res
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
}

// warn records a warning once, however many groups run into it.
func (t *translation) warn(pos policy.Pos, format string, args ...any) {
	d := policy.Diagnostic{Pos: pos, Severity: policy.SeverityWarning, Message: fmt.Sprintf(format, args...)}
	if key := d.String(); !t.warned[key] {
		t.warned[key] = true
		t.res.Diagnostics = append(t.res.Diagnostics, d)
	}
}

func (t *translation) group(g *policy.ProxyGroup) *ir.Config {
	cfg := &ir.Config{Group: g.Name}
	gm := t.groupMesh(g)
	services := map[string]policy.Pos{} // service -> first route naming it
	secrets := map[string]bool{}
	for _, l := range g.Listeners {
		il := ir.Listener{Name: l.Name, Address: l.Address, Port: l.Port, Source: l.Pos.String(), WebSocket: l.WebSocket}
		if a := g.EffectiveAccessLog(); a != nil {
			il.AccessLog = &ir.AccessLog{Path: a.Path, Format: a.Format}
		}
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
		for _, vh := range l.Hosts {
			ivh := ir.VirtualHost{
				Name: vh.Domains[0], Domains: vh.Domains,
				HTTPSRedirect:   l.TLS == nil && (vh.HTTPSRedirect || l.HTTPSRedirect),
				RequestHeaders:  headers(vh.RequestHeaders),
				ResponseHeaders: headers(vh.ResponseHeaders),
			}
			for _, r := range vh.Routes {
				out := route(&r)
				out.CORS = routeCORS(&vh, &r)
				if r.Mesh {
					// Its services are reached through their sidecars,
					// not their own clusters.
					gm.route(t, &r, &out)
					ivh.Routes = append(ivh.Routes, out)
					continue
				}
				ivh.Routes = append(ivh.Routes, out)
				for _, svc := range append(routeServices(&r), mirrorServices(&r)...) {
					if _, ok := services[svc.name]; !ok {
						services[svc.name] = svc.pos
					}
				}
			}
			il.VirtualHosts = append(il.VirtualHosts, ivh)
		}
		httpsRedirectRest(&l, &il)
		cfg.Listeners = append(cfg.Listeners, il)
	}
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	http2 := map[string]bool{}
	for _, name := range names {
		c := t.cluster(name, services[name])
		http2[name] = c.HTTP2
		cfg.Clusters = append(cfg.Clusters, c)
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
	sort.Slice(cfg.Listeners, func(i, j int) bool { return cfg.Listeners[i].Name < cfg.Listeners[j].Name })
	sort.Slice(cfg.Secrets, func(i, j int) bool { return cfg.Secrets[i].Name < cfg.Secrets[j].Name })
	return cfg
}

type serviceRef struct {
	name string
	pos  policy.Pos
}

func routeServices(r *policy.Route) []serviceRef {
	if r.Service != "" {
		return []serviceRef{{r.Service, r.Pos}}
	}
	var out []serviceRef
	for _, w := range r.Split {
		out = append(out, serviceRef{w.Service, w.Pos})
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
		out.RateLimit = &ir.RateLimit{Requests: r.RateLimit.Requests, Per: ir.D(r.RateLimit.Per), Burst: r.RateLimit.Burst}
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
		out.Backends = []ir.Backend{{Service: r.Service, Weight: 1}}
	}
	for _, w := range r.Split {
		out.Backends = append(out.Backends, ir.Backend{Service: w.Service, Weight: w.Weight})
	}
	switch {
	case r.Retries == nil:
		// Safe retries even when the file asks for none: see
		// policy.ImplicitRetryOn.
		out.Retries = &ir.Retries{Attempts: policy.ImplicitRetryAttempts, On: policy.ImplicitRetryOn()}
	case r.Retries.Attempts > 0:
		out.Retries = &ir.Retries{
			Attempts:      r.Retries.Attempts,
			On:            append([]string(nil), r.Retries.On...),
			PerTryTimeout: ir.D(r.Retries.PerTryTimeout),
		}
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
// (not through the mesh: see MeshDestinations), sorted: the registry needs
// to watch these and no others.
func Services(set *policy.Set) []string {
	seen := map[string]bool{}
	for _, g := range set.Groups {
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

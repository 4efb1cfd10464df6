package translator

import (
	"fmt"
	"net"
	"strconv"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// listenerAuth translates a listener's extAuthz and jwt.
func listenerAuth(l *policy.Listener, il *ir.Listener) {
	if a := l.ExtAuthz; a != nil {
		il.ExtAuthz = &ir.ExtAuthz{
			Cluster: a.Service, Authority: a.Service,
			GRPC: a.Protocol == policy.ExtAuthzGRPC, Timeout: ir.D(a.Timeout), FailOpen: a.FailOpen,
			PathPrefix: a.PathPrefix, Headers: a.Headers,
			UpstreamHeaders: a.UpstreamHeaders, ClientHeaders: a.ClientHeaders,
		}
		if a.Address != "" {
			il.ExtAuthz.Cluster, il.ExtAuthz.Authority = ir.ExtAuthzCluster(l.Name), a.Address
		}
		if il.ExtAuthz.GRPC {
			il.ExtAuthz.Authority = ""
		}
	}
	if j := l.JWT; j != nil {
		il.JWT = &ir.JWT{Providers: make([]ir.JWTProvider, 0, len(j.Providers))}
		for _, p := range j.Providers {
			ip := ir.JWTProvider{
				Name: p.Name, Issuer: p.Issuer, Audiences: p.Audiences, LocalJWKS: p.JWKS,
				Forward: p.Forward, PayloadHeader: p.PayloadHeader,
			}
			if r := p.RemoteJWKS; r != nil {
				ip.RemoteJWKS = &ir.RemoteJWKS{Cluster: r.Service, URI: "http://" + r.Service + r.Path,
					CacheDuration: ir.D(r.CacheDuration), Timeout: ir.D(r.Timeout)}
			}
			for _, c := range p.ClaimHeaders {
				ip.ClaimHeaders = append(ip.ClaimHeaders, ir.ClaimHeader{Claim: c.Claim, Header: c.Header})
			}
			il.JWT.Providers = append(il.JWT.Providers, ip)
		}
	}
}

// routeAuth sets what a route's requests need of its listener's extAuthz
// and jwt.
func routeAuth(l *policy.Listener, h *policy.VirtualHost, r *policy.Route, out *ir.Route) {
	out.ExtAuthzOff = l.ExtAuthz != nil && !policy.EffectiveExtAuthz(l, h, r)
	out.JWTRequire = policy.EffectiveJWT(l, h, r)
}

// authServices lists the Consul services a listener's extAuthz and JWT
// providers are reached through: clusters like those of routes.
func authServices(l *policy.Listener) []serviceRef {
	var out []serviceRef
	if a := l.ExtAuthz; a != nil && a.Service != "" {
		cost := "until it is, the requests listener " + strconv.Quote(l.Name) + " checks are answered 403"
		if a.FailOpen {
			cost = "until it is, the requests listener " + strconv.Quote(l.Name) + " checks pass unchecked (failureMode: allow)"
		}
		out = append(out, serviceRef{name: a.Service, pos: a.Pos, unregistered: cost})
	}
	if j := l.JWT; j != nil {
		for _, p := range j.Providers {
			if p.RemoteJWKS != nil {
				out = append(out, serviceRef{name: p.RemoteJWKS.Service, pos: p.Pos,
					unregistered: "until it is, provider " + strconv.Quote(p.Name) + "'s keys cannot be fetched and its tokens are refused (401)"})
			}
		}
	}
	return out
}

// warnPlainJWKS warns at each remoteJWKS of a group's listeners. Envoy
// fetches the key set over plain HTTP: Switchyard has no upstream TLS for
// a Consul service (the Service policy has no option for it), so anyone on
// the network path between Envoy and the service's instances could answer
// with signing keys of their own, and Envoy would accept the tokens they
// sign. A provider the listeners share (the group's jwt) is warned about
// once.
func (t *translation) warnPlainJWKS(g *policy.ProxyGroup) {
	for _, l := range g.Listeners {
		t.warnPlainExtAuthz(l.ExtAuthz)
		if l.JWT == nil {
			continue
		}
		for _, p := range l.JWT.Providers {
			if r := p.RemoteJWKS; r != nil {
				t.warn(r.Pos, "JWT provider %q fetches its signing keys from service %q over plain HTTP, as Switchyard has no upstream TLS (the Service policy has no option for it): anyone on the network path to its instances could serve keys of their own, and Envoy would accept the tokens they sign; jwksFile or jwks avoid it", p.Name, r.Service)
			}
		}
	}
}

// warnPlainExtAuthz warns at an authorization service reached over plain
// text off this host: every check request carries the request's
// credentials (its Authorization header at least), and Switchyard has no
// upstream TLS, so anyone on the network path to the service could read
// them, or answer "allowed" to every check. A service on a loopback
// address is on the gateway's own host, and not warned about.
func (t *translation) warnPlainExtAuthz(a *policy.ExtAuthz) {
	if a == nil {
		return
	}
	target := fmt.Sprintf("%q", a.Service)
	if a.Address != "" {
		host, _, _ := net.SplitHostPort(a.Address) // policy validation checked it
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return
		}
		target = "at " + a.Address
	}
	t.warn(a.Pos, "authorization service %s is reached over plain text, as Switchyard has no upstream TLS (the Service policy has no option for it): every check request carries the request's credentials, and anyone on the network path could read them or answer that every request is allowed; run the service where that path is trusted", target)
}

// authClusters are the clusters of a group's authorization services given
// by address, and grpc the Consul services that are gRPC authorization
// services, which Envoy must speak HTTP/2 to whatever their protocol.
func authClusters(g *policy.ProxyGroup) (clusters []ir.Cluster, grpc map[string]bool) {
	grpc = map[string]bool{}
	for _, l := range g.Listeners {
		a := l.ExtAuthz
		switch {
		case a == nil:
		case a.Address != "":
			host, port, _ := net.SplitHostPort(a.Address) // policy validation checked it
			p, _ := strconv.Atoi(port)
			clusters = append(clusters, ir.Cluster{
				Service: ir.ExtAuthzCluster(l.Name), Source: a.Pos.String(),
				HTTP2: a.Protocol == policy.ExtAuthzGRPC, DNS: net.ParseIP(host) == nil,
				Endpoints: []ir.Endpoint{{ID: a.Address, Address: host, Port: uint32(p), Health: ir.Healthy, Weight: 1}},
			})
		case a.Protocol == policy.ExtAuthzGRPC:
			grpc[a.Service] = true
		}
	}
	return clusters, grpc
}

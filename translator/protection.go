package translator

import (
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// requestLimits applies the listener's request limits: the header bound
// to the listener itself, the body bound to each of its routes (Envoy's
// buffer filter is configured per route, so that changing the bound
// changes routes only), except WebSocket routes, whose stream never ends.
func requestLimits(l *policy.Listener, il *ir.Listener) {
	rl := l.RequestLimits
	if rl == nil {
		return
	}
	il.MaxRequestHeadersKB = rl.MaxHeadersKB
	if rl.MaxBodyBytes == 0 {
		return
	}
	for i := range il.VirtualHosts {
		for j := range il.VirtualHosts[i].Routes {
			if r := &il.VirtualHosts[i].Routes[j]; !r.WebSocket {
				r.MaxRequestBytes = rl.MaxBodyBytes
			}
		}
	}
}

// ipAccess is the route's effective IP access in the IR; nil: none.
func ipAccess(l *policy.Listener, h *policy.VirtualHost, r *policy.Route) *ir.IPAccess {
	a := policy.EffectiveIPAccess(l, h, r)
	if a == nil {
		return nil
	}
	out := &ir.IPAccess{}
	for _, p := range a.Allow {
		out.Allow = append(out.Allow, p.String())
	}
	for _, p := range a.Deny {
		out.Deny = append(out.Deny, p.String())
	}
	return out
}

// rateLimit is a route's rate limit in the IR: the policy's, field for
// field (policy and IR name the By values alike).
func rateLimit(rl *policy.RateLimit) *ir.RateLimit {
	return &ir.RateLimit{
		Requests: rl.Requests, Per: ir.D(rl.Per), Burst: rl.Burst,
		By: rl.By, Header: rl.Header, Clients: rl.Clients,
		Shadow: rl.Shadow, Headers: rl.Headers,
	}
}

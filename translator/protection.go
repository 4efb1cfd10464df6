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

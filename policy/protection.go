package policy

import "go.yaml.in/yaml/v3"

// Bounds of a listener's requestLimits.
const (
	// MaxHeadersKBLimit is the largest maxHeadersKB Envoy accepts (its
	// max_request_headers_kb is at most 8192).
	MaxHeadersKBLimit = 8192
	// EnvoyDefaultHeadersKB is what Envoy allows when maxHeadersKB is not
	// set.
	EnvoyDefaultHeadersKB = 60
)

// RequestLimits bounds the size of the requests a listener accepts:
// Envoy answers 431 to a request whose headers are too large and 413 to
// one whose body is.
type RequestLimits struct {
	Pos Pos
	// MaxHeadersKB bounds the request line and headers together, in KiB
	// (1 to MaxHeadersKBLimit); 0: Envoy's default, EnvoyDefaultHeadersKB.
	MaxHeadersKB uint32
	// MaxBodyBytes bounds the request body; 0: no bound. Envoy buffers a
	// bounded body whole before forwarding it, so a listener with it does
	// not stream uploads; WebSocket routes are not bounded.
	MaxBodyBytes uint32
}

func (d *decoder) requestLimits(n *yaml.Node, l *Listener) *RequestLimits {
	m, ok := d.mapping(n, "requestLimits", "maxHeadersKB", "maxBodyBytes")
	if !ok {
		return nil
	}
	rl := &RequestLimits{Pos: d.pos(m.line)}
	if !m.has("maxHeadersKB") && !m.has("maxBodyBytes") {
		d.errorf(m.line, "requestLimits needs at least one of maxHeadersKB or maxBodyBytes")
	}
	if v, ok := d.integer(m, "maxHeadersKB", 1, MaxHeadersKBLimit); ok {
		rl.MaxHeadersKB = uint32(v)
	}
	if v, ok := d.uint32Field(m, "maxBodyBytes", 1); ok {
		rl.MaxBodyBytes = v
		if l.WebSocket {
			// Envoy would buffer each WebSocket's frames until the stream
			// ends, which it never does.
			d.errorf(m.lineOf("maxBodyBytes"), "maxBodyBytes cannot be used on a listener with websocket: true: Envoy buffers a bounded body whole, and a WebSocket's stream never ends; allow WebSockets on the routes that need them instead (they are not bounded)")
		}
	}
	return rl
}

package policy

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// Retry conditions that take a list from the retries block.
const (
	retryOnStatusCodes = "retriable-status-codes"
	retryOnHeaders     = "retriable-headers"
)

// retryLists decodes a retries block's backoff, statusCodes and headers,
// and checks them against its conditions (r.On): a list without its
// condition would never be used, so with on omitted the condition is
// added to the default, and with on given it is an error to leave it out.
func (d *decoder) retryLists(m *fields, r *Retries) {
	if n := m.vals["backoff"]; n != nil {
		r.Backoff = d.retryBackoff(n)
	}
	if m.has("statusCodes") {
		r.StatusCodes = d.statusCodes(m)
	}
	if m.has("headers") {
		if m.emptyList("headers") {
			d.errorf(m.lineOf("headers"), "headers must list at least one response header match, or be omitted")
		}
		for _, n := range d.list(m, "headers") {
			if h, ok := d.header(n); ok {
				r.Headers = append(r.Headers, h)
			}
		}
	}
	for _, c := range []struct {
		key, cond, header string // header: what a request may list instead
		set               bool
	}{
		{"statusCodes", retryOnStatusCodes, "x-envoy-retriable-status-codes", m.has("statusCodes")},
		{"headers", retryOnHeaders, "x-envoy-retriable-header-names", m.has("headers")},
	} {
		has := slices.Contains(r.On, c.cond)
		switch {
		case c.set && !m.has("on"):
			r.On = append(r.On, c.cond)
		case c.set && !has:
			d.errorf(m.lineOf(c.key), "%s needs retry condition %s in on, or it is never used", c.key, c.cond)
		case !c.set && has:
			d.warnf(m.lineOf("on"), "retry condition %q without %s retries only what a request lists in its %s header", c.cond, c.key, c.header)
		}
	}
}

func (d *decoder) retryBackoff(n *yaml.Node) *RetryBackoff {
	m, ok := d.mapping(n, "backoff", "base", "max")
	if !ok {
		return nil
	}
	b := &RetryBackoff{}
	if d.require(m, "base") {
		if v := d.minDuration(m, "base", MinUpstreamDuration); v != nil {
			b.Base = *v
		}
	}
	b.Max = 10 * b.Base
	if v := d.minDuration(m, "max", MinUpstreamDuration); v != nil {
		b.Max = *v
		if b.Base > 0 && b.Max < b.Base {
			d.errorf(m.lineOf("max"), "backoff max %s is shorter than base %s", b.Max, b.Base)
		}
	}
	return b
}

// statusCodes decodes retries.statusCodes: HTTP status codes, each once.
func (d *decoder) statusCodes(m *fields) []uint32 {
	if m.emptyList("statusCodes") {
		d.errorf(m.lineOf("statusCodes"), "statusCodes must list at least one status code, or be omitted")
	}
	var out []uint32
	for _, n := range d.list(m, "statusCodes") {
		var v int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
			d.errorf(n.Line, "statusCodes items must be integers, got %s", describe(n))
			continue
		}
		switch {
		case v < 100 || v > 599:
			d.errorf(n.Line, "status code %d is not between 100 and 599", v)
		case slices.Contains(out, uint32(v)):
			d.errorf(n.Line, "status code %d is listed twice", v)
		default:
			out = append(out, uint32(v))
		}
	}
	return out
}

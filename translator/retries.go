package translator

import (
	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// retries converts a retries block with attempts, for a route at the edge
// and for a service's mesh callers alike.
func retries(r *policy.Retries) *ir.Retries {
	out := &ir.Retries{
		Attempts:      r.Attempts,
		On:            append([]string(nil), r.On...),
		PerTryTimeout: ir.D(r.PerTryTimeout),
		StatusCodes:   append([]uint32(nil), r.StatusCodes...),
	}
	if b := r.Backoff; b != nil {
		out.Backoff = &ir.RetryBackoff{Base: ir.D(b.Base), Max: ir.D(b.Max)}
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, ir.HeaderMatch{
			Name: h.Name, Exact: h.Exact, Prefix: h.Prefix, Regex: h.Regex, Present: h.Present,
		})
	}
	return out
}

package ir

import (
	"errors"
	"fmt"
	"net/netip"
)

// MaxRequestHeadersKB is the largest Listener.MaxRequestHeadersKB Envoy
// accepts.
const MaxRequestHeadersKB = 8192

// IPAccess refuses (403) a client whose address is in Deny, or, when
// Allow is set, in none of Allow. Both hold canonical CIDR ranges.
type IPAccess struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
}

func (a *IPAccess) validate() error {
	if len(a.Allow) == 0 && len(a.Deny) == 0 {
		return errors.New("ip access with neither allow nor deny")
	}
	var errs []error
	for _, c := range append(append([]string(nil), a.Allow...), a.Deny...) {
		if p, err := netip.ParsePrefix(c); err != nil || p.Masked() != p {
			errs = append(errs, fmt.Errorf("ip access: %q is not a canonical CIDR range", c))
		}
	}
	return errors.Join(errs...)
}

// What gives a request its own rate-limit bucket (RateLimit.By).
const (
	RateLimitByClientIP = "clientIP"
	RateLimitByHeader   = "header"
	RateLimitByPath     = "path"
)

func (r *RateLimit) validate() error {
	switch {
	case r.Requests == 0 || r.Burst == 0 || r.Per.Duration <= 0:
		return fmt.Errorf("rate limit of %d per %s, burst %d", r.Requests, r.Per, r.Burst)
	case r.By != "" && r.By != RateLimitByClientIP && r.By != RateLimitByHeader && r.By != RateLimitByPath:
		return fmt.Errorf("rate limit by %q", r.By)
	case (r.By == RateLimitByHeader) != (r.Header != ""):
		return fmt.Errorf("rate limit by %q with header %q", r.By, r.Header)
	case (r.By != "") != (r.Clients > 0):
		return fmt.Errorf("rate limit by %q for %d clients", r.By, r.Clients)
	}
	return nil
}

// RateLimitResponse is the body (and its Content-Type, "" for text/plain)
// of a listener's 429 answers to rate-limited requests.
type RateLimitResponse struct {
	Body        string `json:"body"`
	ContentType string `json:"contentType,omitempty"`
}

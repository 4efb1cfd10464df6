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

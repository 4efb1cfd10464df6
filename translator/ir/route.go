package ir

import (
	"errors"
	"fmt"
	"slices"
)

// Redirect answers a route's requests with a redirect to the request's URL
// with the set parts replaced. At most one of Path, PrefixRewrite and
// RegexRewrite is set.
type Redirect struct {
	Scheme string `json:"scheme,omitempty"` // "http" or "https"
	Host   string `json:"host,omitempty"`
	Port   uint32 `json:"port,omitempty"`
	// Path replaces the whole path.
	Path string `json:"path,omitempty"`
	// PrefixRewrite replaces the prefix (or path) the route matched.
	PrefixRewrite string `json:"prefixRewrite,omitempty"`
	// RegexRewrite rewrites the path by a regex substitution.
	RegexRewrite *RegexRewrite `json:"regexRewrite,omitempty"`
	Code         int           `json:"code"` // 301, 302, 303, 307 or 308
	StripQuery   bool          `json:"stripQuery,omitempty"`
}

// RegexRewrite replaces every match of Pattern (RE2) in the path with
// Substitution, where \1 ... \9 stand for the pattern's groups.
type RegexRewrite struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

// Rewrite changes a forwarded request. At most one of PrefixRewrite and
// RegexRewrite is set.
type Rewrite struct {
	// PrefixRewrite replaces the prefix (or path) the route matched.
	PrefixRewrite string        `json:"prefixRewrite,omitempty"`
	RegexRewrite  *RegexRewrite `json:"regexRewrite,omitempty"`
	// Host replaces the Host (:authority) header.
	Host string `json:"host,omitempty"`
	// HostFromUpstream replaces it with the address of the chosen
	// instance (Envoy's auto host rewrite, from the endpoint's hostname).
	HostFromUpstream bool `json:"hostFromUpstream,omitempty"`
}

// DirectResponse answers a route's requests with a fixed status and body.
type DirectResponse struct {
	Status int    `json:"status"` // 200 to 599, not 3xx
	Body   string `json:"body,omitempty"`
	// ContentType, when set, is the response's Content-Type.
	ContentType string `json:"contentType,omitempty"`
}

// MaxDirectResponseBody is the longest body Envoy accepts by default.
const MaxDirectResponseBody = 4096

// Headers changes the headers of a request or a response: Set replaces
// (or adds) a header, Add appends a value, Remove drops a header. Values
// may hold Envoy's %...% dynamic values, checked by the policy.
type Headers struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is one header name (lowercase) and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// CORS is a host's or route's CORS policy, which Envoy's CORS filter
// applies: it answers preflight requests and adds Access-Control-*
// headers for allowed origins.
type CORS struct {
	AllowOrigins     []OriginMatch `json:"allowOrigins"`
	AllowMethods     []string      `json:"allowMethods,omitempty"`
	AllowHeaders     []string      `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string      `json:"exposeHeaders,omitempty"`
	MaxAge           *Duration     `json:"maxAge,omitempty"` // whole seconds
	AllowCredentials bool          `json:"allowCredentials,omitempty"`
}

// OriginMatch matches an Origin header: Exact, compared ignoring case, or
// Regex (RE2, the whole value).
type OriginMatch struct {
	Exact string `json:"exact,omitempty"`
	Regex string `json:"regex,omitempty"`
}

// Mirror copies a share of a route's requests to a service's cluster;
// Envoy drops the copies' responses.
type Mirror struct {
	Service string `json:"service"`
	// PerMillion is the share copied, in millionths (1 to 1,000,000).
	PerMillion uint32 `json:"perMillion"`
}

// Fault injects failures into a share of a route's requests. At least one
// of Delay and Abort is set.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay holds a share of the requests (in millionths) for Duration.
type FaultDelay struct {
	Duration   Duration `json:"duration"`
	PerMillion uint32   `json:"perMillion"`
}

// FaultAbort answers a share of the requests (in millionths) with Status.
type FaultAbort struct {
	Status     int    `json:"status"`
	PerMillion uint32 `json:"perMillion"`
}

// redirectCodes are the status codes Envoy's redirect action can send.
var redirectCodes = []int{301, 302, 303, 307, 308}

// validateAction checks that the route does exactly one thing with a
// request, and that what it does is complete.
func (r *Route) validateAction() error {
	actions := 0
	for _, set := range []bool{len(r.Backends) > 0, r.Unavailable != "", r.Redirect != nil, r.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		return fmt.Errorf("route %q: want exactly one of backends, unavailable, redirect and directResponse, got %d", r.Name, actions)
	}
	if dr := r.DirectResponse; dr != nil {
		var errs []error
		if dr.Status < 200 || dr.Status > 599 || dr.Status/100 == 3 {
			errs = append(errs, fmt.Errorf("route %q: direct response status %d", r.Name, dr.Status))
		}
		if len(dr.Body) > MaxDirectResponseBody {
			errs = append(errs, fmt.Errorf("route %q: direct response body of %d bytes", r.Name, len(dr.Body)))
		}
		if r.forwards() {
			errs = append(errs, fmt.Errorf("route %q: a direct response has no timeout, retries, websocket, rewrite, request headers, mirrors or fault", r.Name))
		}
		return errors.Join(errs...)
	}
	if rd := r.Redirect; rd != nil {
		var errs []error
		if !slices.Contains(redirectCodes, rd.Code) {
			errs = append(errs, fmt.Errorf("route %q: redirect code %d", r.Name, rd.Code))
		}
		if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
			errs = append(errs, fmt.Errorf("route %q: redirect scheme %q", r.Name, rd.Scheme))
		}
		if rd.Port > 65535 {
			errs = append(errs, fmt.Errorf("route %q: redirect port %d", r.Name, rd.Port))
		}
		paths := 0
		for _, set := range []bool{rd.Path != "", rd.PrefixRewrite != "", rd.RegexRewrite != nil} {
			if set {
				paths++
			}
		}
		if paths > 1 {
			errs = append(errs, fmt.Errorf("route %q: redirect with more than one of path, prefixRewrite and regexRewrite", r.Name))
		}
		if r.forwards() {
			errs = append(errs, fmt.Errorf("route %q: a redirect has no timeout, retries, websocket, rewrite, request headers, mirrors or fault", r.Name))
		}
		return errors.Join(errs...)
	}
	var errs []error
	if rw := r.Rewrite; rw != nil && rw.PrefixRewrite != "" && rw.RegexRewrite != nil {
		errs = append(errs, fmt.Errorf("route %q: rewrite with both prefixRewrite and regexRewrite", r.Name))
	}
	if rw := r.Rewrite; rw != nil && rw.Host != "" && rw.HostFromUpstream {
		errs = append(errs, fmt.Errorf("route %q: rewrite with both host and hostFromUpstream", r.Name))
	}
	if f := r.Fault; f != nil {
		switch {
		case f.Delay == nil && f.Abort == nil:
			errs = append(errs, fmt.Errorf("route %q: fault with neither delay nor abort", r.Name))
		case f.Delay != nil && (f.Delay.Duration.Duration <= 0 || f.Delay.PerMillion == 0 || f.Delay.PerMillion > 1_000_000):
			errs = append(errs, fmt.Errorf("route %q: fault delay %s at %d per million", r.Name, f.Delay.Duration, f.Delay.PerMillion))
		case f.Abort != nil && (f.Abort.Status < 200 || f.Abort.Status > 599 || f.Abort.PerMillion == 0 || f.Abort.PerMillion > 1_000_000):
			errs = append(errs, fmt.Errorf("route %q: fault abort %d at %d per million", r.Name, f.Abort.Status, f.Abort.PerMillion))
		}
	}
	return errors.Join(errs...)
}

// forwards reports whether the route has anything that only applies to a
// request it forwards.
func (r *Route) forwards() bool {
	return r.Timeout != nil || r.Retries != nil || r.WebSocket || r.Rewrite != nil ||
		r.RequestHeaders != nil || len(r.Mirrors) > 0 || r.Fault != nil
}

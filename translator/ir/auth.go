package ir

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ExtAuthzCluster names the cluster of a listener's authorization service
// when it is given by address, not as a Consul service. A service name
// never has a ':', so it cannot clash with a service's cluster.
func ExtAuthzCluster(listener string) string { return "switchyard:ext-authz:" + listener }

// ExtAuthz asks the service behind Cluster about each request of a
// listener, except on routes with ExtAuthzOff.
type ExtAuthz struct {
	Cluster string `json:"cluster"`
	// GRPC: the service speaks envoy.service.auth.v3.Authorization;
	// otherwise each check is an HTTP request, its answer's status the
	// verdict (200: allowed).
	GRPC    bool     `json:"grpc,omitempty"`
	Timeout Duration `json:"timeout"`
	// FailOpen lets requests through when the service fails.
	FailOpen bool `json:"failOpen,omitempty"`
	// Authority is the Host of HTTP check requests.
	Authority  string `json:"authority,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Headers are the request headers sent to the service; nil: Envoy's
	// defaults.
	Headers []string `json:"headers,omitempty"`
	// UpstreamHeaders and ClientHeaders (HTTP only) pass headers of the
	// service's answer on: to the forwarded request when allowed, to the
	// client when denied.
	UpstreamHeaders []string `json:"upstreamHeaders,omitempty"`
	ClientHeaders   []string `json:"clientHeaders,omitempty"`
}

// JWT validates tokens on a listener's routes whose JWTRequire names
// these providers.
type JWT struct {
	Providers []JWTProvider `json:"providers"`
}

// JWTProvider is a token issuer and its keys: exactly one of LocalJWKS
// and RemoteJWKS is set.
type JWTProvider struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// LocalJWKS is a JSON Web Key Set of public keys, sent inline.
	LocalJWKS  string      `json:"localJWKS,omitempty"`
	RemoteJWKS *RemoteJWKS `json:"remoteJWKS,omitempty"`
	// Forward keeps the token in the forwarded request.
	Forward       bool          `json:"forward,omitempty"`
	PayloadHeader string        `json:"payloadHeader,omitempty"`
	ClaimHeaders  []ClaimHeader `json:"claimHeaders,omitempty"`
}

// RemoteJWKS is a key set fetched over HTTP from URI through Cluster.
type RemoteJWKS struct {
	Cluster       string   `json:"cluster"`
	URI           string   `json:"uri"`
	CacheDuration Duration `json:"cacheDuration"`
	Timeout       Duration `json:"timeout"`
}

// ClaimHeader copies a claim into a request header.
type ClaimHeader struct {
	Claim  string `json:"claim"`
	Header string `json:"header"`
}

// validateAuth checks a listener's extAuthz and jwt and what its routes
// require of them; clusters holds the clusters by clusterKey.
func (l *Listener) validateAuth(clusters map[string]bool) error {
	var errs []error
	if a := l.ExtAuthz; a != nil {
		if !clusters[clusterKey(a.Cluster, "")] {
			errs = append(errs, fmt.Errorf("listener %q: extAuthz to unknown cluster %q", l.Name, a.Cluster))
		}
		if a.Timeout.Duration <= 0 {
			errs = append(errs, fmt.Errorf("listener %q: extAuthz timeout %s", l.Name, a.Timeout))
		}
		if a.GRPC && (a.PathPrefix != "" || a.UpstreamHeaders != nil || a.ClientHeaders != nil) {
			errs = append(errs, fmt.Errorf("listener %q: gRPC extAuthz with HTTP settings", l.Name))
		}
	}
	providers := map[string]bool{}
	if l.JWT != nil {
		for _, p := range l.JWT.Providers {
			if providers[p.Name] {
				errs = append(errs, fmt.Errorf("listener %q: JWT provider %q defined twice", l.Name, p.Name))
			}
			providers[p.Name] = true
			if (p.LocalJWKS == "") == (p.RemoteJWKS == nil) {
				errs = append(errs, fmt.Errorf("listener %q: JWT provider %q: want exactly one of localJWKS and remoteJWKS", l.Name, p.Name))
			}
			if r := p.RemoteJWKS; r != nil && !clusters[clusterKey(r.Cluster, "")] {
				errs = append(errs, fmt.Errorf("listener %q: JWT provider %q: remote JWKS from unknown cluster %q", l.Name, p.Name, r.Cluster))
			}
		}
	}
	for _, vh := range l.VirtualHosts {
		for _, r := range vh.Routes {
			for _, name := range r.JWTRequire {
				if !providers[name] {
					errs = append(errs, fmt.Errorf("listener %q route %q: requires unknown JWT provider %q", l.Name, r.Name, name))
				}
			}
			if r.ExtAuthzOff && l.ExtAuthz == nil {
				errs = append(errs, fmt.Errorf("listener %q route %q: extAuthz off on a listener without it", l.Name, r.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// JWTRequirement names what a route with JWTRequire providers requires,
// as a listener's JWT filter lists it: the provider names, sorted, joined
// by '+' (which no provider name holds).
func JWTRequirement(providers []string) string {
	s := slices.Clone(providers)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), "+")
}

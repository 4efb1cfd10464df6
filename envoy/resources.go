// Package envoy turns Switchyard's IR into Envoy xDS resources: small pure
// builders, one per IR node, each output checked with ValidateAll.
package envoy

import (
	"fmt"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Resources is one proxy group's xDS resources, by type URL, each list
// sorted by name.
type Resources map[resource.Type][]types.Resource

// Types lists the xDS types Switchyard serves, in the order Envoy should
// receive them: clusters before endpoints, listeners before routes.
var Types = []resource.Type{
	resource.ClusterType,
	resource.EndpointType,
	resource.SecretType,
	resource.ListenerType,
	resource.RouteType,
}

// validator is what every generated proto offers.
type validator interface{ ValidateAll() error }

// Build turns one group's IR into xDS resources. An error means a bug (the
// IR was inconsistent or a proto failed validation), never a user mistake:
// those are the translator's diagnostics.
func Build(cfg *ir.Config) (Resources, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid ir for group %q: %w", cfg.Group, err)
	}
	out := Resources{}
	names := map[resource.Type]map[string]bool{}
	add := func(typ resource.Type, name string, r types.Resource) error {
		if err := r.(validator).ValidateAll(); err != nil {
			return fmt.Errorf("build %s %q: %w", shortType(typ), name, err)
		}
		// Two resources of one type with one name would silently replace
		// each other in the snapshot.
		if names[typ] == nil {
			names[typ] = map[string]bool{}
		}
		got := GetName(r)
		if names[typ][got] {
			return fmt.Errorf("build %s %q: name %q used twice", shortType(typ), name, got)
		}
		names[typ][got] = true
		out[typ] = append(out[typ], r)
		return nil
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		if err := add(resource.ClusterType, c.Service, cluster(c)); err != nil {
			return nil, err
		}
		if c.DNS {
			continue // its endpoints are inline
		}
		if err := add(resource.EndpointType, c.Service, loadAssignment(c)); err != nil {
			return nil, err
		}
	}
	// A CA secret is served only when a listener verifies client
	// certificates with it: in ADS mode go-control-plane answers an SDS
	// request only when it names every secret in the snapshot, so an
	// unreferenced secret would hold back all of them.
	clientCAs := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.TLS != nil && l.TLS.ClientCA != "" {
			clientCAs[l.TLS.ClientCA] = true
		}
	}
	for i := range cfg.Secrets {
		s := &cfg.Secrets[i]
		if err := add(resource.SecretType, s.Name, secret(s)); err != nil {
			return nil, err
		}
		if clientCAs[s.Name] {
			if err := add(resource.SecretType, CASecretName(s.Name), caSecret(s)); err != nil {
				return nil, err
			}
		}
	}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lis, err := listener(l)
		if err != nil {
			return nil, err
		}
		if err := add(resource.ListenerType, l.Name, lis); err != nil {
			return nil, err
		}
		rc, err := routeConfig(l)
		if err != nil {
			return nil, err
		}
		if err := add(resource.RouteType, l.Name, rc); err != nil {
			return nil, err
		}
	}
	for _, typ := range Types {
		list := out[typ]
		sort.Slice(list, func(i, j int) bool { return GetName(list[i]) < GetName(list[j]) })
	}
	return out, nil
}

// GetName is the resource's xDS name.
func GetName(r types.Resource) string {
	return cache.GetResourceName(r)
}

func shortType(typ resource.Type) string {
	switch typ {
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route configuration"
	case resource.SecretType:
		return "secret"
	}
	return typ
}

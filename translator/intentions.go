package translator

import (
	"maps"
	"slices"

	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// intentions are the service-intentions a sidecar enforces for its
// service, from Consul's service-intentions config entries (the service's
// own merged with the "*" entry, as registry.MeshSnapshot.Intentions
// does) and its default decision. After that merge a named source always
// outranks "*", which is the IR's rule; of two rules for one source the
// one of higher Consul precedence is kept.
//
// A tcp sidecar cannot see requests, so a source with L7 permissions is a
// deny for it, as in Consul; warn says so.
func intentions(snap *registry.MeshSnapshot, sc registry.Sidecar, proto ir.Protocol, warn func(string, ...any)) ir.Intentions {
	out := ir.Intentions{Default: ir.Deny}
	if snap.IntentionDefault() == registry.IntentionAllow {
		out.Default = ir.Allow
	}
	in, ok := snap.Intentions(sc.Service)
	if !ok {
		return out
	}
	best := map[string]registry.IntentionSource{}
	for _, src := range in.Sources {
		if cur, seen := best[src.Name]; !seen || src.Precedence > cur.Precedence {
			best[src.Name] = src
		}
	}
	for _, name := range slices.Sorted(maps.Keys(best)) { // sorted: warnings in a stable order
		src := best[name]
		rule := ir.Intention{Source: src.Name}
		switch {
		case len(src.Permissions) == 0:
			rule.Action = action(src.Action)
		case !proto.IsHTTP():
			warn("sidecar %q: the intention from %q to %q has HTTP permissions, which a %s service cannot check; it denies that caller, as in Consul (set the service's protocol to http)",
				sc.ID, src.Name, sc.Service, proto)
			rule.Action = ir.Deny
		default:
			for _, p := range src.Permissions {
				rule.Permissions = append(rule.Permissions, permission(p))
			}
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}

// action maps Consul's action; anything but allow denies.
func action(a string) ir.Action {
	if a == registry.IntentionAllow {
		return ir.Allow
	}
	return ir.Deny
}

func permission(p registry.IntentionPermission) ir.Permission {
	out := ir.Permission{Action: action(p.Action)}
	if h := p.HTTP; h != nil {
		out.HTTP = &ir.PermissionHTTP{
			PathExact: h.PathExact, PathPrefix: h.PathPrefix, PathRegex: h.PathRegex,
			Methods: append([]string(nil), h.Methods...),
		}
		for _, hd := range h.Header {
			out.HTTP.Headers = append(out.HTTP.Headers, ir.PermissionHeader{
				Name: hd.Name, Exact: hd.Exact, Prefix: hd.Prefix, Suffix: hd.Suffix, Regex: hd.Regex,
				Present: hd.Present, Invert: hd.Invert,
			})
		}
	}
	return out
}

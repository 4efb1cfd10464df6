package envoy

import (
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/switchyard-io/switchyard/translator/ir"
)

// Sources maps each resource Build makes from cfg, by type URL and name, to
// the policy file and line it comes from. When Envoy rejects a resource the
// control plane names that line, so the operator knows what to edit.
// Resources without a known source are absent.
func Sources(cfg *ir.Config) map[resource.Type]map[string]string {
	out := map[resource.Type]map[string]string{}
	add := func(typ resource.Type, name, source string) {
		if source == "" {
			return
		}
		if out[typ] == nil {
			out[typ] = map[string]string{}
		}
		out[typ][name] = source
	}
	for _, l := range cfg.Listeners {
		add(resource.ListenerType, ListenerName(l.Name), l.Source)
		add(resource.RouteType, RouteConfigName(l.Name), l.Source)
	}
	for _, c := range cfg.Clusters {
		add(resource.ClusterType, ClusterName(c.Service), c.Source)
		if !c.DNS {
			add(resource.EndpointType, ClusterName(c.Service), c.Source)
		}
	}
	for _, s := range cfg.Secrets {
		add(resource.SecretType, SecretName(s.Name), s.Source)
		if s.CAPEM != "" {
			add(resource.SecretType, CASecretName(s.Name), s.Source)
		}
	}
	return out
}

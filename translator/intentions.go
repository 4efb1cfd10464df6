package translator

import (
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// intentions are the service-intentions a sidecar enforces for its
// service. Until the registry watches them, every caller is allowed, which
// is Consul's decision for a destination without intentions while ACLs
// are off (its dev agent's default).
func intentions(_ *registry.MeshSnapshot, _ string) ir.Intentions {
	return ir.Intentions{Default: ir.Allow}
}

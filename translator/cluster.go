package translator

import (
	"net"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// Envoy's endpoint weight range; Consul's weights are clamped into it.
const (
	minWeight = 1
	maxWeight = 128
)

// cluster builds a service's cluster and endpoints from the registry. A
// service Consul does not know yet still gets a cluster, with no endpoints:
// its routes answer 503 until it registers, instead of the whole config
// failing or traffic falling through to another route.
func (t *translation) cluster(service string, pos policy.Pos) ir.Cluster {
	c := ir.Cluster{Service: service, Source: pos.String()}
	svc, ok := t.snap.Service(service)
	if !ok {
		t.warn(pos, "service %q is not registered in Consul; its routes answer 503 until it is", service)
		return c
	}
	for _, inst := range svc.Instances {
		// Envoy's EDS takes IP addresses only; a host name would make it
		// reject the whole ClusterLoadAssignment.
		if net.ParseIP(inst.Address) == nil || inst.Port <= 0 || inst.Port > 65535 {
			t.warn(policy.Pos{File: "consul"}, "service %q instance %q on node %q has no usable address (%q port %d; an IP address and a port are needed); skipped",
				service, inst.ID, inst.Node, inst.Address, inst.Port)
			continue
		}
		c.Endpoints = append(c.Endpoints, ir.Endpoint{
			ID:       inst.ID,
			Address:  inst.Address,
			Port:     uint32(inst.Port),
			Health:   health(inst.Health),
			Weight:   clampWeight(inst.Weight),
			Locality: inst.Datacenter,
		})
	}
	return c
}

// health maps Consul's aggregated check state to Envoy's: passing and
// warning are healthy, critical is unhealthy, maintenance is draining.
func health(h registry.Health) ir.Health {
	switch h {
	case registry.Healthy:
		return ir.Healthy
	case registry.Draining:
		return ir.Draining
	default:
		return ir.Unhealthy
	}
}

func clampWeight(w int) uint32 {
	switch {
	case w < minWeight:
		return minWeight
	case w > maxWeight:
		return maxWeight
	}
	return uint32(w)
}

package registry

import (
	"maps"
	"slices"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
)

// Check IDs Consul gives the critical checks it adds for maintenance mode
// (agent/structs: NodeMaint, ServiceMaintPrefix).
const (
	nodeMaintCheckID      = "_node_maintenance"
	serviceMaintCheckPref = "_service_maintenance:"
)

// Envoy's range for a load balancing weight is 1..128 in Consul's own xDS
// server; staying inside it keeps weights comparable with Consul Connect.
const (
	minWeight = 1
	maxWeight = 128
)

// service turns the entries of one /v1/health/service answer into a Service.
// dc is used for entries whose node does not name its datacenter.
func service(name, dc string, entries []*consulapi.ServiceEntry) Service {
	out := Service{Name: name, Instances: make([]Instance, 0, len(entries))}
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		out.Instances = append(out.Instances, instance(e, dc))
	}
	sortInstances(out.Instances)
	return out
}

func instance(e *consulapi.ServiceEntry, dc string) Instance {
	s := e.Service
	in := Instance{
		ID:         s.ID,
		Address:    s.Address,
		Port:       s.Port,
		Tags:       slices.Sorted(slices.Values(s.Tags)),
		Meta:       maps.Clone(s.Meta),
		Datacenter: dc,
	}
	if e.Node != nil {
		in.Node = e.Node.Node
		if in.Address == "" {
			in.Address = e.Node.Address
		}
		if e.Node.Datacenter != "" {
			in.Datacenter = e.Node.Datacenter
		}
	}
	if s.Datacenter != "" && in.Datacenter == "" {
		in.Datacenter = s.Datacenter
	}
	in.Health, in.Weight = healthAndWeight(e.Checks, s.Weights)
	return in
}

// healthAndWeight aggregates every check of an entry: the service's own
// checks and the node's (serfHealth, node maintenance), because a dead node
// takes all its instances with it.
//
// Maintenance wins over everything (Draining): an operator asked for it and
// the instance should finish its requests rather than look failed. Otherwise
// any critical check makes the instance Unhealthy; passing and warning are
// Healthy. No checks at all is Healthy, as in Consul's DNS and xDS.
//
// The weight is Weights.Passing, or Weights.Warning when the aggregated
// status is warning (a check warning, none critical); Weights{0, 0} means "not set" (the zero value of the API type) and
// gives 1. A warning weight explicitly set to 0 (Passing > 0) means "no
// traffic while warning": like Consul's own xDS server, the instance is then
// Unhealthy at weight 1.
func healthAndWeight(checks consulapi.HealthChecks, w consulapi.AgentWeights) (Health, int) {
	var maint, critical, warning bool
	for _, c := range checks {
		if c == nil {
			continue
		}
		switch c.Status {
		case consulapi.HealthCritical:
			if c.CheckID == nodeMaintCheckID || strings.HasPrefix(c.CheckID, serviceMaintCheckPref) {
				maint = true
			} else {
				critical = true
			}
		case consulapi.HealthWarning:
			warning = true
		}
	}

	health := Healthy
	switch {
	case maint:
		health = Draining
	case critical:
		health = Unhealthy
	}

	unset := w.Passing == 0 && w.Warning == 0
	weight := w.Passing
	if warning && health == Healthy && !unset {
		// The aggregated status is warning (nothing critical).
		weight = w.Warning
		if weight < minWeight {
			health = Unhealthy
		}
	}
	if unset || weight < minWeight {
		weight = minWeight
	}
	return health, min(weight, maxWeight)
}

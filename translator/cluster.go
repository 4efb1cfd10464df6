package translator

import (
	"net"
	"slices"
	"strings"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// Envoy's endpoint weight range; Consul's weights are clamped into it.
const (
	minWeight = 1
	maxWeight = 128
)

// cluster builds the cluster and endpoints of a service, or of a subset of
// its instances, from the registry. A service Consul does not know yet
// still gets a cluster, with no endpoints: its routes answer 503 until it
// registers, instead of the whole config failing or traffic falling
// through to another route. So does a subset no instance is in.
// unregistered is what the warning says that costs ("": the routes'
// requests answer 503).
func (t *translation) cluster(service string, subset *policy.Subset, pos policy.Pos, unregistered string) ir.Cluster {
	c := ir.Cluster{Service: service, Subset: subset.String(), Source: pos.String()}
	svc, ok := t.snap.Service(service)
	c.HTTP2 = t.http2(service, svc)
	t.upstream(&c)
	if !ok {
		if unregistered == "" {
			unregistered = "its routes answer 503 until it is"
		}
		t.warn(pos, "service %q is not registered in Consul; %s", service, unregistered)
		return c
	}
	c.Endpoints = make([]ir.Endpoint, 0, len(svc.Instances))
	for _, inst := range svc.Instances {
		if !subset.Matches(inst.Tags, inst.Meta) {
			continue
		}
		ip := net.ParseIP(inst.Address) != nil
		if !ip && !isHostName(inst.Address) || inst.Port <= 0 || inst.Port > 65535 {
			t.warn(policy.Pos{File: "consul"}, "service %q instance %q on node %q has no usable address (%q port %d; an IP address or a host name, and a port, are needed); skipped",
				service, inst.ID, inst.Node, inst.Address, inst.Port)
			continue
		}
		// Envoy's EDS takes IP addresses only (a host name would make it
		// reject the whole ClusterLoadAssignment), so a service with a host
		// name among its instances (an external service registered by
		// name, say) becomes a cluster whose names Envoy resolves.
		if !ip {
			c.DNS = true
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
	if len(c.Endpoints) == 0 && len(svc.Instances) > 0 && !subset.IsZero() {
		t.warn(pos, "no instance of service %q is in subset %s; its share of requests is answered 503 until one is", service, c.Subset)
	}
	return c
}

// ConsulProtocolMeta is the Consul service meta key that says how to talk
// to an instance, as in Consul's own mesh: http, http2 or grpc.
const ConsulProtocolMeta = "protocol"

// http2 decides whether Envoy speaks HTTP/2 to a service: a Service
// policy's protocol wins; otherwise the instances' Consul meta "protocol"
// (they should agree; when they do not, the first instance's is used and a
// warning names the service); otherwise HTTP/1.1.
func (t *translation) http2(service string, svc registry.Service) bool {
	if sp, ok := t.set.Service(service); ok && sp.Protocol != "" {
		return sp.Protocol != policy.ProtocolHTTP
	}
	proto, from := "", ""
	for _, inst := range svc.Instances {
		v, ok := inst.Meta[ConsulProtocolMeta]
		if !ok {
			continue
		}
		if !slices.Contains(policy.Protocols(), v) && v != "tcp" {
			t.warn(policy.Pos{File: "consul"}, "service %q instance %q has meta %s=%q, which is not one of %s; ignored",
				service, inst.ID, ConsulProtocolMeta, v, strings.Join(policy.Protocols(), ", "))
			continue
		}
		if proto == "" {
			proto, from = v, inst.ID
		} else if v != proto {
			t.warn(policy.Pos{File: "consul"}, "service %q instances disagree on meta %s (%q on %q, %q on %q); using %q: set it in a Service policy to decide",
				service, ConsulProtocolMeta, proto, from, v, inst.ID, proto)
			break
		}
	}
	return proto == policy.ProtocolHTTP2 || proto == policy.ProtocolGRPC
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

// isHostName reports whether s is a DNS host name: dot-separated labels of
// letters, digits and hyphens, 1 to 63 characters each, not starting or
// ending with a hyphen, 253 characters at most (a final dot allowed), whose
// last label is not a number (RFC 1123 section 2.1, RFC 3696 section 2).
// The last rule keeps a malformed address such as 999.999.999.999 (or a
// numeric form resolvers accept, like 127.1 or 0x7f.1) from passing as a name
// and turning its cluster into DNS resolution.
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	if isNumber(s[strings.LastIndexByte(s, '.')+1:]) {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// isNumber reports whether a label reads as a number to an IPv4 parser
// (inet_aton): decimal digits, or 0x followed by hex digits.
func isNumber(label string) bool {
	digits := "0123456789"
	if len(label) >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X') {
		label, digits = label[2:], "0123456789abcdefABCDEF"
		if label == "" {
			return true // "0x" alone is zero
		}
	}
	return label != "" && strings.Trim(label, digits) == ""
}

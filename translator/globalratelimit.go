package translator

import (
	"net"
	"strconv"
	"strings"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// rateLimitService is what each listener of the group needs to ask its
// rate limit service; nil when the group has none.
func rateLimitService(g *policy.ProxyGroup) *ir.RateLimitService {
	s := g.RateLimitService
	if s == nil {
		return nil
	}
	return &ir.RateLimitService{
		Cluster:         ir.RateLimitCluster,
		Domain:          ir.RateLimitDomain(g.Name),
		Timeout:         ir.D(s.Timeout),
		FailureModeDeny: s.FailureMode == policy.FailureModeDeny,
		Headers:         s.Headers,
	}
}

// rateLimitCluster is the cluster of a group's rate limit service,
// spoken to over HTTP/2 as gRPC is: the instances of its Consul service,
// with the service's Service policy (circuit breakers, outlier detection,
// ...), or its address (Envoy resolves a DNS name).
func (t *translation) rateLimitCluster(s *policy.RateLimitService) ir.Cluster {
	if s.Address != "" {
		host, port, _ := net.SplitHostPort(s.Address) // policy validation checked it
		p, _ := strconv.Atoi(port)
		return ir.Cluster{Service: ir.RateLimitCluster, Source: s.Pos.String(), HTTP2: true, DNS: net.ParseIP(host) == nil,
			Endpoints: []ir.Endpoint{{ID: s.Address, Address: host, Port: uint32(p), Health: ir.Healthy, Weight: 1}}}
	}
	var c ir.Cluster
	if _, ok := t.snap.Service(s.Service); ok {
		c = t.cluster(s.Service, &policy.Subset{}, s.Pos, "") // registered: no warning
	} else {
		t.warn(s.Pos, "rate limit service %q is not registered in Consul; until it is, requests with a global limit get its failure mode (%s)", s.Service, s.FailureMode)
		c = ir.Cluster{Service: s.Service, Source: s.Pos.String()}
		t.upstream(&c) // its Service policy, as t.cluster applies it
	}
	c.Service, c.HTTP2 = ir.RateLimitCluster, true
	return c
}

// hostLimitID and routeLimitID name a host's and a route's global limits
// within the group's domain: "host/<listener>/<host>/<n>" and
// "route/<listener>/<host>/<route>/<n>", n counting the limits of one host
// or route from 1, <host> from limitHostNames. No two limits of a group
// share an ID, none holds a '.' (the rate limit service's stat names are
// split into Prometheus labels at dots, so a dot would merge the counts
// of different limits), and each ends in a digit, never in the '*' the
// service would take for a prefix pattern. Editing a limit keeps its ID,
// and so its counters.
func hostLimitID(listener, host string) string { return "host/" + listener + "/" + host }

func routeLimitID(listener, host, route string) string {
	return "route/" + listener + "/" + host + "/" + route
}

// limitHostNames names each host of a listener in its limits' IDs: its
// first domain with dots as '_' (shop_example_com), and, should that name
// an earlier host too (shop.example.com and shop_example.com), with "~"
// and a number after it: the host's index, or the next number whose name
// no earlier host holds. A domain may itself hold '_' and '~' (a_b~2), so
// a suffixed name is checked like any other. Listener and route names
// have no '/', nor has a domain, so the IDs stay apart.
func limitHostNames(l *policy.Listener) []string {
	out := make([]string, len(l.Hosts))
	taken := make(map[string]bool, len(l.Hosts))
	for i, h := range l.Hosts {
		base := strings.ReplaceAll(h.Domains[0], ".", "_")
		name := base
		for n := i; taken[name]; n++ {
			name = base + "~" + strconv.Itoa(n)
		}
		taken[name] = true
		out[i] = name
	}
	return out
}

// globalRateLimits are a host's or route's global limits in the IR, with
// IDs under prefix (hostLimitID or routeLimitID).
func globalRateLimits(prefix string, limits []policy.GlobalRateLimit) []ir.GlobalRateLimit {
	if len(limits) == 0 {
		return nil
	}
	out := make([]ir.GlobalRateLimit, len(limits))
	for i, l := range limits {
		out[i] = ir.GlobalRateLimit{
			ID:       prefix + "/" + strconv.Itoa(i+1),
			Requests: l.Requests,
			Unit:     l.Per, // policy and IR name the units alike
			Shadow:   l.Shadow,
			Source:   l.Pos.String(),
		}
		for _, k := range l.By {
			out[i].By = append(out[i].By, ir.RateLimitKey{By: k.By, Header: k.Header})
		}
	}
	return out
}

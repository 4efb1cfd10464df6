package registry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
)

// defaultLocalAddress is Consul's default for Proxy.LocalServiceAddress and
// an upstream's LocalBindAddress.
const defaultLocalAddress = "127.0.0.1"

// sidecars turns the entries of one /v1/health/service/<proxy-service>
// answer into sidecars, sorted by (Node, ID). Entries that are not
// connect-proxy registrations are skipped.
func sidecars(dc string, entries []*consulapi.ServiceEntry) []Sidecar {
	out := make([]Sidecar, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Service.Kind != consulapi.ServiceKindConnectProxy {
			continue
		}
		out = append(out, sidecar(e, dc))
	}
	slices.SortFunc(out, func(a, b Sidecar) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

func sidecar(e *consulapi.ServiceEntry, dc string) Sidecar {
	in := instance(e, dc) // address, node, datacenter, health: as for any instance
	s := e.Service
	sc := Sidecar{
		ID: s.ID, Name: s.Service, Node: in.Node, Address: in.Address, Port: s.Port,
		Datacenter: in.Datacenter, Health: in.Health,
		LocalServiceAddress: defaultLocalAddress, Protocol: ProtocolTCP,
	}
	p := s.Proxy
	if p == nil {
		sc.Problems = append(sc.Problems, "connect-proxy registration without a Proxy block")
		return sc
	}
	sc.Service, sc.ServiceID = p.DestinationServiceName, p.DestinationServiceID
	if p.LocalServiceAddress != "" {
		sc.LocalServiceAddress = p.LocalServiceAddress
	}
	sc.LocalServicePort = p.LocalServicePort
	sc.Config = stringConfig(p.Config)
	if v, ok := sc.Config["protocol"]; ok {
		if proto, ok := protocol(v); ok {
			sc.Protocol = proto
		} else {
			sc.Problems = append(sc.Problems, fmt.Sprintf("Proxy.Config protocol %q is not one of tcp, http, http2, grpc: serving tcp", v))
		}
	}
	if sc.Service == "" {
		sc.Problems = append(sc.Problems, "Proxy.DestinationServiceName is empty")
	}
	if p.Mode == consulapi.ProxyModeTransparent {
		sc.Problems = append(sc.Problems, "transparent proxy mode is not supported: only explicit upstreams are served")
	}
	if sc.LocalServicePort == 0 && p.LocalServiceSocketPath == "" {
		sc.Problems = append(sc.Problems, "Proxy.LocalServicePort is not set: no local app to forward inbound traffic to")
	}
	seen := map[netip.AddrPort]string{}
	for _, u := range p.Upstreams {
		up := upstream(u)
		if up.Problem == "" {
			ap, err := netip.ParseAddrPort(joinHostPort(up.LocalBindAddress, up.LocalBindPort))
			switch {
			case err != nil:
				up.Problem = fmt.Sprintf("LocalBindAddress %q is not an IP address", up.LocalBindAddress)
			case seen[ap] != "":
				up.Problem = fmt.Sprintf("bind address %s is already used by the upstream to %s", ap, seen[ap])
			default:
				seen[ap] = up.DestinationName
			}
		}
		sc.Upstreams = append(sc.Upstreams, up)
	}
	return sc
}

func joinHostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

func upstream(u consulapi.Upstream) Upstream {
	up := Upstream{
		DestinationType:  string(u.DestinationType),
		DestinationName:  u.DestinationName,
		Datacenter:       u.Datacenter,
		LocalBindAddress: u.LocalBindAddress,
		LocalBindPort:    u.LocalBindPort,
		Config:           stringConfig(u.Config),
	}
	if up.DestinationType == "" {
		up.DestinationType = string(consulapi.UpstreamDestTypeService)
	}
	if up.LocalBindAddress == "" {
		up.LocalBindAddress = defaultLocalAddress
	}
	if v, ok := up.Config["protocol"]; ok {
		if proto, ok := protocol(v); ok {
			up.Protocol = proto
		} else {
			up.Problem = fmt.Sprintf("Config protocol %q is not one of tcp, http, http2, grpc", v)
		}
	}
	switch {
	case up.Problem != "":
	case up.DestinationType != string(consulapi.UpstreamDestTypeService):
		up.Problem = fmt.Sprintf("destination type %q is not supported (only service)", up.DestinationType)
	case up.DestinationName == "":
		up.Problem = "no DestinationName"
	case up.Datacenter != "":
		up.Problem = fmt.Sprintf("datacenter %q: only the local datacenter is served", up.Datacenter)
	case u.DestinationPeer != "":
		up.Problem = fmt.Sprintf("peer %q: cluster peering is not supported", u.DestinationPeer)
	case up.LocalBindPort <= 0 || up.LocalBindPort > 65535:
		up.Problem = fmt.Sprintf("LocalBindPort %d is not a port (Unix socket upstreams are not supported)", up.LocalBindPort)
	}
	return up
}

// protocol normalizes a protocol setting.
func protocol(v string) (string, bool) {
	p := strings.ToLower(strings.TrimSpace(v))
	switch p {
	case ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
		return p, true
	}
	return "", false
}

// stringConfig keeps the scalar values of a Proxy or Upstream Config, as
// strings. Nested maps and lists are left out.
func stringConfig(c map[string]any) map[string]string {
	if len(c) == 0 {
		return nil
	}
	out := make(map[string]string, len(c))
	for k, v := range c {
		switch v := v.(type) {
		case string:
			out[k] = v
		case bool, float64, float32, int, int64, uint64:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// destination turns one /v1/health/connect/<name> answer into a
// Destination.
func destination(name, dc string, entries []*consulapi.ServiceEntry) Destination {
	d := Destination{Name: name, Endpoints: make([]Endpoint, 0, len(entries))}
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		in := instance(e, dc)
		ep := Endpoint{
			Node: in.Node, Address: in.Address, Port: in.Port, Datacenter: in.Datacenter,
			Health: in.Health, ProxyHealth: in.Health, ServiceHealth: in.Health, Weight: in.Weight,
		}
		switch {
		case e.Service.Kind == consulapi.ServiceKindConnectProxy && e.Service.Proxy != nil:
			ep.ProxyID, ep.ServiceID = e.Service.ID, e.Service.Proxy.DestinationServiceID
		case e.Service.Kind == consulapi.ServiceKindTypical:
			ep.ServiceID, ep.Native = e.Service.ID, true
		default:
			continue // a gateway or anything else: not a way into the service
		}
		d.Endpoints = append(d.Endpoints, ep)
	}
	sortEndpoints(d.Endpoints)
	return d
}

// errLeafContent is returned instead of any error that might quote a leaf's
// private key.
var errLeafContent = errors.New("consul answered with a leaf certificate switchyard cannot use (content withheld: it may hold a private key)")

// leaf checks and converts a leaf answer. Its errors never quote the key.
func leaf(service string, lc *consulapi.LeafCert) (*Leaf, error) {
	if lc == nil {
		return nil, errors.New("empty leaf answer")
	}
	if lc.CertPEM == "" || lc.PrivateKeyPEM == "" {
		return nil, errors.New("leaf answer lacks a certificate or a private key")
	}
	pair, err := tls.X509KeyPair([]byte(lc.CertPEM), []byte(lc.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("leaf certificate and key do not form a pair: %w", keyFreeErr(err))
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", keyFreeErr(err))
	}
	l := &Leaf{
		Service: service, SerialNumber: lc.SerialNumber, CertPEM: lc.CertPEM, KeyPEM: KeyPEM(lc.PrivateKeyPEM),
		SPIFFE: lc.ServiceURI, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
	}
	if len(cert.URIs) > 0 {
		l.SPIFFE = cert.URIs[0].String()
	}
	if !strings.HasPrefix(l.SPIFFE, "spiffe://") {
		return nil, fmt.Errorf("leaf certificate has no SPIFFE URI (got %q)", l.SPIFFE)
	}
	return l, nil
}

// keyFreeErr passes err on unless its text could carry key material.
func keyFreeErr(err error) error {
	if err == nil {
		return nil
	}
	if s := err.Error(); strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "-----BEGIN") {
		return errLeafContent
	}
	return err
}

// roots converts a roots answer; an empty list means the CA is not
// initialized yet.
func roots(rl *consulapi.CARootList) (*Roots, error) {
	if rl == nil || len(rl.Roots) == 0 {
		return nil, errors.New("the Connect CA has no roots yet (not initialized)")
	}
	r := &Roots{TrustDomain: rl.TrustDomain, ActiveRootID: rl.ActiveRootID}
	for _, cr := range rl.Roots {
		if cr == nil {
			continue
		}
		root := Root{ID: cr.ID, Name: cr.Name, CertPEM: cr.RootCertPEM, Active: cr.Active}
		if b, _ := pem.Decode([]byte(cr.RootCertPEM)); b != nil {
			if c, err := x509.ParseCertificate(b.Bytes); err == nil {
				root.NotAfter = c.NotAfter
			}
		}
		if root.CertPEM == "" {
			return nil, fmt.Errorf("CA root %s has no certificate", cr.ID)
		}
		r.Roots = append(r.Roots, root)
	}
	slices.SortFunc(r.Roots, func(a, b Root) int { return strings.Compare(a.ID, b.ID) })
	return r, nil
}

package ir

import (
	"regexp"
	"strings"
	"testing"
)

const td = "11111111-2222-3333-4444-555555555555.consul"

func validSidecar() Sidecar {
	return Sidecar{
		ProxyID: "web-1-sidecar-proxy", Service: "web", TrustDomain: td,
		PublicAddress: "10.0.0.1", PublicPort: 21000,
		LocalAddress: "127.0.0.1", LocalPort: 8080,
		Protocol:   ProtocolHTTP,
		Intentions: Intentions{Default: Deny, Rules: []Intention{{Source: "*", Action: Allow}}},
		Upstreams: []Upstream{{Destination: "api", BindAddress: "127.0.0.1", BindPort: 9191, Protocol: ProtocolHTTP,
			Cluster: MeshSNI("api", "dc1", td)}},
		Leaf: MeshLeaf{Service: "web", CertPEM: "CERT", KeyPEM: "KEY"},
	}
}

func validMesh() Mesh {
	return Mesh{
		Roots: MeshRoots{TrustDomain: td, RootsPEM: "ROOTS"},
		Clusters: []MeshCluster{{
			Service: "api", Datacenter: "dc1", SNI: MeshSNI("api", "dc1", td), SPIFFEID: SPIFFEID(td, "dc1", "api"),
			Protocol:  ProtocolHTTP,
			Endpoints: []Endpoint{{ID: "api-1-sidecar-proxy", Address: "10.0.0.11", Port: 21000, Health: Healthy, Weight: 1}},
		}},
	}
}

// Consul's formats: the SNI its sidecars send and accept, and the SPIFFE
// ID in a leaf certificate.
func TestMeshFormats(t *testing.T) {
	if got, want := MeshSNI("api", "dc1", td), "api.default.dc1.internal."+td; got != want {
		t.Errorf("MeshSNI: got %q; want %q", got, want)
	}
	if got, want := SPIFFEID(td, "dc1", "api"), "spiffe://"+td+"/ns/default/dc/dc1/svc/api"; got != want {
		t.Errorf("SPIFFEID: got %q; want %q", got, want)
	}
	if got, want := SPIFFEPattern("a.consul", "web.v2"), `^spiffe://a\.consul/ns/default/dc/[^/]+/svc/web\.v2$`; got != want {
		t.Errorf("SPIFFEPattern: got %q; want %q", got, want)
	}
	if got, want := SPIFFEPattern("a.consul", "*"), `^spiffe://a\.consul/ns/default/dc/[^/]+/svc/[^/]+$`; got != want {
		t.Errorf("SPIFFEPattern(*): got %q; want %q", got, want)
	}
}

func TestSidecarValidate(t *testing.T) {
	ok := validSidecar()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid sidecar: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Sidecar)
		want   string
	}{
		{"duplicate bind port", func(s *Sidecar) { s.Upstreams = append(s.Upstreams, s.Upstreams[0]) }, "127.0.0.1:9191 is taken by upstream \"api\""},
		{"bind on the public port", func(s *Sidecar) { s.Upstreams[0].BindAddress, s.Upstreams[0].BindPort = "10.0.0.1", 21000 }, "taken by the public listener"},
		{"host name as local address", func(s *Sidecar) { s.LocalAddress = "localhost" }, `local app address "localhost" is not an IP`},
		{"unknown protocol", func(s *Sidecar) { s.Protocol = "udp" }, `protocol "udp"`},
		{"L7 on tcp", func(s *Sidecar) {
			s.Protocol = ProtocolTCP
			s.Intentions.Rules = []Intention{{Source: "api", Permissions: []Permission{{Action: Allow}}}}
		}, "L7 permissions on a tcp sidecar"},
		{"action and permissions", func(s *Sidecar) {
			s.Intentions.Rules = []Intention{{Source: "api", Action: Deny, Permissions: []Permission{{Action: Allow}}}}
		}, "both an action and permissions"},
		{"two rules for a source", func(s *Sidecar) {
			s.Intentions.Rules = append(s.Intentions.Rules, Intention{Source: "*", Action: Deny})
		}, "more than one rule"},
		{"no default", func(s *Sidecar) { s.Intentions.Default = "" }, "intentions default: action"},
		{"bad path regex", func(s *Sidecar) {
			s.Intentions.Rules = []Intention{{Source: "api", Permissions: []Permission{{Action: Allow, HTTP: &PermissionHTTP{PathRegex: "("}}}}}
		}, "pathRegex"},
		{"two paths", func(s *Sidecar) {
			s.Intentions.Rules = []Intention{{Source: "api", Permissions: []Permission{{Action: Allow, HTTP: &PermissionHTTP{PathExact: "/a", PathPrefix: "/b"}}}}}
		}, "more than one of pathExact"},
		{"header without a match", func(s *Sidecar) {
			s.Intentions.Rules = []Intention{{Source: "api", Permissions: []Permission{{Action: Allow, HTTP: &PermissionHTTP{Headers: []PermissionHeader{{Name: "x-a"}}}}}}}
		}, "exactly one of exact"},
		{"lower-case method", func(s *Sidecar) {
			s.Intentions.Rules = []Intention{{Source: "api", Permissions: []Permission{{Action: Allow, HTTP: &PermissionHTTP{Methods: []string{"get"}}}}}}
		}, `method "get"`},
		{"another service's leaf", func(s *Sidecar) { s.Leaf.Service = "api" }, `leaf certificate of service "api"`},
		{"source with a slash", func(s *Sidecar) { s.Intentions.Rules = []Intention{{Source: "ns/web", Action: Allow}} }, "neither a service name"},
		{"tracing without its collector", func(s *Sidecar) { s.Tracing = &Tracing{Cluster: TracingCluster, Sampling: 100} }, "must be set together"},
		{"tracing to another cluster", func(s *Sidecar) {
			s.Tracing = &Tracing{Cluster: "other", Sampling: 100}
			s.TracingCluster = &Cluster{Service: TracingCluster, Endpoints: []Endpoint{{ID: "c", Address: "10.0.0.9", Port: 4317, Health: Healthy, Weight: 1}}}
		}, `tracing to cluster "other"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSidecar()
			tc.change(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// A leaf's key never reaches an error message.
func TestSidecarValidateHidesKey(t *testing.T) {
	s := validSidecar()
	s.Leaf.KeyPEM = "-----BEGIN EC PRIVATE KEY-----SECRET"
	s.Leaf.Service = "api"
	err := s.Validate()
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("got %v; want an error without the key", err)
	}
}

func TestMeshValidate(t *testing.T) {
	m := validMesh()
	if err := m.Validate(); err != nil {
		t.Fatalf("valid mesh: %v", err)
	}
	s := validSidecar()
	if err := m.ValidateSidecar(&s); err != nil {
		t.Fatalf("valid sidecar in mesh: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Mesh, *Sidecar)
		want   string
	}{
		{"wrong sni", func(m *Mesh, _ *Sidecar) { m.Clusters[0].SNI = "api.dc1" }, "sni; want"},
		{"wrong spiffe id", func(m *Mesh, _ *Sidecar) { m.Clusters[0].SPIFFEID = SPIFFEID("other.consul", "dc1", "api") }, "spiffe id"},
		{"no roots", func(m *Mesh, _ *Sidecar) { m.Roots.RootsPEM = "" }, "no CA roots"},
		{"endpoint host name", func(m *Mesh, _ *Sidecar) { m.Clusters[0].Endpoints[0].Address = "api.internal" }, "is not an IP"},
		{"cluster twice", func(m *Mesh, _ *Sidecar) { m.Clusters = append(m.Clusters, m.Clusters[0]) }, "defined twice"},
		{"unknown upstream cluster", func(_ *Mesh, s *Sidecar) { s.Upstreams[0].Cluster = MeshSNI("db", "dc1", td) }, "no mesh cluster"},
		{"protocol mismatch", func(_ *Mesh, s *Sidecar) { s.Upstreams[0].Protocol = ProtocolTCP }, "the destination speaks http"},
		{"trust domain mismatch", func(_ *Mesh, s *Sidecar) { s.TrustDomain = "other.consul" }, "trust domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, s := validMesh(), validSidecar()
			tc.change(&m, &s)
			err := m.Validate()
			if err == nil {
				err = m.ValidateSidecar(&s)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// A direct cluster named like one of the group's mesh clusters is an
// error: Envoy would keep one of the two.
func TestConfigValidateClusterNameClash(t *testing.T) {
	m := validMesh()
	mc := m.Clusters[0]
	cfg := Config{Group: "edge",
		Clusters: []Cluster{{Service: mc.SNI, Source: "edge.yaml:9"}},
		Mesh:     &EdgeMesh{Leaf: MeshLeaf{Service: "edge-gateway", CertPEM: "CERT", KeyPEM: "KEY"}, Roots: m.Roots, Clusters: []MeshCluster{mc}},
	}
	err := cfg.Validate()
	if want := `cluster "` + mc.SNI + `" (edge.yaml:9): also the name of a mesh cluster`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Validate: %v; want an error containing %q", err, want)
	}
}

// The name checks are loops over bytes, for speed; they must accept
// exactly what the regular expressions they replace accept.
func TestNameChecksMatchTheirPatterns(t *testing.T) {
	checks := []struct {
		name    string
		pattern *regexp.Regexp
		check   func(string) bool
	}{
		{"mesh name", regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`), ValidMeshName},
		{"trust domain", regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`), validTrustDomain},
		{"method", regexp.MustCompile(`^[A-Z]+$`), validMethod},
		{"header name", regexp.MustCompile("^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), validHeaderName},
	}
	samples := []string{"", "a", "A", "0", "-", ".", "_", ":", "::a", ":path", "web", "web-1", "web.v2", "Web_2", "-web", "web-",
		"a.consul", "11111111-2222-3333-4444-555555555555.consul", "a.", ".a", "a..b", "A.consul", "GET", "get", "GeT",
		"x-forwarded-for", "x y", "x/y", "é", "a\x00", "a\n", "~!#$%&'*+^`|", "(", "a,b"}
	// Every string of up to 2 bytes over an alphabet with one byte of each
	// class the patterns tell apart.
	alphabet := "aZ09-._:!~/ \x80"
	for _, a := range alphabet {
		samples = append(samples, string(a))
		for _, b := range alphabet {
			samples = append(samples, string(a)+string(b), "x"+string(a)+string(b)+"y")
		}
	}
	for _, c := range checks {
		for _, v := range samples {
			if got, want := c.check(v), c.pattern.MatchString(v); got != want {
				t.Errorf("%s %q: got %v; the pattern says %v", c.name, v, got, want)
			}
		}
	}
}

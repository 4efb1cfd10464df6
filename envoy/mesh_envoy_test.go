package envoy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-io/switchyard/test/testenv"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// TestMeshAcceptedByEnvoy renders each golden case's sidecar snapshot as
// the static resources of a bootstrap and has real Envoy validate it
// (--mode validate builds every listener, cluster, filter and TLS context,
// loading the certificates, without opening sockets). Real certificates
// with SPIFFE URIs replace the goldens' test strings. As a static
// bootstrap has no xDS, the resources are changed only where they point at
// it: SDS references become static secret names, EDS clusters carry their
// ClusterLoadAssignment inline, RDS becomes the inline RouteConfiguration.
func TestMeshAcceptedByEnvoy(t *testing.T) {
	ca := testenv.NewCA(t, "Consul CA")
	for _, in := range meshCases(t) {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			c := loadMeshCase(t, in)
			c.Mesh.Roots.RootsPEM = string(ca.PEM)
			for i := range c.Sidecars {
				s := &c.Sidecars[i]
				cert, key := spiffeLeaf(t, ca, ir.SPIFFEID(s.TrustDomain, "dc1", s.Service))
				s.Leaf.CertPEM, s.Leaf.KeyPEM = cert, ir.PrivateKey(key)
				if a := s.AccessLog; a != nil && strings.HasPrefix(a.Path, "/") {
					// Envoy opens the file: one it may write.
					s.AccessLog = &ir.AccessLog{Path: filepath.Join(t.TempDir(), "access.log"), Format: a.Format}
				}
				if out, err := envoyValidate(t, staticSidecarConfig(t, s, &c.Mesh, 0)); err != nil {
					t.Fatalf("envoy --mode validate %s: %v\n%s", s.ProxyID, err, out)
				}
			}
		})
	}
	// The harness can fail: Envoy loads the TLS material, so roots that
	// are not a certificate are refused.
	c := loadMeshCase(t, "testdata/mesh/tcp-deny.in.yaml")
	s := &c.Sidecars[0]
	cert, key := spiffeLeaf(t, ca, ir.SPIFFEID(s.TrustDomain, "dc1", s.Service))
	s.Leaf.CertPEM, s.Leaf.KeyPEM = cert, ir.PrivateKey(key)
	c.Mesh.Roots.RootsPEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
	out, err := envoyValidate(t, staticSidecarConfig(t, s, &c.Mesh, 0))
	if err == nil {
		t.Errorf("envoy accepted roots that are not a certificate:\n%s", out)
	}
}

// staticSidecarConfig is a bootstrap (JSON) serving the sidecar's snapshot
// as static resources, with an admin listener on adminPort unless 0.
func staticSidecarConfig(t *testing.T, s *ir.Sidecar, m *ir.Mesh, adminPort int) []byte {
	t.Helper()
	var mb MeshBuilder
	if _, _, err := mb.Build(m); err != nil {
		t.Fatal(err)
	}
	own, digests, err := BuildSidecar(s)
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := mb.Sidecar(s, own, digests)
	if err != nil {
		t.Fatal(err)
	}
	admin := ""
	if adminPort != 0 {
		admin = testenv.Addr(adminPort)
	}
	return staticBootstrap(t, map[string]any{"id": s.ProxyID, "cluster": SidecarNodeCluster}, snap, admin)
}

// spiffeLeaf issues a Connect-style leaf: a URI SAN with the SPIFFE ID,
// for both server and client authentication. Returns PEM certificate and
// key.
func spiffeLeaf(t *testing.T, ca *testenv.CA, spiffeID string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := url.Parse(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: uri.Path},
		URIs:         []*url.URL{uri},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
}

package testenv

import (
	"testing"

	consulapi "github.com/hashicorp/consul/api"
)

// TestConsulStarts proves the installed agent starts, elects itself leader
// and answers the catalog API.
func TestConsulStarts(t *testing.T) {
	c := Consul(t)
	services, _, err := c.Client(t).Catalog().Services(nil)
	if err != nil {
		t.Fatalf("catalog services: %v", err)
	}
	if _, ok := services["consul"]; !ok {
		t.Fatalf("got services %v; want the built-in consul service", services)
	}
}

// TestConsulHTTPS proves WithHTTPS: the agent answers over TLS a client
// that verifies it with the CA and presents the client certificate, and
// refuses one without a certificate (verify_incoming).
func TestConsulHTTPS(t *testing.T) {
	c := Consul(t, WithHTTPS())
	client := func(withCert bool) *consulapi.Client {
		cfg := consulapi.DefaultConfig()
		cfg.Address, cfg.Scheme = c.TLS.HTTPSAddr, "https"
		cfg.TLSConfig = consulapi.TLSConfig{Address: c.TLS.ServerName, CAFile: c.TLS.CAFile}
		if withCert {
			cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
		}
		cl, err := consulapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	if _, _, err := client(true).Catalog().Services(nil); err != nil {
		t.Fatalf("over HTTPS with a client certificate: %v", err)
	}
	if _, _, err := client(false).Catalog().Services(nil); err == nil {
		t.Fatal("over HTTPS without a client certificate: no error; want the agent to refuse it")
	}
}

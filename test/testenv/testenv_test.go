package testenv

import (
	"errors"
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

// TestParseStatMissing proves a stat Envoy does not report is an error, not
// 0: a renamed stat must fail the checks that expect it to be 0.
func TestParseStatMissing(t *testing.T) {
	out := "cluster.web.upstream_rq_retry: 0\ncluster.web.upstream_rq_retry_overflow: 3\n"
	if n, err := parseStat(out, "cluster.web.upstream_rq_retry"); err != nil || n != 0 {
		t.Errorf("present stat: got %d, %v; want 0, nil", n, err)
	}
	if n, err := parseStat(out, "cluster.web.upstream_rq_retry_overflow"); err != nil || n != 3 {
		t.Errorf("present stat: got %d, %v; want 3, nil", n, err)
	}
	for _, name := range []string{"cluster.web.upstream_rq_retries", "cluster.web.upstream_rq"} {
		if n, err := parseStat(out, name); !errors.Is(err, ErrNoStat) {
			t.Errorf("missing stat %s: got %d, %v; want an error wrapping ErrNoStat", name, n, err)
		}
	}
	if _, err := parseStat("cluster.web.upstream_rq_retry: x\n", "cluster.web.upstream_rq_retry"); err == nil {
		t.Error("a value that is not a number: no error")
	}
}

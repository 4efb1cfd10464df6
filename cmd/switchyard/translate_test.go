package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// translate prints each group's resources as YAML that parses, names what
// the policy defines, is the same on every run, and never shows a private
// key.
func TestTranslate(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "test CA")
	leaf := ca.Issue(t, testenv.LeafOptions{Name: "shop.example.com"})
	testenv.WriteFile(t, dir, "shop.crt", leaf.CertPEM)
	testenv.WriteFile(t, dir, "shop.key", leaf.KeyPEM)
	testenv.WriteFile(t, dir, "edge.yaml", []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: public
    port: 8443
    tls: { certificates: [shop] }
    hosts:
      - domains: [shop.example.com]
        routes:
          - name: api
            match: { pathPrefix: /api }
            service: api
---
apiVersion: switchyard.io/v1
kind: ProxyGroup
name: sidecar
rateLimitService: { address: "127.0.0.1:8081" }
listeners:
  - name: outbound
    port: 15001
    hosts:
      - domains: ["*"]
        routes:
          - service: web
            globalRateLimit: { requests: 10, per: second, by: clientIP }
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop
certFile: shop.crt
keyFile: shop.key
`))
	out, stderr, err := run(t, "translate", dir)
	if err != nil {
		t.Fatalf("translate: %v\n%s", err, stderr)
	}
	again, _, _ := run(t, "translate", dir)
	if out != again {
		t.Error("two runs printed different output")
	}
	docs := regexp.MustCompile(`(?m)^---$`).Split(out, -1)[1:]
	if len(docs) != 2 {
		t.Fatalf("got %d documents; want one per group:\n%s", len(docs), out)
	}
	var edge struct {
		Group     string
		Listeners []struct{ Name string }
		Routes    []struct{ Name string }
		Clusters  []struct{ Name string }
		Secrets   []struct{ Name string }
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &edge); err != nil {
		t.Fatalf("the edge document is not YAML: %v\n%s", err, docs[0])
	}
	if edge.Group != "edge" || len(edge.Listeners) != 1 || edge.Listeners[0].Name != "public" ||
		len(edge.Routes) != 1 || len(edge.Clusters) != 1 || edge.Clusters[0].Name != "api" ||
		len(edge.Secrets) != 1 || edge.Secrets[0].Name != "shop" {
		t.Errorf("edge document: %+v", edge)
	}
	// What the rate limit service is given, for the group with global
	// limits only.
	var sidecar struct {
		RateLimits []struct{ Domain, Name string }
	}
	if err := yaml.Unmarshal([]byte(docs[1]), &sidecar); err != nil {
		t.Fatalf("the sidecar document is not YAML: %v\n%s", err, docs[1])
	}
	if len(sidecar.RateLimits) != 1 || sidecar.RateLimits[0].Domain != "switchyard_sidecar" || strings.Contains(docs[0], "rateLimits:") {
		t.Errorf("rateLimits: got %+v in the sidecar group; want one config for domain switchyard_sidecar, and none for edge", sidecar.RateLimits)
	}
	if strings.Contains(out, "PRIVATE KEY") || !strings.Contains(out, "[redacted]") {
		t.Errorf("the private key is not redacted:\n%s", out)
	}
	if strings.Contains(stderr, "not registered in Consul") {
		t.Errorf("translate warns about Consul, which it does not read:\n%s", stderr)
	}

	one, _, err := run(t, "translate", "--group", "sidecar", dir)
	if err != nil || len(regexp.MustCompile(`(?m)^---$`).FindAllString(one, -1)) != 1 || !strings.Contains(one, "group: sidecar") {
		t.Errorf("--group sidecar: %v\n%s", err, one)
	}
	if _, _, err := run(t, "translate", "--group", "nope", dir); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("--group nope: got %v; want an error naming it", err)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlistener: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := run(t, "translate", bad); err == nil || !strings.Contains(stderr, "bad.yaml:4: unknown field") {
		t.Errorf("invalid policy: got %v, stderr %q; want exit 1 and file:line", err, stderr)
	}
}

// translate --consul-address reads the services the policy routes to from
// a real Consul once and prints their live endpoints with their health;
// a Consul that does not answer is an error naming its address.
func TestTranslateWithConsul(t *testing.T) {
	consul := testenv.Consul(t)
	client := consul.Client(t)
	for i, status := range []string{"passing", "critical"} {
		id := fmt.Sprintf("api-%d", i+1)
		if err := client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: id, Name: "api", Address: "127.0.0.1", Port: 9001 + i,
			Check: &consulapi.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: status},
		}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	testenv.WriteFile(t, dir, "edge.yaml", []byte(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    port: 8080
    hosts:
      - domains: ["*"]
        routes:
          - service: api
`))
	out, stderr, err := run(t, "translate", "--consul-address", consul.HTTPAddr, dir)
	if err != nil {
		t.Fatalf("translate --consul-address: %v\n%s", err, stderr)
	}
	var doc struct {
		Endpoints []struct {
			ClusterName string `json:"clusterName"`
			Endpoints   []struct {
				LbEndpoints []struct {
					HealthStatus string `json:"healthStatus"`
					Endpoint     struct {
						Address struct {
							SocketAddress struct {
								PortValue int `json:"portValue"`
							} `json:"socketAddress"`
						} `json:"address"`
					} `json:"endpoint"`
				} `json:"lbEndpoints"`
			} `json:"endpoints"`
		} `json:"endpoints"`
	}
	body := strings.TrimPrefix(out, "---\n")
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	health := map[int]string{}
	for _, cla := range doc.Endpoints {
		for _, l := range cla.Endpoints {
			for _, e := range l.LbEndpoints {
				health[e.Endpoint.Address.SocketAddress.PortValue] = e.HealthStatus
			}
		}
	}
	if len(doc.Endpoints) != 1 || doc.Endpoints[0].ClusterName != "api" || health[9001] != "HEALTHY" || health[9002] != "UNHEALTHY" {
		t.Errorf("endpoints %+v (health by port %v); want api with 9001 HEALTHY and 9002 UNHEALTHY:\n%s", doc.Endpoints, health, out)
	}

	// Nobody listens at this address.
	addr := testenv.Addr(testenv.FreePort(t))
	_, _, err = run(t, "translate", "--consul-address", addr, "--consul-timeout", "2s", dir)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "--consul-timeout") {
		t.Errorf("translate with no Consul: got %v; want an error naming %s and --consul-timeout", err, addr)
	}
}

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
listeners:
  - name: outbound
    port: 15001
    hosts:
      - domains: ["*"]
        routes:
          - service: web
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

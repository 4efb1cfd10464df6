package translator

import (
	"fmt"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
)

// An authorization service off the gateway's host is reached in plain
// text, and translation says so; one on a loopback address is on the
// gateway's own host and is not warned about.
func TestPlainExtAuthzWarning(t *testing.T) {
	for extAuthz, warned := range map[string]bool{
		"{ service: authz, protocol: grpc }":               true,
		"{ address: 10.0.0.9:9001, protocol: http }":       true,
		"{ address: authz.internal:9001, protocol: http }": true,
		"{ address: 127.0.0.1:9001, protocol: http }":      false,
		`{ address: "[::1]:9001", protocol: http }`:        false,
		"{ address: localhost:9001, protocol: http }":      false,
		"{ address: 127.0.0.53:9001, protocol: http }":     false,
	} {
		set, diags := policy.Parse(map[string][]byte{"p.yaml": []byte(fmt.Sprintf(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: public
    port: 8080
    extAuthz: %s
    hosts:
      - domains: ["*"]
        routes: [{ service: web }]
`, extAuthz))})
		if diags.HasErrors() {
			t.Fatalf("%s: %v", extAuthz, diags.Err())
		}
		res := Translate(registry.NewSnapshot(registry.Service{Name: "web"}, registry.Service{Name: "authz"}), set)
		var text strings.Builder
		for _, d := range res.Diagnostics {
			text.WriteString(d.String() + "\n")
		}
		got := strings.Contains(text.String(), "reached over plain text")
		if got != warned {
			t.Errorf("extAuthz %s: warned %v, want %v:\n%s", extAuthz, got, warned, text.String())
		}
	}
}

package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// edgeMeshPolicy is a proxy group whose Envoys present Consul's leaf for
// edge-gateway: /api reaches api through its sidecar, the rest reaches
// web directly.
const edgeMeshPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: public
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /api }
            service: api
            mesh: true
          - service: web
`

// startEdgeMesh is the edge-through-the-mesh scenario: Switchyard with
// the mesh on, an edge Envoy of group edge (edgeMeshPolicy), api-1 with an
// HTTP sidecar (its app echoes the caller identity its sidecar saw), and a
// plain web-1 backend. It returns once both routes answer.
func startEdgeMesh(t *testing.T, delta bool) *Env {
	t.Helper()
	e := NewEnvWith(t, delta, map[string]string{"edge.yaml": edgeMeshPolicy}, Options{Mesh: true})
	registerWithSidecar(t, e, "api", "api-1", "http", startAPIApp(t, "api-1"), testenv.FreePort(t))
	startSidecar(t, e, "api-1")
	e.StartBackend("web", "web-1")
	e.WaitFor("the edge reaches api through its sidecar", 60*time.Second, "/api/hello", nil, func(code int, body string) bool {
		return code == http.StatusOK && strings.HasPrefix(body, "api-1")
	})
	e.WaitFor("the edge reaches web directly", settle, "/", nil, func(code int, body string) bool {
		return code == http.StatusOK && body == "web-1"
	})
	return e
}

// Scenario: an edge Envoy reaches api through api's sidecar over mutual
// TLS, presenting Consul's leaf certificate for edge-gateway (api's app
// sees its SPIFFE ID, set by api's sidecar), while a route on the same
// listener reaches web directly; on delta and state-of-the-world xDS. The
// leaf's private key reaches Envoy over SDS but never /debug/config or the
// log.
func TestEdgeMeshThroughSidecar(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := startEdgeMesh(t, delta)
		code, body, err := e.Get("/api/hello", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /api/hello: %d %q %v", code, body, err)
		}
		if !strings.Contains(body, "URI=spiffe://") || !strings.Contains(body, "/svc/edge-gateway") {
			t.Errorf("api's app saw %q; want edge-gateway's SPIFFE ID in x-forwarded-client-cert", body)
		}
		// The edge's cluster to api is the mesh one (named by api's SNI),
		// over TLS: its connections are TLS handshakes.
		stats, err := e.Envoy.Admin("/stats?filter=^cluster%5C.api%5C.default%5C..*ssl%5C.handshake$")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stats, "ssl.handshake: ") || strings.Contains(stats, "ssl.handshake: 0") {
			t.Errorf("edge Envoy's mesh cluster stats %q; want TLS handshakes on cluster api.default.<dc>.internal.<trust domain>", stats)
		}

		_, cfg, err := httpGet("http://"+e.AdminAddr+"/debug/config?group=edge", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cfg, "mesh.leaf") || !strings.Contains(cfg, "[redacted]") {
			t.Errorf("/debug/config?group=edge lacks the group's mesh leaf (redacted):\n%s", cfg)
		}
		for what, out := range map[string]string{"/debug/config": cfg, "the log": e.Switchyard.Output()} {
			if strings.Contains(out, "PRIVATE KEY") {
				t.Errorf("%s shows private key material", what)
			}
		}
	})
}

// The edge's endpoints for api are api's sidecars that pass with their
// instances: a second instance joins the rotation, and one whose service
// check fails (its sidecar still passing) leaves it.
func TestEdgeMeshHealth(t *testing.T) {
	e := startEdgeMesh(t, true)
	registerWithSidecar(t, e, "api", "api-2", "http", startAPIApp(t, "api-2"), testenv.FreePort(t))
	startSidecar(t, e, "api-2")
	seen := func() (map[string]int, error) {
		out := map[string]int{}
		for range 20 {
			code, body, err := e.Get("/api/hello", nil)
			if err != nil {
				return nil, err
			}
			if code != http.StatusOK {
				return nil, fmt.Errorf("got %d %q", code, body)
			}
			out[strings.Fields(body)[0]]++
		}
		return out, nil
	}
	testenv.Eventually(t, 60*time.Second, "both api instances answer through the edge", func() error {
		s, err := seen()
		if err == nil && (s["api-1"] == 0 || s["api-2"] == 0) {
			err = fmt.Errorf("saw %v", s)
		}
		return err
	})
	if err := e.consul.Agent().UpdateTTL("check-api-1", "down", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "api-1 out of the edge's rotation", func() error {
		s, err := seen()
		if err == nil && s["api-2"] != 20 {
			err = fmt.Errorf("saw %v; want api-2 only", s)
		}
		return err
	})
}

// Intentions apply to the edge as to any caller, at api's sidecar, with
// the group's identity as the source: edge-gateway -> api: deny gives 403
// at the edge while the plain route keeps working, and its removal
// restores 200.
func TestEdgeMeshIntentions(t *testing.T) {
	e := startEdgeMesh(t, true)
	entries := e.consul.ConfigEntries()
	deny := &consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "api",
		Sources: []*consulapi.SourceIntention{{Name: "edge-gateway", Action: consulapi.IntentionActionDeny}}}
	if _, _, err := entries.Set(deny, nil); err != nil {
		t.Fatal(err)
	}
	e.WaitFor("edge-gateway -> api denied", 60*time.Second, "/api/hello", nil, func(code int, _ string) bool {
		return code == http.StatusForbidden
	})
	if code, body, err := e.Get("/", nil); err != nil || code != http.StatusOK || body != "web-1" {
		t.Errorf("the plain route during the deny: %d %q %v; want 200 web-1", code, body, err)
	}
	if _, err := entries.Delete(consulapi.ServiceIntentions, "api", nil); err != nil {
		t.Fatal(err)
	}
	e.WaitFor("the deny removed", 60*time.Second, "/api/hello", nil, func(code int, body string) bool {
		return code == http.StatusOK && strings.HasPrefix(body, "api-1")
	})
}

// A route through the mesh needs the mesh: validate without --mesh names
// the line, with --mesh it passes (serve loads the policy the same way).
func TestEdgeMeshValidate(t *testing.T) {
	dir := t.TempDir()
	file := testenv.WriteFile(t, dir, "edge.yaml", []byte(strings.ReplaceAll(edgeMeshPolicy, "{{port}}", "18999")))
	out, err := exec.Command(switchyardBin, "validate", dir).CombinedOutput()
	if err == nil {
		t.Fatalf("validate without --mesh passed a route through the mesh:\n%s", out)
	}
	for _, want := range []string{
		file + ":4: a proxy group's mesh identity needs the Connect mesh",
		file + ":14: a route through the mesh (mesh: true) needs the Connect mesh, which is off; run serve --mesh",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(switchyardBin, "validate", "--mesh", dir).CombinedOutput(); err != nil {
		t.Errorf("validate --mesh: %v\n%s", err, out)
	}
}

// A Connect CA rotation under steady traffic through the edge: the edge
// Envoy gets the new roots and edge-gateway's renewed leaf over SDS, with
// no restart, and no call to api through the mesh fails.
func TestEdgeMeshCARotation(t *testing.T) {
	e := startEdgeMesh(t, true)
	call := func() error {
		code, body, err := e.Get("/api/hello", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.HasPrefix(body, "api-1") {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	}
	leafSerial := func() string {
		l, _, err := e.consul.Agent().ConnectCALeaf("edge-gateway", nil)
		if err != nil {
			t.Fatal(err)
		}
		return strings.ToLower(strings.ReplaceAll(l.SerialNumber, ":", ""))
	}
	first := leafSerial()
	if certs, err := e.Envoy.Admin("/certs"); err != nil || !strings.Contains(strings.ToLower(certs), first) {
		t.Fatalf("the edge Envoy does not present edge-gateway's leaf %s: %v", first, err)
	}
	if _, err := e.consul.Connect().CASetConfig(&consulapi.CAConfig{
		Provider: "consul",
		Config:   map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048},
	}, nil); err != nil {
		t.Fatalf("rotate the CA: %v", err)
	}
	// Consul spreads leaf renewals after a rotation over up to 30 s.
	deadline := time.Now().Add(120 * time.Second)
	calls, renewedAt := 0, -1
	for time.Now().Before(deadline) {
		if err := call(); err != nil {
			t.Fatalf("call %d through the edge during the CA rotation failed: %v", calls, err)
		}
		calls++
		if renewedAt < 0 && calls%10 == 0 {
			if serial := leafSerial(); serial != first {
				if certs, err := e.Envoy.Admin("/certs"); err == nil && strings.Contains(strings.ToLower(certs), serial) {
					renewedAt = calls
				}
			}
		}
		if renewedAt >= 0 && calls > renewedAt+20 {
			t.Logf("the edge presents its renewed leaf after %d calls; %d calls, none failed", renewedAt, calls)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the edge Envoy never got edge-gateway's renewed leaf in 120 s (%d calls, none failed)", calls)
}

// A proxy group may not present a service's identity: with mesh:
// {service: api}, an edge Envoy would be api to every sidecar and pass
// every intention granted to api. Its route through the mesh answers 503
// instead, Switchyard warns naming the group, the identity and the line,
// and api's app never sees a request from it, while its plain route keeps
// working. Restoring edge-gateway restores the route.
func TestEdgeMeshRefusesServiceIdentity(t *testing.T) {
	e := startEdgeMesh(t, true)
	impostor := strings.Replace(edgeMeshPolicy, "mesh: { service: edge-gateway }", "mesh: { service: api }", 1)
	e.WritePolicy("edge.yaml", impostor)
	e.WaitFor("the route through the mesh refused", settle, "/api/hello", nil, func(code int, _ string) bool {
		return code == http.StatusServiceUnavailable
	})
	warning := regexp.MustCompile(`edge\.yaml:4: warning: proxy group \\?"edge\\?": mesh identity \\?"api\\?" is a service registered in Consul`)
	if !warning.MatchString(e.Switchyard.Output()) {
		t.Errorf("no warning naming the group, its identity and the line; log:\n%s", e.Switchyard.Output())
	}
	for i := range 20 {
		code, body, err := e.Get("/api/hello", nil)
		if err != nil || code != http.StatusServiceUnavailable || strings.HasPrefix(body, "api-1") {
			t.Fatalf("call %d with identity api: %d %q %v; want 503, never api's app", i, code, body, err)
		}
		if code, body, err := e.Get("/", nil); err != nil || code != http.StatusOK || body != "web-1" {
			t.Fatalf("the plain route with identity api: %d %q %v; want 200 web-1", code, body, err)
		}
	}
	if certs, err := e.Envoy.Admin("/certs"); err != nil || strings.Contains(certs, "/svc/api") {
		t.Errorf("the edge Envoy holds a certificate for api (%v):\n%s", err, certs)
	}
	e.WritePolicy("edge.yaml", edgeMeshPolicy)
	e.WaitFor("edge-gateway restored", 60*time.Second, "/api/hello", nil, func(code int, body string) bool {
		return code == http.StatusOK && strings.HasPrefix(body, "api-1")
	})
}

// tlsMeshPolicy is edgeMeshPolicy on an HTTPS listener: the group's
// snapshot holds three secrets, the listener's certificate and the mesh
// leaf and roots. %[1]s is the directory of shop.crt and shop.key.
const tlsMeshPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
mesh: { service: edge-gateway }
listeners:
  - name: https
    address: 127.0.0.1
    port: {{port}}
    tls: { certificates: [shop-cert] }
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /api }
            service: api
            mesh: true
          - service: web
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop-cert
certFile: %[1]s/shop.crt
keyFile: %[1]s/shop.key
`

// An edge Envoy whose group has an HTTPS listener and a route through the
// mesh answers through the mesh within seconds of its start. Envoy asks
// for the mesh leaf and roots (its mesh cluster warming) before it knows
// the listener and its certificate: an xDS server that answered a secret
// request only when it names every secret of the group would hold the
// clusters, and so the whole Envoy, until Envoy's initial fetch timeout
// (15 s). On delta and state-of-the-world xDS.
func TestEdgeMeshTLSListenerStartsPromptly(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		ca := newTestCA(t)
		certDir := t.TempDir()
		ca.issue(t, "shop.example.com", 1001).write(t, certDir, "shop")
		e := NewEnvWith(t, delta, map[string]string{"edge.yaml": fmt.Sprintf(tlsMeshPolicy, certDir)}, Options{Mesh: true, NoEnvoy: true})
		sidecarPort := testenv.FreePort(t)
		registerWithSidecar(t, e, "api", "api-1", "http", startAPIApp(t, "api-1"), sidecarPort)
		sidecar := startSidecar(t, e, "api-1")
		e.StartBackend("web", "web-1")
		testenv.Eventually(t, 60*time.Second, "api's sidecar live and in group edge's config", func() error {
			if body, err := sidecar.Admin("/ready"); err != nil || strings.TrimSpace(body) != "LIVE" {
				return fmt.Errorf("api's sidecar: %q %v", body, err)
			}
			_, cfg, err := httpGet("http://"+e.AdminAddr+"/debug/config?group=edge", nil)
			if err == nil && (!strings.Contains(cfg, "mesh.leaf") || !strings.Contains(cfg, strconv.Itoa(sidecarPort))) {
				err = fmt.Errorf("group edge's config lacks the mesh leaf or api's sidecar")
			}
			return err
		})

		start := time.Now()
		e.StartEnvoy("edge")
		addr := testenv.Addr(e.Port)
		testenv.Eventually(t, 60*time.Second, "a first 200 through the mesh over HTTPS", func() error {
			code, body, err := httpsGet(addr, "shop.example.com", false, ca.pool, "/api/hello")
			if err == nil && (code != http.StatusOK || !strings.HasPrefix(body, "api-1")) {
				err = fmt.Errorf("got %d %q", code, body)
			}
			return err
		})
		took := time.Since(start)
		t.Logf("first 200 through the edge %s after its Envoy started", took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("the edge Envoy answered through the mesh %s after it started; want a few seconds (a secret request held until Envoy's initial fetch timeout?)", took.Round(time.Millisecond))
		}
	})
}

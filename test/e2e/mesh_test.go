package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// registerWithSidecar registers a service instance with a Connect sidecar
// on sidecarPort serving protocol (Proxy.Config), the sidecar's checks a passing TTL (Consul's default
// TCP check would wait for its interval), and the given upstreams.
func registerWithSidecar(t *testing.T, e *Env, service, id, protocol string, port, sidecarPort int, upstreams ...consulapi.Upstream) {
	t.Helper()
	err := e.consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: service, Address: "127.0.0.1", Port: port,
		Check: &consulapi.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: consulapi.HealthPassing},
		Connect: &consulapi.AgentServiceConnect{SidecarService: &consulapi.AgentServiceRegistration{
			Port:   sidecarPort,
			Checks: consulapi.AgentServiceChecks{{Name: "sidecar", TTL: "10m", Status: consulapi.HealthPassing}},
			Proxy:  &consulapi.AgentServiceConnectProxyConfig{Upstreams: upstreams, Config: map[string]any{"protocol": protocol}},
		}},
	})
	if err != nil {
		t.Fatalf("register %s with a sidecar: %v", id, err)
	}
}

// startSidecar runs an Envoy bootstrapped with `switchyard bootstrap
// --sidecar-for id` (and any extra bootstrap flags) against the Env's
// Switchyard.
func startSidecar(t *testing.T, e *Env, id string, extra ...string) *testenv.Envoy {
	t.Helper()
	admin := testenv.Addr(testenv.FreePort(t))
	protocol := "sotw"
	if e.delta {
		protocol = "delta"
	}
	cmd := exec.Command(switchyardBin, "bootstrap", "--sidecar-for", id, "--xds-address", e.XDSAddr, "--admin-address", admin, "--xds-protocol", protocol)
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), raceEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("switchyard bootstrap --sidecar-for %s: %v\n%s", id, err, out)
	}
	return testenv.StartEnvoy(t, "envoy "+id, string(out), admin)
}

// meshPair is the usual mesh scenario: api-1 (its app on apiPort) and
// web-1, whose app calls api on web's sidecar's local port bind, each
// registered with an HTTP sidecar that is started. It returns bind,
// api's sidecar's public port and web's sidecar.
type meshPair struct {
	bind, apiSidecar int
	web              *testenv.Envoy
}

func startMeshPair(t *testing.T, e *Env, apiPort int) meshPair {
	t.Helper()
	apiSidecar, webSidecar, bind := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	registerWithSidecar(t, e, "api", "api-1", "http", apiPort, apiSidecar)
	registerWithSidecar(t, e, "web", "web-1", "http", testenv.FreePort(t), webSidecar,
		consulapi.Upstream{DestinationName: "api", LocalBindPort: bind})
	startSidecar(t, e, "api-1")
	return meshPair{bind: bind, apiSidecar: apiSidecar, web: startSidecar(t, e, "web-1")}
}

// Scenario: web's app calls api through web's sidecar (its upstream on a
// local port) and api's sidecar, over mutual TLS with Consul's CA, both
// sidecars served by Switchyard from Consul's registrations alone. The api
// app sees web's SPIFFE ID in x-forwarded-client-cert, set by its sidecar;
// a client without a mesh certificate cannot reach api's sidecar.
func TestMeshWebCallsAPIThroughSidecars(t *testing.T) {
	protocols(t, testMeshWebCallsAPI)
}

// startAPIApp runs one instance of api's app: it answers with its id and
// the identity its sidecar saw.
func startAPIApp(t *testing.T, id string) int {
	t.Helper()
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s xfcc=%s", id, r.Header.Get("X-Forwarded-Client-Cert"))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return port
}

func testMeshWebCallsAPI(t *testing.T, delta bool) {
	e := NewEnvWith(t, delta, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
	pair := startMeshPair(t, e, startAPIApp(t, "api-1"))
	bind, apiSidecar := pair.bind, pair.apiSidecar
	call := func() (string, error) {
		code, b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/hello", bind), nil)
		if err != nil {
			return "", err
		}
		if code != http.StatusOK {
			return "", fmt.Errorf("got %d %q", code, b)
		}
		return b, nil
	}

	var body string
	testenv.Eventually(t, 60*time.Second, "web's upstream reaches api through both sidecars", func() error {
		b, err := call()
		if err == nil && !strings.HasPrefix(b, "api-1") {
			err = fmt.Errorf("got %q", b)
		}
		body = b
		return err
	})
	if !strings.Contains(body, "/svc/web") || !strings.Contains(body, "spiffe://") {
		t.Errorf("api's app saw %q; want web's SPIFFE ID in x-forwarded-client-cert", body)
	}

	// No mesh certificate: refused at the TLS handshake.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", testenv.Addr(apiSidecar), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the point is the missing client certificate
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: api\r\n\r\n")
		if err == nil {
			buf := make([]byte, 1)
			_, err = conn.Read(buf)
		}
		conn.Close()
	}
	if err == nil {
		t.Error("a client without a mesh certificate got an answer from api's sidecar")
	}
	// Plain text: no answer either.
	if code, _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", apiSidecar), nil); err == nil {
		t.Errorf("a plaintext client got %d from api's sidecar; want the connection refused", code)
	}

	// A second api instance, then the first fails its check: every call
	// goes to api-2, none fails once Envoy has the flip.
	api2Sidecar := testenv.FreePort(t)
	registerWithSidecar(t, e, "api", "api-2", "http", startAPIApp(t, "api-2"), api2Sidecar)
	startSidecar(t, e, "api-2")
	testenv.Eventually(t, 60*time.Second, "both api instances answer", func() error {
		seen := map[string]bool{}
		for range 20 {
			b, err := call()
			if err != nil {
				return err
			}
			seen[strings.Fields(b)[0]] = true
		}
		if !seen["api-1"] || !seen["api-2"] {
			return fmt.Errorf("saw %v", seen)
		}
		return nil
	})
	if err := e.consul.Agent().UpdateTTL("check-api-1", "down", consulapi.HealthCritical); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "api-1 out of rotation", func() error {
		for range 20 {
			b, err := call()
			if err != nil {
				return err
			}
			if strings.HasPrefix(b, "api-1") {
				return fmt.Errorf("api-1 still answers")
			}
		}
		return nil
	})
	for i := range 40 {
		b, err := call()
		if err != nil || !strings.HasPrefix(b, "api-2") {
			t.Fatalf("call %d after the flip: %q %v; want api-2", i, b, err)
		}
	}
}

// Intentions, written in Consul as service-intentions config entries, are
// enforced by api's sidecar on web's SPIFFE ID: a deny gives web 403 and
// its removal restores 200; an L7 intention allows GET /public only.
func TestMeshIntentions(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
	bind := startMeshPair(t, e, startAPIApp(t, "api-1")).bind
	call := func(method, path string) (int, error) {
		req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", bind, path), nil)
		if err != nil {
			return 0, err
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	want := func(what, method, path string, code int) {
		t.Helper()
		testenv.Eventually(t, 60*time.Second, what, func() error {
			got, err := call(method, path)
			if err != nil {
				return err
			}
			if got != code {
				return fmt.Errorf("%s %s: %d; want %d", method, path, got, code)
			}
			return nil
		})
	}
	entries := e.consul.ConfigEntries()
	want("no intentions: allowed (ACLs off)", http.MethodGet, "/x", http.StatusOK)

	deny := &consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "api",
		Sources: []*consulapi.SourceIntention{{Name: "web", Action: consulapi.IntentionActionDeny}}}
	if _, _, err := entries.Set(deny, nil); err != nil {
		t.Fatal(err)
	}
	want("web -> api denied", http.MethodGet, "/x", http.StatusForbidden)
	if _, err := entries.Delete(consulapi.ServiceIntentions, "api", nil); err != nil {
		t.Fatal(err)
	}
	want("the deny removed", http.MethodGet, "/x", http.StatusOK)

	// L7: Consul needs the destination's protocol to be http.
	if _, _, err := entries.Set(&consulapi.ServiceConfigEntry{Kind: consulapi.ServiceDefaults, Name: "api", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	l7 := &consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "api",
		Sources: []*consulapi.SourceIntention{{Name: "web", Permissions: []*consulapi.IntentionPermission{
			{Action: consulapi.IntentionActionAllow, HTTP: &consulapi.IntentionHTTPPermission{PathPrefix: "/public", Methods: []string{"GET"}}},
			{Action: consulapi.IntentionActionDeny, HTTP: &consulapi.IntentionHTTPPermission{PathPrefix: "/"}},
		}}}}
	if _, _, err := entries.Set(l7, nil); err != nil {
		t.Fatal(err)
	}
	want("L7: another path denied", http.MethodGet, "/private", http.StatusForbidden)
	want("L7: GET /public allowed", http.MethodGet, "/public/page", http.StatusOK)
	want("L7: POST /public denied", http.MethodPost, "/public/page", http.StatusForbidden)
}

// Consul without Connect: serve --mesh stops at once with an error that
// names the setting, instead of waiting for a mesh that never comes.
func TestMeshNeedsConnect(t *testing.T) {
	consul := testenv.Consul(t, testenv.WithHCL("connect { enabled = false }"))
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/edge.yaml", []byte(strings.ReplaceAll(webPolicy, "{{port}}", "18998")), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "switchyard", raceEnv, switchyardBin, "serve", "--mesh", "--consul-address", consul.HTTPAddr,
		"--policy", dir, "--xds-address", testenv.Addr(testenv.FreePort(t)), "--admin-address", testenv.Addr(testenv.FreePort(t)))
	testenv.Eventually(t, 60*time.Second, "serve --mesh exits", func() error {
		if !p.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if p.Err() == nil {
		t.Error("serve --mesh exited 0 against Consul without Connect")
	}
	if out := p.Output(); !strings.Contains(out, "mesh.enabled") || !strings.Contains(out, "connect { enabled = true }") {
		t.Errorf("the error does not name mesh.enabled and Consul's connect setting:\n%s", out)
	}
}

// A mesh needs no policy file: serve --mesh with an empty policy
// directory gets ready and serves sidecars from Consul alone.
func TestMeshWithoutPolicy(t *testing.T) {
	e := &Env{t: t, PolicyDir: t.TempDir(), XDSAddr: testenv.Addr(testenv.FreePort(t)), AdminAddr: testenv.Addr(testenv.FreePort(t)), delta: true}
	e.Consul = testenv.Consul(t)
	e.consul = e.Consul.Client(t)
	e.serveArgs = []string{"--consul-address", e.Consul.HTTPAddr, "--mesh"}
	e.StartSwitchyard()
	e.WaitReady()
	bind := startMeshPair(t, e, startAPIApp(t, "api-1")).bind
	testenv.Eventually(t, 60*time.Second, "web reaches api with no policy file", func() error {
		code, b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", bind), nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.HasPrefix(b, "api-1") {
			return fmt.Errorf("got %d %q", code, b)
		}
		return nil
	})
}

// A Connect CA rotation under steady traffic: both roots are trusted
// during the overlap, every sidecar gets its renewed leaf over SDS, and no
// call between web and api fails, with no Envoy restarted.
func TestMeshCARotationLosesNoCall(t *testing.T) {
	caRotationLosesNoCall(t, Options{Mesh: true})
}

// The same with a mesh pool of one blocking query: every leaf, web's
// proxy service and the destination api are multiplexed, so the renewed
// leaves come from plain reads polled after the roots change.
func TestMeshCARotationMultiplexedLosesNoCall(t *testing.T) {
	caRotationLosesNoCall(t, Options{Mesh: true, ServeArgs: []string{"--consul-max-mesh-watches", "1"}})
}

func caRotationLosesNoCall(t *testing.T, opts Options) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, opts)
	pair := startMeshPair(t, e, startAPIApp(t, "api-1"))
	bind, web := pair.bind, pair.web
	call := func() error {
		code, b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", bind), nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.HasPrefix(b, "api-1") {
			return fmt.Errorf("got %d %q", code, b)
		}
		return nil
	}
	testenv.Eventually(t, 60*time.Second, "web reaches api", call)
	leafSerial := func() string {
		l, _, err := e.consul.Agent().ConnectCALeaf("web", nil)
		if err != nil {
			t.Fatal(err)
		}
		return strings.ToLower(strings.ReplaceAll(l.SerialNumber, ":", ""))
	}
	first := leafSerial()

	if _, err := e.consul.Connect().CASetConfig(&consulapi.CAConfig{
		Provider: "consul",
		Config:   map[string]any{"PrivateKeyType": "rsa", "PrivateKeyBits": 2048},
	}, nil); err != nil {
		t.Fatalf("rotate the CA: %v", err)
	}
	// Consul spreads leaf renewals after a rotation over up to 30 s; done
	// when web's sidecar presents the renewed leaf.
	deadline := time.Now().Add(120 * time.Second)
	calls, renewedAt := 0, -1
	for time.Now().Before(deadline) {
		if err := call(); err != nil {
			t.Fatalf("call %d during the CA rotation failed: %v", calls, err)
		}
		calls++
		if renewedAt < 0 && calls%10 == 0 {
			if serial := leafSerial(); serial != first {
				if certs, err := web.Admin("/certs"); err == nil && strings.Contains(strings.ToLower(certs), serial) {
					renewedAt = calls
				}
			}
		}
		if renewedAt >= 0 && calls > renewedAt+20 {
			t.Logf("web's sidecar presents its renewed leaf after %d calls; %d calls, none failed", renewedAt, calls)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("web's sidecar never got the new root and leaf in 120 s (%d calls, none failed)", calls)
}

// A tcp service through the mesh: raw bytes echo through web's and db's
// sidecars; an intention web -> db: deny closes web's connections.
func TestMeshTCP(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
	echoPort := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(echoPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	dbSidecar, webSidecar, bind := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	registerWithSidecar(t, e, "db", "db-1", "tcp", echoPort, dbSidecar)
	registerWithSidecar(t, e, "web", "web-1", "tcp", testenv.FreePort(t), webSidecar,
		consulapi.Upstream{DestinationName: "db", LocalBindPort: bind})
	startSidecar(t, e, "db-1")
	startSidecar(t, e, "web-1")
	echo := func() error {
		c, err := net.DialTimeout("tcp", testenv.Addr(bind), 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "ping\n" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	}
	testenv.Eventually(t, 60*time.Second, "raw TCP echo through both sidecars", echo)
	deny := &consulapi.ServiceIntentionsConfigEntry{Kind: consulapi.ServiceIntentions, Name: "db",
		Sources: []*consulapi.SourceIntention{{Name: "web", Action: consulapi.IntentionActionDeny}}}
	if _, _, err := e.consul.ConfigEntries().Set(deny, nil); err != nil {
		t.Fatal(err)
	}
	closedByPeer := func(err error) bool {
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	testenv.Eventually(t, 60*time.Second, "web -> db denied: a new connection is closed", func() error {
		if err := echo(); !closedByPeer(err) {
			return fmt.Errorf("echo: %v; want the connection closed (not a timeout)", err)
		}
		return nil
	})
}

// A Service policy's mesh block applies to every sidecar's calls to the
// service: with retries on 5xx, web's calls survive api failing its first
// answers; without them the 503 reaches web.
func TestMeshServicePolicy(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
	var fails atomic.Int32
	apiPort := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(apiPort))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fails.Add(-1) >= 0 {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "api-1")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	bind := startMeshPair(t, e, apiPort).bind
	get := func() int {
		code, _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", bind), nil)
		if err != nil {
			return 0
		}
		return code
	}
	testenv.Eventually(t, 60*time.Second, "web reaches api", func() error {
		if c := get(); c != http.StatusOK {
			return fmt.Errorf("got %d", c)
		}
		return nil
	})
	fails.Store(1)
	if c := get(); c != http.StatusServiceUnavailable {
		t.Fatalf("without a mesh policy, a failing answer reached web as %d; want 503 (no retries)", c)
	}

	e.WritePolicy("services.yaml", "apiVersion: switchyard.io/v1\nkind: Service\nname: api\nmesh:\n  retries: { attempts: 2, on: [5xx] }\n")
	testenv.Eventually(t, 60*time.Second, "the mesh policy reaches web's sidecar", func() error {
		fails.Store(2)
		if c := get(); c != http.StatusOK {
			return fmt.Errorf("with two failing answers: %d; want 200 after retries", c)
		}
		return nil
	})
}

// A Service's mesh split sends a share of every sidecar's calls to api to
// another service (a canary), api-v2, through its own sidecar.
func TestMeshSplit(t *testing.T) {
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{Mesh: true})
	apiSidecar, v2Sidecar, webSidecar, bind := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	registerWithSidecar(t, e, "api", "api-1", "http", startAPIApp(t, "api-1"), apiSidecar)
	registerWithSidecar(t, e, "api-v2", "api-v2-1", "http", startAPIApp(t, "api-v2-1"), v2Sidecar)
	registerWithSidecar(t, e, "web", "web-1", "http", testenv.FreePort(t), webSidecar,
		consulapi.Upstream{DestinationName: "api", LocalBindPort: bind})
	startSidecar(t, e, "api-1")
	startSidecar(t, e, "api-v2-1")
	startSidecar(t, e, "web-1")
	tally := func() (map[string]int, error) {
		seen := map[string]int{}
		for range 40 {
			code, b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", bind), nil)
			if err != nil {
				return nil, err
			}
			if code != http.StatusOK {
				return nil, fmt.Errorf("got %d %q", code, b)
			}
			seen[strings.Fields(b)[0]]++
		}
		return seen, nil
	}
	testenv.Eventually(t, 60*time.Second, "web reaches api only", func() error {
		seen, err := tally()
		if err == nil && (seen["api-1"] != 40) {
			err = fmt.Errorf("saw %v; want api-1 only", seen)
		}
		return err
	})
	e.WritePolicy("services.yaml", "apiVersion: switchyard.io/v1\nkind: Service\nname: api\nmesh:\n  split:\n    - { service: api, weight: 50 }\n    - { service: api-v2, weight: 50 }\n")
	testenv.Eventually(t, 60*time.Second, "web's calls to api split between api and api-v2", func() error {
		seen, err := tally()
		if err == nil && (seen["api-1"] == 0 || seen["api-v2-1"] == 0) {
			err = fmt.Errorf("saw %v; want both", seen)
		}
		return err
	})
}

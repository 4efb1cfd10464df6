package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// The tests in this file pin the safety settings of the generated clusters
// and listeners (envoy/cluster.go, envoy/listener.go) by what real Envoy
// does with them, so that changing one fails a test, not only a golden.

// Panic threshold 0: with one healthy instance of four, every request goes
// to the healthy one. Envoy's default threshold (50%) would, below half
// healthy, spread requests over all four, the unhealthy ones included.
func TestUnhealthyMajorityGetsNoTraffic(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	var all []*Backend
	for i := 1; i <= 4; i++ {
		all = append(all, e.StartBackend("web", fmt.Sprintf("web-%d", i)))
	}
	e.WaitHosts("web", 4, 4)
	e.waitAllServe("all four instances serve", 20*time.Second, all...)

	for _, b := range all[1:] {
		e.SetHealth(b, consulapi.HealthCritical)
	}
	e.WaitHosts("web", 1, 4)
	e.waitOnlyServed(time.Now(), all[0].ID, 20)
	before := make([]int64, len(all))
	for i, b := range all {
		before[i] = b.Hits()
	}
	if got := e.Tally(40, "/"); got[all[0].ID] != 40 {
		t.Fatalf("one healthy instance of four: got %v over 40 requests; want all served by web-1", got)
	}
	for i, b := range all[1:] {
		if d := b.Hits() - before[i+1]; d != 0 {
			t.Errorf("unhealthy %s served %d requests; want none (no panic mode)", b.ID, d)
		}
	}
}

// Outlier detection ejects at most half of a service's instances: when
// every instance fails its connections, one stays in rotation, so the
// service answers again the moment its instances are back instead of
// waiting out an ejection.
func TestOutlierEjectionNeverEmptiesCluster(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	a := e.startIDBackend("web", "web-1")
	b := e.startIDBackend("web", "web-2")
	e.WaitHosts("web", 2, 2)
	e.waitAllServe("both instances serve", 20*time.Second, a, b)

	a.Crash()
	b.Crash()
	// Every request fails its connections to both; Envoy ejects the first
	// instance to fail three in a row and must refuse to eject the other.
	testenv.Eventually(t, 20*time.Second, "envoy refused a second ejection", func() error {
		if code, body, err := e.Get("/", nil); err == nil && code == http.StatusOK {
			t.Fatalf("with both instances down: got 200 %q", body)
		}
		active, err := e.Envoy.Stat("cluster.web.outlier_detection.ejections_active")
		if err != nil {
			return err
		}
		if active > 1 {
			t.Fatalf("envoy ejected %d of 2 instances; want at most 1 (max ejection 50%%)", active)
		}
		overflow, err := e.Envoy.Stat("cluster.web.outlier_detection.ejections_overflow")
		if err != nil {
			return err
		}
		if active != 1 || overflow < 1 {
			return fmt.Errorf("ejections_active %d, ejections_overflow %d", active, overflow)
		}
		return nil
	})
	if n, err := e.Envoy.Stat("cluster.web.outlier_detection.ejections_active"); err != nil || n != 1 {
		t.Fatalf("cluster.web.outlier_detection.ejections_active = %d (%v); want 1", n, err)
	}

	// Both come back. The instance that was not ejected serves at once
	// (the other one sits out its 10 s ejection).
	e.serveID(a)
	e.serveID(b)
	for i := range 5 {
		if code, body, err := e.Get("/", nil); err != nil || code != http.StatusOK {
			t.Fatalf("request %d after both instances are back: %d %q (%v); want 200 from the instance never ejected", i+1, code, body, err)
		}
	}
}

// The retry budget replaces Envoy's default of 3 concurrent retries per
// cluster: eight requests that all fail their first try at once are all
// retried (at least 10 retries may run at once), none answered 503 by the
// retry circuit breaker.
func TestRetryBudgetAllowsConcurrentRetries(t *testing.T) {
	const policy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: web
            service: web
            retries: { attempts: 1, on: [gateway-error] }
`
	e := NewEnv(t, true, map[string]string{"edge.yaml": policy})
	// The first try of each request (told apart by x-request-n) fails at
	// once; its retry is held a while, so that all retries run together.
	var mu sync.Mutex
	tried := map[string]bool{}
	e.startHandlerBackend("web", "web-1", func(w http.ResponseWriter, r *http.Request) {
		n := r.Header.Get("x-request-n")
		mu.Lock()
		retry := tried[n]
		tried[n] = true
		mu.Unlock()
		if n != "" && !retry {
			http.Error(w, "first try fails", http.StatusServiceUnavailable)
			return
		}
		if n != "" {
			time.Sleep(1500 * time.Millisecond)
		}
		fmt.Fprintln(w, "web-1")
	})
	e.WaitHosts("web", 1, 1)
	e.WaitFor("web reachable", 10*time.Second, "/", nil,
		func(code int, body string) bool { return code == http.StatusOK && body == "web-1" })

	retries := e.requireEnvoyStat("cluster.web.upstream_rq_retry")
	const n = 8
	got := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			key := "error"
			if code, body, err := e.Get("/", map[string]string{"x-request-n": strconv.Itoa(i)}); err == nil {
				key = fmt.Sprintf("%d %s", code, body)
			}
			mu.Lock()
			got[key]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if got["200 web-1"] != n {
		t.Errorf("%d requests failing their first try at once: got %v; want all %d retried and served", n, got, n)
	}
	if o := e.requireEnvoyStat("cluster.web.upstream_rq_retry_overflow"); o != 0 {
		t.Errorf("envoy cluster.web.upstream_rq_retry_overflow = %d; want 0 (the budget allows 10 retries at once)", o)
	}
	if d := e.requireEnvoyStat("cluster.web.upstream_rq_retry") - retries; d != n {
		t.Errorf("envoy retried %d requests; want %d", d, n)
	}
}

// use_remote_address: the client address Envoy trusts is the connection's
// (127.0.0.1 here), reported upstream as x-envoy-external-address. An
// X-Forwarded-For sent by the client is passed on but not trusted: Envoy
// appends an address of its own (for a loopback client, its host's address)
// after the client's entries.
func TestClientAddressFromConnection(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	e.startHandlerBackend("web", "web-1", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s\n", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Envoy-External-Address"))
	})
	e.WaitHosts("web", 1, 1)
	e.WaitFor("web reachable", 10*time.Second, "/", nil,
		func(code int, _ string) bool { return code == http.StatusOK })

	for _, sent := range []string{"", "203.0.113.7", "203.0.113.7, 198.51.100.9"} {
		headers := map[string]string{}
		if sent != "" {
			headers["X-Forwarded-For"] = sent
		}
		code, body, err := e.Get("/", headers)
		if err != nil || code != http.StatusOK {
			t.Fatalf("X-Forwarded-For %q: %d %q (%v)", sent, code, body, err)
		}
		xff, ext, _ := strings.Cut(body, "|")
		if ext != "127.0.0.1" {
			t.Errorf("client sent X-Forwarded-For %q: upstream got x-envoy-external-address %q; want 127.0.0.1, the connection's address", sent, ext)
		}
		var want []string
		if sent != "" {
			want = strings.Split(sent, ", ")
		}
		got := strings.Split(xff, ",")
		for i := range got {
			got[i] = strings.TrimSpace(got[i])
		}
		added := got[len(got)-1]
		if len(got) != len(want)+1 || strings.Join(got[:len(want)], ", ") != sent || added == "" || strings.HasPrefix(added, "203.0.113.") || strings.HasPrefix(added, "198.51.100.") {
			t.Errorf("client sent X-Forwarded-For %q: upstream got %q; want the client's entries and then one address Envoy added", sent, xff)
		}
	}
}

// A certificate with a caFile makes its listener require a client
// certificate signed by that CA: a client with none, or with one from
// another CA, is refused; a client with a good one is served.
func TestCAFileRequiresClientCertificate(t *testing.T) {
	dir := t.TempDir()
	serverCA := testenv.NewCA(t, "server CA")
	clientCA := testenv.NewCA(t, "client CA")
	otherCA := testenv.NewCA(t, "other CA")
	server := serverCA.Issue(t, testenv.LeafOptions{Name: "shop.example.com"})
	testenv.WriteFile(t, dir, "shop.crt", server.CertPEM)
	testenv.WriteFile(t, dir, "shop.key", server.KeyPEM)
	testenv.WriteFile(t, dir, "clients.crt", clientCA.PEM)
	policy := fmt.Sprintf(`apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: https
    address: 127.0.0.1
    port: {{port}}
    tls: { certificates: [shop-cert] }
    hosts:
      - domains: [shop.example.com]
        routes:
          - service: web
---
apiVersion: switchyard.io/v1
kind: Certificate
name: shop-cert
certFile: %[1]s/shop.crt
keyFile: %[1]s/shop.key
caFile: %[1]s/clients.crt
`, dir)
	e := NewEnv(t, true, map[string]string{"edge.yaml": policy})
	e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)

	good := clientKeyPair(t, clientCA.Issue(t, testenv.LeafOptions{Name: "client-1", Client: true}))
	forged := clientKeyPair(t, otherCA.Issue(t, testenv.LeafOptions{Name: "client-1", Client: true}))
	addr := testenv.Addr(e.Port)
	testenv.Eventually(t, 20*time.Second, "served with a client certificate", func() error {
		code, body, err := mtlsGet(addr, "shop.example.com", serverCA.Pool, &good)
		if err != nil {
			return err
		}
		if code != http.StatusOK || body != "web-1" {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"a certificate from another CA", &forged},
	} {
		if code, body, err := mtlsGet(addr, "shop.example.com", serverCA.Pool, tc.cert); err == nil {
			t.Errorf("%s: got %d %q; want the TLS handshake refused", tc.name, code, body)
		}
	}
}

func clientKeyPair(t *testing.T, l *testenv.Leaf) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mtlsGet sends one HTTPS request to addr for serverName, verifying the
// server against roots and presenting cert (none when nil). A refused
// client certificate shows as an error: in TLS 1.3 the server's alert
// arrives with the first read, after the client's side of the handshake.
func mtlsGet(addr, serverName string, roots *x509.CertPool, cert *tls.Certificate) (int, string, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c := http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			// The URL names the server; the connection goes to addr.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			TLSClientConfig:   cfg,
			DisableKeepAlives: true,
			ForceAttemptHTTP2: true,
		},
	}
	req, err := http.NewRequest(http.MethodGet, "https://"+serverName+"/", nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// requireEnvoyStat reads one Envoy counter, failing the test when Envoy has no
// such series (a renamed stat must not read as 0).
func (e *Env) requireEnvoyStat(name string) int {
	e.t.Helper()
	n, err := e.Envoy.Stat(name)
	if err != nil {
		e.t.Fatalf("envoy stat %s: %v", name, err)
	}
	return n
}

// startHandlerBackend starts a backend answering with h, and registers it
// in Consul like StartBackend. Its Hits count every request.
func (e *Env) startHandlerBackend(service, id string, h http.HandlerFunc) *Backend {
	e.t.Helper()
	b := &Backend{ID: id, Service: service, Address: "127.0.0.1", Port: testenv.FreePort(e.t)}
	e.serveBackend(b, h)
	e.Register(b)
	return b
}

// startIDBackend starts a backend answering with its id, which serveID can
// bring back after a Crash.
func (e *Env) startIDBackend(service, id string) *Backend {
	e.t.Helper()
	b := &Backend{ID: id, Service: service, Address: "127.0.0.1", Port: testenv.FreePort(e.t)}
	e.serveID(b)
	e.Register(b)
	return b
}

// serveID serves b (again) on its port, answering with its id.
func (e *Env) serveID(b *Backend) {
	e.t.Helper()
	e.serveBackend(b, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, b.ID) })
}

// serveBackend listens on b's port and serves h there until the test ends
// or b crashes.
func (e *Env) serveBackend(b *Backend, h http.HandlerFunc) {
	e.t.Helper()
	l, err := net.Listen("tcp", testenv.Addr(b.Port))
	if err != nil {
		e.t.Fatalf("backend %s: %v", b.ID, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			h(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	b.srv = srv
	go func() { _ = srv.Serve(l) }()
	e.t.Cleanup(func() { srv.Close() })
}

package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/test/testenv"
)

// runServer runs a Server with cfg (addresses on free loopback ports unless
// set; Consul unreachable, which does not stop xDS or admin from serving)
// until the test ends, and returns it with its log.
func runServer(t *testing.T, cfg Config) (*Server, *testenv.SyncBuffer) {
	t.Helper()
	if cfg.XDSAddress == "" {
		cfg.XDSAddress = testenv.Addr(testenv.FreePort(t))
	}
	if cfg.AdminAddress == "" {
		cfg.AdminAddress = testenv.Addr(testenv.FreePort(t))
	}
	if len(cfg.PolicyPaths) == 0 {
		cfg.PolicyPaths = []string{t.TempDir()}
	}
	cfg.Consul = registry.Config{Address: testenv.Addr(testenv.FreePort(t))}
	logs := &testenv.SyncBuffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testenv.Eventually(t, 30*time.Second, "switchyard starting", func() error {
		if !strings.Contains(logs.String(), "switchyard starting") {
			return fmt.Errorf("not in the log yet:\n%s", logs)
		}
		return nil
	})
	for _, addr := range []string{cfg.XDSAddress, cfg.AdminAddress} {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		if err := testenv.WaitTCP(wctx, strings.Replace(addr, "0.0.0.0", "127.0.0.1", 1)); err != nil {
			t.Fatalf("%s: %v\n%s", addr, err, logs)
		}
		wcancel()
	}
	return s, logs
}

func TestAdminBearerToken(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{PolicyPaths: []string{dir}, AdminTokenFile: tokenFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.adminHandler().ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusServiceUnavailable}, // open, and not ready yet
		{"/debug/config", "", http.StatusUnauthorized},
		{"/metrics", "Bearer wrong", http.StatusUnauthorized},
		{"/debug/proxies", "s3cret-token", http.StatusUnauthorized}, // no scheme
		{"/debug/config", "Bearer s3cret-token", http.StatusOK},
		{"/metrics", "Bearer s3cret-token", http.StatusOK},
	} {
		if got := get(tc.path, tc.auth); got != tc.want {
			t.Errorf("GET %s with %q: %d; want %d", tc.path, tc.auth, got, tc.want)
		}
	}

	empty := filepath.Join(dir, "empty.token")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{PolicyPaths: []string{dir}, AdminTokenFile: empty}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("New with an empty token file: %v; want an error naming %s", err, empty)
	}
	fifo := filepath.Join(dir, "pipe.token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := New(Config{PolicyPaths: []string{dir}, AdminTokenFile: fifo}, slog.New(slog.DiscardHandler))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), fifo) {
			t.Errorf("New with a named pipe as token file: %v; want an error naming it", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("New hangs on a token file that is a named pipe")
	}
}

// An admin API reachable from other hosts without a token is warned about
// at start; with a token, or on loopback, it is not.
func TestAdminOffLoopbackWarning(t *testing.T) {
	const warning = "admin API listens off loopback without protection"
	_, logs := runServer(t, Config{AdminAddress: fmt.Sprintf("0.0.0.0:%d", testenv.FreePort(t))})
	if !strings.Contains(logs.String(), warning) {
		t.Errorf("no warning for an open admin API on 0.0.0.0:\n%s", logs)
	}
	_, logs = runServer(t, Config{})
	if strings.Contains(logs.String(), warning) {
		t.Errorf("warning for an admin API on loopback:\n%s", logs)
	}
}

// Past admin.max-connections, a new admin connection is not served until
// one closes.
func TestAdminMaxConnections(t *testing.T) {
	s, _ := runServer(t, Config{Limits: Limits{AdminMaxConnections: 1}})
	hog, err := net.Dial("tcp", s.cfg.AdminAddress)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Second}
	if resp, err := client.Get("http://" + s.cfg.AdminAddress + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /healthz answered %s while the only admin connection is held; want no answer", resp.Status)
	}
	hog.Close()
	testenv.Eventually(t, 30*time.Second, "admin answers once the held connection closed", func() error {
		resp, err := client.Get("http://" + s.cfg.AdminAddress + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// xds.max-connection-age ends xDS connections, so a client certificate is
// checked again; Envoy reconnects.
func TestXDSMaxConnectionAge(t *testing.T) {
	s, _ := runServer(t, Config{Limits: Limits{XDSMaxConnectionAge: 300 * time.Millisecond, XDSMaxConnectionAgeGrace: 300 * time.Millisecond}})
	conn, err := grpc.NewClient(s.cfg.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "edge"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	// Nothing is served (no policy, no Consul): Recv returns only when the
	// connection is closed under the stream.
	_, err = stream.Recv()
	if ctx.Err() != nil {
		t.Fatal("the xDS connection outlived its max age by a minute")
	}
	if err == nil {
		t.Fatal("Recv returned a response; want the stream ended by the connection's max age")
	}
}

// catalogOnlyConsul answers the catalog with two services and records
// every path asked for. Blocking queries block until the client gives up.
type catalogOnlyConsul struct {
	mu    sync.Mutex
	paths []string
}

func (c *catalogOnlyConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	c.mu.Unlock()
	if r.URL.Query().Get("index") == "7" {
		<-r.Context().Done()
		return
	}
	w.Header().Set("X-Consul-Index", "7")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/catalog/services":
		fmt.Fprint(w, `{"web":[],"api":[]}`)
	case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
		fmt.Fprint(w, `[]`)
	default:
		http.NotFound(w, r)
	}
}

func (c *catalogOnlyConsul) asked(prefix string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.paths {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// Until a valid policy names services, no service is watched; then only
// the services it routes to are.
func TestNoWatchesBeforeAPolicy(t *testing.T) {
	consul := &catalogOnlyConsul{}
	srv := httptest.NewServer(consul)
	defer srv.Close()
	dir := t.TempDir()
	logs := &testenv.SyncBuffer{}
	s, err := New(Config{
		PolicyPaths:  []string{dir},
		XDSAddress:   testenv.Addr(testenv.FreePort(t)),
		AdminAddress: testenv.Addr(testenv.FreePort(t)),
		Consul:       registry.Config{Address: strings.TrimPrefix(srv.URL, "http://")},
	}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testenv.Eventually(t, 30*time.Second, "consul synced without a policy", func() error {
		if !strings.Contains(logs.String(), "consul synced") {
			return fmt.Errorf("not yet:\n%s", logs)
		}
		return nil
	})
	if got := consul.asked("/v1/health/"); len(got) > 0 {
		t.Errorf("health watched before any valid policy: %v", got)
	}

	policy := "apiVersion: switchyard.io/v1\nkind: ProxyGroup\nname: edge\nlisteners:\n  - name: http\n    port: 8080\n    hosts:\n      - domains: [\"*\"]\n        routes:\n          - service: web\n"
	if err := os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "web watched once the policy routes to it", func() error {
		if len(consul.asked("/v1/health/service/web")) == 0 {
			return fmt.Errorf("asked: %v", consul.asked("/"))
		}
		return nil
	})
	if got := consul.asked("/v1/health/service/api"); len(got) > 0 {
		t.Errorf("api watched though no policy routes to it: %v", got)
	}
}

// xds.max-streams-per-connection: a stream past the limit on one
// connection waits until another ends; a request over 4 MiB is refused.
func TestXDSStreamAndMessageLimits(t *testing.T) {
	s, logs := runServer(t, Config{Limits: Limits{XDSMaxStreams: 2}})
	conn, err := grpc.NewClient(s.cfg.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	open := func(ctx context.Context) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
		st, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		// A stream is opened on the wire with its first message.
		return st, st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "edge"}, TypeUrl: resource.ClusterType})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx); err != nil {
		t.Fatal(err)
	}
	// The server tells the client its limit in its first SETTINGS frame;
	// once known, a third stream cannot start.
	blockedCtx, blockedCancel := context.WithTimeout(ctx, 2*time.Second)
	defer blockedCancel()
	third, err := open(blockedCtx)
	if err == nil {
		_, err = third.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a third stream on one connection with a limit of 2: %v; want it held back until its deadline", err)
	}
	if n := strings.Count(logs.String(), "envoy connected"); n != 2 {
		t.Fatalf("%d streams reached the server on one connection with a limit of 2; want 2:\n%s", n, logs)
	}
	_ = first.CloseSend()
	cancel()

	conn2, err := grpc.NewClient(s.cfg.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn2).StreamAggregatedResources(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	big := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: strings.Repeat("x", 5<<20), Cluster: "edge"}, TypeUrl: resource.ClusterType}
	_ = st.Send(big)
	if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 5 MiB request: %v; want ResourceExhausted", err)
	}
}

// The admin server drops a client that sends its request too slowly and a
// connection left idle. (Timeouts shortened for the test; not parallel.)
func TestAdminTimeouts(t *testing.T) {
	read, idle := adminReadTimeout, adminIdleTimeout
	adminReadTimeout, adminIdleTimeout = 300*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() { adminReadTimeout, adminIdleTimeout = read, idle })
	s, _ := runServer(t, Config{})

	closed := func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return fmt.Errorf("still open after 30s")
				}
				return nil // closed by the server
			}
		}
	}
	// A body that never finishes.
	slow, err := net.Dial("tcp", s.cfg.AdminAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
	if err := closed(slow); err != nil {
		t.Errorf("a request body that never finishes: %v", err)
	}
	// An idle keep-alive connection after a request.
	idleConn, err := net.Dial("tcp", s.cfg.AdminAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer idleConn.Close()
	fmt.Fprintf(idleConn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := closed(idleConn); err != nil {
		t.Errorf("an idle connection: %v", err)
	}
}

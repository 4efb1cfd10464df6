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
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

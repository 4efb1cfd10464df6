package e2e

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// grpcPolicy routes gRPC health checks: with header x-which: policy to
// greeter-policy (HTTP/2 by a Service policy), with x-which: plain to
// plain (nothing says HTTP/2), else to greeter (HTTP/2 by its Consul meta).
const grpcPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /grpc.health.v1.Health/, headers: [{ name: x-which, exact: policy }] }
            service: greeter-policy
          - match: { pathPrefix: /grpc.health.v1.Health/, headers: [{ name: x-which, exact: plain }] }
            service: plain
          - match: { pathPrefix: /grpc.health.v1.Health/ }
            service: greeter
---
apiVersion: switchyard.io/v1
kind: Service
name: greeter-policy
protocol: grpc
`

// startGRPCBackend starts a gRPC server with the standard health service
// and registers it in Consul with meta.
func startGRPCBackend(t *testing.T, e *Env, service string, meta map[string]string) {
	t.Helper()
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer()) // answers SERVING for ""
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	err = e.consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: service + "-1", Name: service, Address: "127.0.0.1", Port: port, Meta: meta,
		Check: &consulapi.AgentServiceCheck{CheckID: "check-" + service + "-1", TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A real gRPC call through the gateway succeeds when the service is known
// to speak HTTP/2, from its Consul meta or from a Service policy; without
// either, Envoy sends HTTP/1.1 and the call fails.
func TestGRPCThroughTheGateway(t *testing.T) {
	protocols(t, testGRPCThroughTheGateway)
}

func testGRPCThroughTheGateway(t *testing.T, delta bool) {
	e := NewEnv(t, delta, map[string]string{"edge.yaml": grpcPolicy})
	startGRPCBackend(t, e, "greeter", map[string]string{"protocol": "grpc"})
	startGRPCBackend(t, e, "greeter-policy", nil)
	startGRPCBackend(t, e, "plain", nil)
	for _, svc := range []string{"greeter", "greeter-policy", "plain"} {
		e.WaitHosts(svc, 1, 1)
	}
	conn, err := grpc.NewClient(testenv.Addr(e.Port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func(which string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if which != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-which", which)
		}
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %s", resp.GetStatus())
		}
		return nil
	}
	testenv.Eventually(t, settle, "gRPC health check through the gateway (Consul meta protocol=grpc)", func() error { return check("") })
	testenv.Eventually(t, settle, "gRPC health check through the gateway (Service policy protocol: grpc)", func() error { return check("policy") })
	if err := check("plain"); err == nil {
		t.Error("a gRPC call to a service nothing marks as HTTP/2 succeeded; the check above would prove nothing")
	}
}

// wsPolicy allows WebSocket upgrades on route ws of listener http, not on
// its other routes, and on every route of listener chat.
const wsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - match: { pathPrefix: /ws }
            service: web
            websocket: true
          - service: web
  - name: chat
    address: 127.0.0.1
    port: {{port2}}
    websocket: true
    hosts:
      - domains: ["*"]
        routes:
          - service: web
`

// startWebSocketBackend registers a backend that accepts a WebSocket
// handshake and then echoes raw bytes.
func startWebSocketBackend(t *testing.T, e *Env) {
	t.Helper()
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			fmt.Fprintln(w, "web-1")
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		_ = rw.Flush()
		_, _ = io.Copy(conn, rw) // echo
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	e.Register(&Backend{ID: "web-1", Service: "web", Address: "127.0.0.1", Port: port})
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsDial asks for a WebSocket upgrade of path on port and returns the
// response's status code and, after a 101, what an echo of "ping" returned.
func wsDial(port int, path string) (int, string, error) {
	c, err := net.DialTimeout("tcp", testenv.Addr(port), 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp.StatusCode, "", nil
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept("dGhlIHNhbXBsZSBub25jZQ==") {
		return resp.StatusCode, "", fmt.Errorf("Sec-WebSocket-Accept %q", got)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		return resp.StatusCode, "", err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil {
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, string(buf), nil
}

// A WebSocket upgrade is passed through where the policy allows it, per
// route or per listener, and refused (403, Envoy's answer) elsewhere.
func TestWebSocketUpgrades(t *testing.T) {
	protocols(t, testWebSocketUpgrades)
}

func testWebSocketUpgrades(t *testing.T, delta bool) {
	e := NewEnv(t, delta, map[string]string{"edge.yaml": wsPolicy})
	startWebSocketBackend(t, e)
	e.WaitHosts("web", 1, 1)
	for _, tc := range []struct {
		name string
		port int
		path string
		want int
	}{
		{"route with websocket: true", e.Port, "/ws/chat", http.StatusSwitchingProtocols},
		{"listener with websocket: true", e.Port2, "/anything", http.StatusSwitchingProtocols},
		{"route without it", e.Port, "/other", http.StatusForbidden},
	} {
		testenv.Eventually(t, settle, tc.name, func() error {
			code, echo, err := wsDial(tc.port, tc.path)
			if err != nil {
				return err
			}
			if code != tc.want {
				return fmt.Errorf("status %d; want %d", code, tc.want)
			}
			if code == http.StatusSwitchingProtocols && echo != "ping" {
				return fmt.Errorf("echo %q through the upgraded connection; want ping", echo)
			}
			return nil
		})
	}
}

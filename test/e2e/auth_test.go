package e2e

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	consulapi "github.com/hashicorp/consul/api"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// These scenarios prove a listener's authentication and authorization
// through real Envoy: external authorization services (gRPC, in Consul;
// HTTP, by address), JWT validation with keys from a file and from a
// Consul service, and the upstream's own address as Host.

// registerService registers a test server at port in Consul, passing.
func registerService(t *testing.T, e *Env, service string, port int) {
	t.Helper()
	err := e.consul.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: service + "-1", Name: service, Address: "127.0.0.1", Port: port,
		Check: &consulapi.AgentServiceCheck{CheckID: "check-" + service + "-1", TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// grpcAuthz allows requests with the header x-allow: yes, adding the
// header x-authz: grpc to what is forwarded, and denies the others.
type grpcAuthz struct {
	authv3.UnimplementedAuthorizationServer
	checks atomic.Int64
}

func (g *grpcAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	g.checks.Add(1)
	if req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-allow"] != "yes" {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}, nil
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-authz", Value: "grpc"}}},
		}},
	}, nil
}

// startHTTPAuthz starts an HTTP authorization service: a request under
// /check with x-allow: yes is answered 200 with x-authz-user: alice (but
// under /check/anon, with no user), any other 403 with a body of its own.
func startHTTPAuthz(t *testing.T) (addr string, srv *http.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/check/") || r.Header.Get("x-allow") != "yes" {
			w.Header().Set("x-denied-by", "http-authz")
			http.Error(w, "denied by http authz", http.StatusForbidden)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/check/anon") {
			w.Header().Set("x-authz-user", "alice")
		}
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), srv
}

const extAuthzPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: grpc-authz
    address: 127.0.0.1
    port: {{port}}
    extAuthz: { service: authz, protocol: grpc, timeout: 2s }
    hosts:
      - domains: ["*"]
        routes:
          - name: open
            match: { pathPrefix: /open }
            service: web
            extAuthz: false
          - name: limited
            match: { pathPrefix: /limited }
            service: web
            rateLimit: { requests: 1, per: 1m }
          - name: web
            service: web
  - name: http-authz
    address: 127.0.0.1
    port: {{port2}}
    extAuthz:
      address: {{authz}}
      protocol: http
      timeout: 2s
      failureMode: allow
      pathPrefix: /check
      headers: [x-allow]
      upstreamHeaders: [x-authz-user]
      clientHeaders: [x-denied-by]
    hosts:
      - domains: ["*"]
        routes:
          - name: open
            match: { pathPrefix: /open }
            service: web
            extAuthz: false
          - service: web
`

// An authorization service in Consul speaking gRPC, and one given by
// address speaking HTTP, decide which requests reach the service; a route
// that turns extAuthz off is not checked, and a client cannot pass the
// HTTP service's upstreamHeaders there itself; a request over a local
// rate limit is refused before it is checked; with failureMode: allow, a
// service that is down lets requests through.
func TestExtAuthz(t *testing.T) {
	httpAddr, httpSrv := startHTTPAuthz(t)
	e := NewEnv(t, true, map[string]string{"edge.yaml": strings.ReplaceAll(extAuthzPolicy, "{{authz}}", httpAddr)})
	e.StartBackend("web", "web-1")

	authz := &grpcAuthz{}
	port := testenv.FreePort(t)
	l, err := net.Listen("tcp", testenv.Addr(port))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, authz)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	registerService(t, e, "authz", port)
	e.WaitHosts("web", 1, 1)
	e.WaitHosts("authz", 1, 1)

	grpcL, httpL := testenv.Addr(e.Port), testenv.Addr(e.Port2)
	allow := map[string]string{"x-allow": "yes"}
	if got := send(t, http.MethodGet, grpcL, "shop.example.com", "/", allow); got.code != 200 || got.body != "web-1" || got.header.Get("X-Seen-Req-X-Authz") != "grpc" {
		t.Errorf("gRPC authz, allowed: got %d %q, upstream saw x-authz %q; want 200 web-1, grpc", got.code, got.body, got.header.Get("X-Seen-Req-X-Authz"))
	}
	if got := send(t, http.MethodGet, grpcL, "shop.example.com", "/", nil); got.code != http.StatusForbidden {
		t.Errorf("gRPC authz, denied: got %d %q; want 403", got.code, got.body)
	}
	before := authz.checks.Load()
	if got := send(t, http.MethodGet, grpcL, "shop.example.com", "/open", nil); got.code != 200 || got.body != "web-1" {
		t.Errorf("route with extAuthz: false: got %d %q; want 200 web-1", got.code, got.body)
	}
	if n := authz.checks.Load() - before; n != 0 {
		t.Errorf("route with extAuthz: false was checked %d times; want 0", n)
	}
	// The local rate limit runs before the authorization filter: a flood
	// over it costs the service nothing.
	before = authz.checks.Load()
	var statuses []int
	for range 5 {
		statuses = append(statuses, send(t, http.MethodGet, grpcL, "shop.example.com", "/limited", allow).code)
	}
	if n := authz.checks.Load() - before; n != 1 || statuses[0] != 200 || statuses[4] != http.StatusTooManyRequests {
		t.Errorf("5 requests to a route limited to 1 a minute: got %v, with %d checks; want 200 then 429s, with 1 check", statuses, n)
	}

	if got := send(t, http.MethodGet, httpL, "shop.example.com", "/orders", allow); got.code != 200 || got.body != "web-1" || got.header.Get("X-Seen-Req-X-Authz-User") != "alice" {
		t.Errorf("HTTP authz, allowed: got %d %q, upstream saw x-authz-user %q; want 200 web-1, alice", got.code, got.body, got.header.Get("X-Seen-Req-X-Authz-User"))
	}
	got := send(t, http.MethodGet, httpL, "shop.example.com", "/orders", nil)
	if got.code != http.StatusForbidden || got.body != "denied by http authz" || got.header.Get("X-Denied-By") != "http-authz" {
		t.Errorf("HTTP authz, denied: got %d %q x-denied-by %q; want 403 from the service, with its body and header", got.code, got.body, got.header.Get("X-Denied-By"))
	}
	// Envoy's authorization filter never removes a client's copy of an
	// upstream header: the route without the check does.
	got = send(t, http.MethodGet, httpL, "shop.example.com", "/open", map[string]string{"x-authz-user": "mallory"})
	if u := got.header.Get("X-Seen-Req-X-Authz-User"); got.code != 200 || u != "" {
		t.Errorf("spoofed x-authz-user on a route with extAuthz: false: got %d, upstream saw %q; want 200 and no x-authz-user", got.code, u)
	}

	// Nor where the service allows a request without naming a user: the
	// client's copy was removed before the check.
	spoof := map[string]string{"x-allow": "yes", "x-authz-user": "mallory"}
	got = send(t, http.MethodGet, httpL, "shop.example.com", "/anon", spoof)
	if u := got.header.Get("X-Seen-Req-X-Authz-User"); got.code != 200 || u != "" {
		t.Errorf("spoofed x-authz-user, allowed without a user: got %d, upstream saw %q; want 200 and no x-authz-user", got.code, u)
	}

	// failureMode: allow: with its service down, the listener lets
	// requests through.
	httpSrv.Close()
	testenv.Eventually(t, settle, "requests pass while the HTTP authorization service is down (failureMode: allow)", func() error {
		if r := send(t, http.MethodGet, httpL, "shop.example.com", "/orders", nil); r.code != 200 || r.body != "web-1" {
			return fmt.Errorf("got %d %q", r.code, r.body)
		}
		return nil
	})
	e.requireNoNACKs()
}

// signer makes RS256 JSON Web Tokens and publishes its public key.
type signer struct {
	key *rsa.PrivateKey
	kid string
}

func newSigner(t *testing.T, kid string) *signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{key: key, kid: kid}
}

// jwks is the signer's public key as a JSON Web Key Set.
func (s *signer) jwks() []byte {
	b64 := base64.RawURLEncoding
	set := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": s.kid,
		"n": b64.EncodeToString(s.key.N.Bytes()),
		"e": b64.EncodeToString(big.NewInt(int64(s.key.E)).Bytes()),
	}}}
	b, _ := json.Marshal(set)
	return b
}

// token signs claims.
func (s *signer) token(t *testing.T, claims map[string]any) string {
	t.Helper()
	b64 := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": s.kid})
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64.EncodeToString(sig)
}

const jwtPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
jwt:
  providers:
    - name: file
      issuer: https://file.example.com
      audiences: [api]
      jwksFile: {{jwksFile}}
      claimHeaders: [{ claim: sub, header: x-user }]
      payloadHeader: x-jwt-payload
    - name: remote
      issuer: https://remote.example.com
      remoteJWKS: { service: keys, path: /jwks.json }
      forward: true
  require: [file]
listeners:
  - name: api
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: remote
            match: { pathPrefix: /remote }
            service: web
            requireJWT: [remote]
          - name: either
            match: { pathPrefix: /either }
            service: web
            requireJWT: [file, remote]
          - name: free
            match: { pathPrefix: /free }
            service: web
            requireJWT: false
          - name: web
            service: web
`

// JWT validation: a valid token passes (its sub reaches the upstream as a
// header), a missing, expired, wrongly signed or foreign token is refused
// with 401, a token for another audience with 403 (Envoy's answer to
// an audience mismatch); keys come from a file or from a Consul service.
// The providers are the proxy group's, which its listener inherits.
func TestJWT(t *testing.T) {
	fileKeys, remoteKeys := newSigner(t, "file-1"), newSigner(t, "remote-1")
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, fileKeys.jwks(), 0o600); err != nil {
		t.Fatal(err)
	}
	e := NewEnv(t, true, map[string]string{"edge.yaml": strings.ReplaceAll(jwtPolicy, "{{jwksFile}}", jwksFile)})
	e.StartBackend("web", "web-1")

	var fetches atomic.Int64
	keys := http.NewServeMux()
	keys.HandleFunc("/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(remoteKeys.jwks())
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	keySrv := &http.Server{Handler: keys, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = keySrv.Serve(l) }()
	t.Cleanup(func() { keySrv.Close() })
	registerService(t, e, "keys", l.Addr().(*net.TCPAddr).Port)
	e.WaitHosts("web", 1, 1)
	e.WaitHosts("keys", 1, 1)

	now := time.Now()
	claims := func(iss, aud string, exp time.Time) map[string]any {
		return map[string]any{"iss": iss, "aud": aud, "sub": "alice", "iat": now.Unix(), "exp": exp.Unix()}
	}
	const fileIss, remoteIss = "https://file.example.com", "https://remote.example.com"
	valid := fileKeys.token(t, claims(fileIss, "api", now.Add(time.Hour)))
	remote := remoteKeys.token(t, claims(remoteIss, "anyone", now.Add(time.Hour)))
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	addr := testenv.Addr(e.Port)

	for _, c := range []struct {
		name    string
		path    string
		headers map[string]string
		code    int
	}{
		{"valid token from the file's key", "/", bearer(valid), 200},
		{"no token", "/", nil, 401},
		{"expired token", "/", bearer(fileKeys.token(t, claims(fileIss, "api", now.Add(-time.Hour)))), 401},
		{"token for another audience", "/", bearer(fileKeys.token(t, claims(fileIss, "billing", now.Add(time.Hour)))), 403},
		{"token signed by another key", "/", bearer(remoteKeys.token(t, claims(fileIss, "api", now.Add(time.Hour)))), 401},
		{"other provider's token", "/", bearer(remote), 401},
		{"token from the Consul service's key", "/remote", bearer(remote), 200},
		{"file token on the remote route", "/remote", bearer(valid), 401},
		{"either provider: file", "/either", bearer(valid), 200},
		{"either provider: remote", "/either", bearer(remote), 200},
		{"either provider: none", "/either", nil, 401},
		{"requireJWT: false", "/free", nil, 200},
	} {
		if got := send(t, http.MethodGet, addr, "api.example.com", c.path, c.headers); got.code != c.code {
			t.Errorf("%s: got %d %q; want %d", c.name, got.code, got.body, c.code)
		}
	}
	if fetches.Load() == 0 {
		t.Error("the key server in Consul was never asked for its keys")
	}

	// The verified token's sub reaches the upstream; the file provider
	// removes its token, the remote one (forward: true) keeps it.
	got := send(t, http.MethodGet, addr, "api.example.com", "/", bearer(valid))
	if u, a := got.header.Get("X-Seen-Req-X-User"), got.header.Get("X-Seen-Req-Authorization"); u != "alice" || a != "" {
		t.Errorf("file provider: upstream saw x-user %q, authorization %q; want alice and none", u, a)
	}
	var payload map[string]any
	if b, err := base64.RawURLEncoding.DecodeString(got.header.Get("X-Seen-Req-X-Jwt-Payload")); err != nil || json.Unmarshal(b, &payload) != nil || payload["sub"] != "alice" {
		t.Errorf("file provider: upstream saw x-jwt-payload %q; want the token's payload, base64url JSON with sub alice", got.header.Get("X-Seen-Req-X-Jwt-Payload"))
	}
	got = send(t, http.MethodGet, addr, "api.example.com", "/remote", bearer(remote))
	if a := got.header.Get("X-Seen-Req-Authorization"); a != "Bearer "+remote {
		t.Errorf("remote provider (forward: true): upstream saw authorization %q; want the token", a)
	}
	// A client cannot pass its own claim or payload header where no token
	// is required, nor where another provider's token is: those routes
	// remove the headers.
	for _, c := range []struct{ name, path, token string }{
		{"route without a requirement", "/free", ""},
		{"route requiring another provider", "/remote", remote},
	} {
		h := map[string]string{"x-user": "mallory", "x-jwt-payload": "forged"}
		if c.token != "" {
			h["Authorization"] = "Bearer " + c.token
		}
		got := send(t, http.MethodGet, addr, "api.example.com", c.path, h)
		if u, p := got.header.Get("X-Seen-Req-X-User"), got.header.Get("X-Seen-Req-X-Jwt-Payload"); got.code != 200 || u != "" || p != "" {
			t.Errorf("spoofed headers on the %s: got %d, upstream saw x-user %q, x-jwt-payload %q; want 200 and neither", c.name, got.code, u, p)
		}
	}
	// Where the route requires the provider, the verified claim reaches
	// the upstream (the route's removals, applied after the JWT filter,
	// leave it), and the client's own copy does not.
	spoofed := bearer(valid)
	spoofed["x-user"] = "mallory"
	got = send(t, http.MethodGet, addr, "api.example.com", "/", spoofed)
	if u := got.header.Get("X-Seen-Req-X-User"); got.code != 200 || u != "alice" {
		t.Errorf("spoofed x-user with a valid token: got %d, upstream saw %q; want 200 and alice alone", got.code, u)
	}
	e.requireNoNACKs()
}

const hostFromUpstreamPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: web
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: upstream-host
            match: { pathPrefix: /own }
            service: web
            rewrite: { hostFromUpstream: true }
          - name: client-host
            service: web
`

// rewrite.hostFromUpstream: the instance gets its own address as Host;
// other routes keep the client's.
func TestHostFromUpstream(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": hostFromUpstreamPolicy})
	b := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	addr := testenv.Addr(e.Port)
	want := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port))
	if got := send(t, http.MethodGet, addr, "shop.example.com", "/own", nil); got.code != 200 || b.LastHost() != want {
		t.Errorf("hostFromUpstream: got %d, backend saw Host %q; want 200, %q", got.code, b.LastHost(), want)
	}
	if got := send(t, http.MethodGet, addr, "shop.example.com", "/", nil); got.code != 200 || b.LastHost() != "shop.example.com" {
		t.Errorf("no rewrite: got %d, backend saw Host %q; want 200, shop.example.com", got.code, b.LastHost())
	}
	e.requireNoNACKs()
}

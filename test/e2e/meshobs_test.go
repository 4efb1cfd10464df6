package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// A Mesh document sets every sidecar's access log and tracing. With JSON
// lines to a file, one request from web's app to api shows up twice: at
// web's sidecar (its upstream listener: upstream cluster api's SNI, api's
// SPIFFE ID verified) and at api's sidecar (its public listener: to
// local_app, web's SPIFFE ID verified); both sidecars send a span of the
// same trace, named after their service. A policy edit moves the log to
// another file in text format, then turns it off, and Envoy follows each
// without a restart or a rejected update.
func TestMeshAccessLogAndTracing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	dir := t.TempDir()
	jsonLog, textLog := filepath.Join(dir, "mesh.json.log"), filepath.Join(dir, "mesh.text.log")
	meshPolicy := func(accessLog string) string {
		return fmt.Sprintf("apiVersion: switchyard.io/v1\nkind: Mesh\naccessLog: %s\ntracing: { address: %s }\n", accessLog, lis.Addr())
	}
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy,
		"mesh.yaml": meshPolicy(fmt.Sprintf("{ path: %s, format: json }", jsonLog))}, Options{Mesh: true})

	apiSidecar, webSidecar, bind := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	registerWithSidecar(t, e, "api", "api-1", "http", startAPIApp(t, "api-1"), apiSidecar)
	registerWithSidecar(t, e, "web", "web-1", "http", testenv.FreePort(t), webSidecar,
		consulapi.Upstream{DestinationName: "api", LocalBindPort: bind})
	sidecars := []*testenv.Envoy{startSidecar(t, e, "api-1"), startSidecar(t, e, "web-1")}
	get := func(path string) error {
		code, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d%s", bind, path), nil)
		if err == nil && (code != http.StatusOK || !strings.HasPrefix(body, "api-1")) {
			err = fmt.Errorf("got %d %q", code, body)
		}
		return err
	}
	testenv.Eventually(t, 60*time.Second, "web reaches api through both sidecars", func() error { return get("/warm-up") })
	uptime := make([]int, len(sidecars))
	for i, s := range sidecars {
		if uptime[i], err = s.Stat("server.uptime"); err != nil {
			t.Fatal(err)
		}
	}

	if err := get("/orders/42"); err != nil {
		t.Fatal(err)
	}
	var web, api map[string]any
	testenv.Eventually(t, settle, "the request's JSON line from each sidecar", func() error {
		b, _ := os.ReadFile(jsonLog)
		web, api = nil, nil
		for _, m := range jsonLines(string(b), "/orders/42") {
			cluster, _ := m["upstream_cluster"].(string)
			switch {
			case strings.HasPrefix(cluster, "api.default.dc1.internal."):
				web = m
			case cluster == "local_app":
				api = m
			}
		}
		if web == nil || api == nil {
			return fmt.Errorf("web's line %v, api's line %v; file has %q", web, api, b)
		}
		return nil
	})
	for _, m := range []map[string]any{web, api} {
		if m["status"] != float64(200) || m["method"] != "GET" || m["response_flags"] != "-" {
			t.Errorf("line %v: want GET, status 200, no response flags", m)
		}
	}
	if id, _ := web["upstream_spiffe_id"].(string); !strings.HasSuffix(id, "/svc/api") || web["client_spiffe_id"] != nil {
		t.Errorf("web's sidecar logged upstream_spiffe_id %#v, client_spiffe_id %#v; want api's SPIFFE ID and null (its app speaks plain text)", web["upstream_spiffe_id"], web["client_spiffe_id"])
	}
	if id, _ := api["client_spiffe_id"].(string); !strings.HasSuffix(id, "/svc/web") || !strings.HasPrefix(id, "spiffe://") {
		t.Errorf("api's sidecar logged client_spiffe_id %#v; want web's SPIFFE ID", api["client_spiffe_id"])
	}
	if web["request_id"] == nil || web["request_id"] != api["request_id"] {
		t.Errorf("request_id at web's sidecar %#v, at api's %#v; want one ID, passed along", web["request_id"], api["request_id"])
	}

	// Tracing: a span from each sidecar, named after its service, in one
	// trace.
	testenv.Eventually(t, settle, "a span from each sidecar in one trace", func() error {
		traces := map[string]map[string]bool{} // trace ID -> services
		for _, s := range col.collected() {
			id := fmt.Sprintf("%x", s.span.GetTraceId())
			if traces[id] == nil {
				traces[id] = map[string]bool{}
			}
			traces[id][s.service] = true
		}
		for _, services := range traces {
			if services["web"] && services["api"] {
				return nil
			}
		}
		return fmt.Errorf("traces by service: %v", traces)
	})

	// To another file, in Envoy's text format: the JSON lines stop.
	e.WritePolicy("mesh.yaml", meshPolicy(fmt.Sprintf("{ path: %s, format: text }", textLog)))
	testenv.Eventually(t, settle, "both sidecars log to the text file", func() error {
		if err := get("/moved"); err != nil {
			return err
		}
		b, _ := os.ReadFile(textLog)
		if n := strings.Count(string(b), `"GET /moved HTTP/1.1" 200`); n < 2 {
			return fmt.Errorf("%d text lines for /moved; want one from each sidecar", n)
		}
		return nil
	})
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if err := get("/after-move"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, settle, "the later request in the text file", func() error {
		if b, _ := os.ReadFile(textLog); strings.Count(string(b), `"GET /after-move HTTP/1.1" 200`) < 2 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if b, _ := os.ReadFile(jsonLog); strings.Contains(string(b), "/after-move") {
		t.Errorf("a request after the move was still logged as JSON:\n%s", b)
	}

	// Off: no new lines anywhere.
	updates := make([]int, len(sidecars))
	for i, s := range sidecars {
		updates[i], _ = s.Stat("listener_manager.lds.update_success")
	}
	e.WritePolicy("mesh.yaml", meshPolicy("{ enabled: false }"))
	testenv.Eventually(t, settle, "both sidecars take the listeners without an access log", func() error {
		for i, s := range sidecars {
			if n, _ := s.Stat("listener_manager.lds.update_success"); n <= updates[i] {
				return fmt.Errorf("sidecar %d: %d listener updates", i, n)
			}
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the replaced listeners drain (1 s in tests)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if err := get("/unlogged"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // Envoy flushes access log files every second
	for _, f := range []string{jsonLog, textLog} {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "/unlogged") {
			t.Errorf("with the access log off, %s still got a line:\n%s", f, b)
		}
	}

	for i, s := range sidecars {
		for _, stat := range []string{"listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected"} {
			if n, err := s.Stat(stat); err != nil || n != 0 {
				t.Errorf("sidecar %d: %s = %d (%v); want 0", i, stat, n, err)
			}
		}
		if now, err := s.Stat("server.uptime"); err != nil || now < uptime[i] {
			t.Errorf("sidecar %d: uptime %d s, %d s before the edits (%v); want the same Envoy throughout", i, now, uptime[i], err)
		}
	}
}

// jsonLines are the JSON objects among out's lines whose path is path.
func jsonLines(out, path string) []map[string]any {
	var found []map[string]any
	for _, line := range strings.Split(out, "\n") {
		if m := findJSONLine(line, path); m != nil {
			found = append(found, m)
		}
	}
	return found
}

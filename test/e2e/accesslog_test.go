package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Every request through a proxy group's Envoy is logged: by default one
// JSON object per line on Envoy's standard output, with the request, the
// answer and where it went; a policy edit moves the log to a file in
// Envoy's text format, and the JSON lines stop.
func TestAccessLog(t *testing.T) {
	e := NewEnv(t, true, map[string]string{"edge.yaml": webPolicy})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	// An edge Envoy makes its own request ID: a client's X-Request-Id is
	// replaced, not trusted.
	code, body, err := e.Get("/orders/42?x=1", map[string]string{"X-Request-Id": "req-abc-123", "User-Agent": "switchyard-e2e"})
	if err != nil || code != 200 || body != web.ID {
		t.Fatalf("request: %d %q %v", code, body, err)
	}

	var entry map[string]any
	testenv.Eventually(t, settle, "the request's JSON line in envoy's standard output", func() error {
		entry = findJSONLine(e.Envoy.Output(), "/orders/42?x=1")
		if entry == nil {
			return fmt.Errorf("no JSON line with path /orders/42?x=1")
		}
		return nil
	})
	for key, want := range map[string]any{
		"method": "GET", "path": "/orders/42?x=1", "status": float64(200),
		"upstream_cluster": "web", "upstream_host": fmt.Sprintf("127.0.0.1:%d", web.Port),
		"user_agent": "switchyard-e2e", "route": "web", "protocol": "HTTP/1.1", "response_flags": "-",
	} {
		if entry[key] != want {
			t.Errorf("access log %s = %#v; want %#v (line %v)", key, entry[key], want, entry)
		}
	}
	if id, _ := entry["request_id"].(string); id == "" || id == "req-abc-123" {
		t.Errorf("access log request_id = %#v; want the ID Envoy generated, not the client's", entry["request_id"])
	}
	for _, key := range []string{"start_time", "duration_ms", "bytes_sent", "client_address"} {
		if entry[key] == nil {
			t.Errorf("access log has no %s: %v", key, entry)
		}
	}

	// To a file, in Envoy's text format.
	logFile := filepath.Join(t.TempDir(), "access.log")
	e.WritePolicy("edge.yaml", strings.Replace(webPolicy, "name: edge\n",
		fmt.Sprintf("name: edge\naccessLog: { path: %s, format: text }\n", logFile), 1))
	testenv.Eventually(t, settle, "requests logged to the file", func() error {
		if _, _, err := e.Get("/to-the-file", nil); err != nil {
			return err
		}
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"GET /to-the-file HTTP/1.1" 200`) {
			return fmt.Errorf("file has %q", b)
		}
		return nil
	})
	if _, _, err := e.Get("/after", nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, settle, "the later request in the file", func() error {
		if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), `"GET /after HTTP/1.1" 200`) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if findJSONLine(e.Envoy.Output(), "/after") != nil {
		t.Errorf("a request after the move to a file was still logged as JSON on standard output")
	}
	e.requireNoNACKs()
}

// findJSONLine is the JSON object among out's lines whose path is path.
func findJSONLine(out, path string) map[string]any {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["path"] == path {
			return m
		}
	}
	return nil
}

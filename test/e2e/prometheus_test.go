package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// An Envoy bootstrapped with --prometheus-address serves its stats in
// Prometheus format on that listener, named after the policy's clusters,
// and nothing else of its admin API.
func TestEnvoyPrometheusListener(t *testing.T) {
	prom := testenv.Addr(testenv.FreePort(t))
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{BootstrapArgs: []string{"--prometheus-address", prom}})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	for range 3 {
		if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web.ID {
			t.Fatalf("request: %d %q %v", code, body, err)
		}
	}
	testenv.Eventually(t, settle, "web's requests in the Prometheus stats", func() error {
		code, body, err := httpGet("http://"+prom+"/metrics", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET /metrics: %d", code)
		}
		for _, want := range []string{
			`envoy_cluster_upstream_rq_total{envoy_cluster_name="web"} 3`,
			`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="http"}`,
			"# TYPE envoy_server_live gauge",
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("no %q in /metrics", want)
			}
		}
		return nil
	})
	for _, path := range []string{"/clusters", "/config_dump", "/quitquitquit", "/stats"} {
		if code, _, err := httpGet("http://"+prom+path, nil); err != nil || code != http.StatusNotFound {
			t.Errorf("GET %s on the Prometheus listener: %d %v; want 404", path, code, err)
		}
	}
	resp, err := http.Post("http://"+prom+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /metrics on the Prometheus listener: %d; want 404", resp.StatusCode)
	}
	if _, err := e.Envoy.Admin("/ready"); err != nil {
		t.Errorf("envoy is not ready after the probes: %v", err)
	}
}

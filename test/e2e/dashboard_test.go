package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// Every query of the Grafana dashboard in examples/grafana names metrics
// that Switchyard and Envoy really export: both are scraped here, after
// some traffic, and each metric a panel uses must be among the names
// scraped (a histogram's _bucket, _sum and _count included).
func TestDashboardQueriesNameRealMetrics(t *testing.T) {
	prom := testenv.Addr(testenv.FreePort(t))
	e := NewEnvWith(t, true, map[string]string{"edge.yaml": webPolicy}, Options{BootstrapArgs: []string{"--prometheus-address", prom}})
	web := e.StartBackend("web", "web-1")
	e.WaitHosts("web", 1, 1)
	for range 5 {
		if code, body, err := e.Get("/", nil); err != nil || code != 200 || body != web.ID {
			t.Fatalf("request: %d %q %v", code, body, err)
		}
	}
	exported := map[string]bool{}
	for _, url := range []string{"http://" + e.AdminAddr + "/metrics", "http://" + prom + "/metrics"} {
		code, body, err := httpGet(url, nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("scrape %s: %d %v", url, code, err)
		}
		for _, line := range strings.Split(body, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, _, _ := strings.Cut(line, "{")
			name, _, _ = strings.Cut(name, " ")
			exported[name] = true
		}
	}

	b, err := os.ReadFile("../../examples/grafana/switchyard-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	// Metric names: what is left of a query without its label matchers,
	// its by/without clauses and its $variables.
	labels := regexp.MustCompile(`\{[^}]*\}|\b(?:by|without) *\([^)]*\)|\$\w+`)
	metric := regexp.MustCompile(`\b(?:switchyard|envoy)_[a-z0-9_]+`)
	used := map[string]bool{}
	queries := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			queries++
			for _, name := range metric.FindAllString(labels.ReplaceAllString(target.Expr, " "), -1) {
				used[name] = true
				if !exported[name] {
					t.Errorf("panel %q: %s is exported by neither Switchyard nor Envoy (query %s)", p.Title, name, target.Expr)
				}
			}
		}
	}
	if queries < 15 || len(used) < 15 {
		t.Errorf("the dashboard has %d queries over %d metrics; want the Switchyard and Envoy panels", queries, len(used))
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("the dashboard's %d queries use %d metrics: %s", queries, len(names), strings.Join(names, " "))
	if !strings.Contains(fmt.Sprint(names), "switchyard_") || !strings.Contains(fmt.Sprint(names), "envoy_") {
		t.Errorf("the dashboard uses %v; want both Switchyard's and Envoy's metrics", names)
	}
}

package e2e

import (
	"testing"
)

const subsetPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: by-meta
            match: { pathPrefix: /v2 }
            service: web
            meta: { version: "2" }
          - name: canary
            match: { pathPrefix: / }
            split:
              - { service: web, tags: [v2], weight: 10 }
              - { service: web, weight: 90 }
`

// A canary by Consul tag: the instances tagged v2 get 10% of the requests
// and the others 90%; a route by meta reaches only the instance with that
// meta; and retagging an instance in Consul moves it to the canary's
// share.
func TestSubsetCanaryByTag(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": subsetPolicy})
		web1 := e.StartBackend("web", "web-1")
		e.StartBackend("web", "web-2")
		web3 := e.StartBackend("web", "web-3")
		web3.Tags, web3.Meta = []string{"v2"}, map[string]string{"version": "2"}
		e.Register(web3)
		e.WaitHosts("web~tag=v2", 1, 1)
		e.WaitHosts("web~meta.version=2", 1, 1)

		if got := e.Tally(100, "/v2"); got["web-3"] != 100 {
			t.Fatalf("/v2 (meta version=2) answered %v over 100 requests; want web-3 only", got)
		}
		const n = 1000
		got := e.Tally(n, "/")
		assertShare(t, got, n, 10, "web-3")
		if got["web-1"] == 0 || got["web-2"] == 0 {
			t.Fatalf("the rest got %v; want both web-1 and web-2 to serve", got)
		}

		// Retagged, web-1 joins the canary: 10% for web-1 and web-3
		// together, 90% for web-2 alone.
		web1.Tags = []string{"v2"}
		e.Register(web1)
		e.WaitHosts("web~tag=v2", 2, 2)
		got = e.Tally(n, "/")
		assertShare(t, got, n, 10, "web-1", "web-3")
		assertShare(t, got, n, 90, "web-2")
		if got["web-1"] == 0 {
			t.Fatalf("after retagging, web-1 got no request (%v); want it in the canary's share", got)
		}
	})
}

// assertShare checks that every one of n requests was answered 200 and
// that the instances ids served pct% of them, give or take 4 points (at
// least 3.3 standard deviations of a binomial over 1,000 requests).
func assertShare(t *testing.T, got map[string]int, n int, pct float64, ids ...string) {
	t.Helper()
	total, sum := 0, 0
	for k, v := range got {
		if k == "web-1" || k == "web-2" || k == "web-3" {
			total += v
		}
	}
	for _, id := range ids {
		sum += got[id]
	}
	if total != n {
		t.Fatalf("got %v over %d requests; want every one answered by an instance", got, n)
	}
	if share := float64(sum) / float64(n) * 100; share < pct-4 || share > pct+4 {
		t.Fatalf("%v got %.1f%% of %d requests (%v); want %.0f%% +- 4", ids, share, n, got, pct)
	}
	t.Logf("%v: %d of %d requests (%v)", ids, sum, n, got)
}

package e2e

import (
	"net/http"
	"testing"
)

const retryListsPolicy = `apiVersion: switchyard.io/v1
kind: ProxyGroup
name: edge
listeners:
  - name: http
    address: 127.0.0.1
    port: {{port}}
    hosts:
      - domains: ["*"]
        routes:
          - name: codes
            match: { pathPrefix: /codes }
            service: flaky
            retries: { attempts: 2, statusCodes: [409], backoff: { base: 10ms, max: 50ms } }
          - name: headers
            match: { pathPrefix: /headers }
            service: flaky
            retries:
              attempts: 2
              on: [retriable-headers, reset-before-request]
              headers: [{ name: x-failing-on-purpose, exact: "true" }]
          - name: plain
            match: { pathPrefix: /plain }
            service: flaky
            retries: { attempts: 2, on: [5xx] }
`

// Retries on listed status codes and on listed response headers, with a
// backoff: a 409 is retried where a route lists it, or lists a header the
// answer carries, and not on a route that retries 5xx only.
func TestRetryStatusCodesAndHeaders(t *testing.T) {
	protocols(t, func(t *testing.T, delta bool) {
		e := NewEnv(t, delta, map[string]string{"edge.yaml": retryListsPolicy})
		b := e.StartBackend("flaky", "flaky-1")
		e.WaitHosts("flaky", 1, 1)
		e.WaitFor("flaky serves", settle, "/plain", nil, func(code int, _ string) bool { return code == http.StatusOK })
		e.requireNoNACKs()

		for _, path := range []string{"/codes", "/headers"} {
			b.FailNextWith(2, http.StatusConflict)
			before := b.Hits()
			code, body, err := e.Get(path, nil)
			if err != nil || code != http.StatusOK || body != "flaky-1" {
				t.Fatalf("%s after two 409s: got %d %q %v; want 200 flaky-1 on the third try", path, code, body, err)
			}
			if tries := b.Hits() - before; tries != 3 {
				t.Fatalf("%s: %d tries; want 3", path, tries)
			}
		}

		b.FailNextWith(1, http.StatusConflict)
		before := b.Hits()
		if code, _, err := e.Get("/plain", nil); err != nil || code != http.StatusConflict {
			t.Fatalf("/plain with a 409: got %d %v; want the 409, not retried", code, err)
		}
		if tries := b.Hits() - before; tries != 1 {
			t.Fatalf("/plain: %d tries; want 1", tries)
		}
	})
}

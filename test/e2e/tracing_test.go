package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// collector is a small OTLP/gRPC trace collector: it keeps every span it
// is sent, with its resource's service.name.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []collectedSpan
}

type collectedSpan struct {
	service string
	span    *tracepb.Span
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, collectedSpan{service, s})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) collected() []collectedSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]collectedSpan(nil), c.spans...)
}

// A proxy group with tracing sends a span per request to the collector,
// named after the group's serviceName, with the trace's ID the one Envoy
// passed upstream in traceparent.
func TestTracingToOpenTelemetryCollector(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	// An upstream that records the trace context Envoy sends.
	var mu sync.Mutex
	var traceparents []string
	appPort := testenv.FreePort(t)
	appLis, err := net.Listen("tcp", testenv.Addr(appPort))
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("Traceparent"))
		mu.Unlock()
		fmt.Fprint(w, "traced")
	})}
	go func() { _ = app.Serve(appLis) }()
	t.Cleanup(func() { app.Close() })

	policy := strings.Replace(webPolicy, "name: edge\n",
		fmt.Sprintf("name: edge\ntracing: { address: %s, sampling: 100, serviceName: shop-edge }\n", lis.Addr()), 1)
	e := NewEnv(t, true, map[string]string{"edge.yaml": policy})
	b := &Backend{ID: "traced-1", Service: "web", Address: "127.0.0.1", Port: appPort}
	e.Register(b)
	e.WaitHosts("web", 1, 1)
	for range 5 {
		if code, body, err := e.Get("/orders/7", nil); err != nil || code != 200 || body != "traced" {
			t.Fatalf("request: %d %q %v", code, body, err)
		}
	}
	var spans []collectedSpan
	testenv.Eventually(t, settle, "the requests' spans at the collector", func() error {
		spans = col.collected()
		if len(spans) < 5 {
			return fmt.Errorf("%d spans", len(spans))
		}
		return nil
	})
	mu.Lock()
	sent := append([]string(nil), traceparents...)
	mu.Unlock()
	ids := map[string]bool{}
	for _, tp := range sent {
		// traceparent: version-traceid-spanid-flags
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || len(parts[1]) != 32 {
			t.Fatalf("upstream got traceparent %q; want Envoy's W3C trace context", tp)
		}
		ids[parts[1]] = true
	}
	found := 0
	for _, s := range spans {
		if s.service != "shop-edge" {
			t.Errorf("span %q has service.name %q; want shop-edge", s.span.GetName(), s.service)
		}
		if ids[fmt.Sprintf("%x", s.span.GetTraceId())] {
			found++
		}
	}
	if found < 5 {
		t.Errorf("%d of %d spans carry a trace ID the upstream saw in traceparent (%d requests); want all 5 requests' spans", found, len(spans), len(sent))
	}
}

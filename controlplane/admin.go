package controlplane

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/internal/safefile"
)

// Admin HTTP server bounds: a slow or idle client cannot hold a
// connection (there are at most Limits.AdminMaxConnections) for long.
// (Variables so that tests can shorten them.)
var (
	adminReadTimeout = 10 * time.Second
	// adminWriteTimeout leaves room for /debug/pprof/profile's default 30s
	// CPU profile.
	adminWriteTimeout = 60 * time.Second
	adminIdleTimeout  = 60 * time.Second
)

const adminMaxHeader = 64 << 10

func (s *Server) newAdminServer() *http.Server {
	return &http.Server{
		Handler:           s.adminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    adminMaxHeader,
		// net/http's own complaints (a bad TLS handshake, a panicking
		// handler) go through the server's logger, not straight to stderr.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// readToken reads a bearer token file: its content, spaces trimmed. The
// error names the file, never its content.
func readToken(path string) ([]byte, error) {
	b, err := safefile.Read(path, safefile.FileLimit)
	if err != nil {
		return nil, err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

// requireToken lets a request through when it carries the admin bearer
// token ("Authorization: Bearer <token>"). Liveness and readiness stay
// open: probes carry no credentials and the answers reveal nothing.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.adminToken == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			next.ServeHTTP(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), s.adminToken) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
			http.Error(w, "unauthorized: this admin API needs the bearer token of admin.token-file", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopback reports whether addr is a loopback address.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// adminHandler serves the operator endpoints. It listens on loopback by
// default: /debug/config shows the whole config (private keys redacted).
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := s.notReadyReason(); reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/config", s.debugConfig)
	mux.HandleFunc("GET /debug/proxies", s.debugProxies)
	// Go's profiler, as in most Go infrastructure: CPU, heap, goroutines.
	// Not /debug/pprof/cmdline: the command line may hold --consul-token.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s.requireToken(mux)
}

func (s *Server) notReadyReason() string {
	ready, failing := s.pub.state()
	waiting := s.in.waiting()
	switch {
	case waiting != "":
		return waiting
	case ready:
		return ""
	case len(failing) > 0:
		return "every proxy group failed to build (a bug; the log says why): " + strings.Join(failing, ", ")
	default:
		return "building the first snapshot"
	}
}

// debugConfigResponse is /debug/config's JSON.
type debugConfigResponse struct {
	Group     string                       `json:"group"`
	Versions  map[string]string            `json:"versions"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

// debugConfig shows the xDS resources a group is served, as JSON, with
// private keys redacted: /debug/config?group=edge. Without a group it lists
// the groups.
func (s *Server) debugConfig(w http.ResponseWriter, r *http.Request) {
	group := r.URL.Query().Get("group")
	gs, names := s.pub.group(group)
	w.Header().Set("Content-Type", "application/json")
	if group == "" {
		_ = json.NewEncoder(w).Encode(map[string][]string{"groups": names})
		return
	}
	if gs == nil {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": fmt.Sprintf("no config for group %q", group), "groups": names})
		return
	}
	out := debugConfigResponse{Group: group, Versions: map[string]string{}, Resources: map[string][]json.RawMessage{}}
	for _, typ := range servedTypeURLs {
		if _, ok := gs.versions[typ]; !ok && len(gs.resources[typ]) == 0 {
			continue // the rate limit service's type in a group, or the reverse
		}
		label := typeLabel(typ)
		out.Versions[label] = gs.versions[typ]
		for _, res := range gs.resources[typ] {
			js, err := protojson.Marshal(envoy.Redacted(typ, res))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out.Resources[label] = append(out.Resources[label], js)
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// debugProxy is one connected Envoy in /debug/proxies.
type debugProxy struct {
	Node     string `json:"node"`
	Group    string `json:"group"`
	Protocol string `json:"protocol"`
	// EnvoyVersion is the release the Envoy reported, "" if none.
	EnvoyVersion string      `json:"envoyVersion,omitempty"`
	Since        time.Time   `json:"connectedSince"`
	Rejected     []rejection `json:"rejected,omitempty"`
	Rejecting    bool        `json:"rejecting"`
	// Types is, per xDS type URL the Envoy was sent, the version served
	// and the version it accepted; Behind lists (short names) the types
	// where they differ: a change not applied yet, or rejected.
	Types  map[string]typeState `json:"types,omitempty"`
	Behind []string             `json:"behind,omitempty"`
	// NoConfig: Switchyard serves this Envoy nothing (yet): its group is
	// in no policy, its sidecar is not built, or nothing was sent so far.
	NoConfig bool `json:"noConfig,omitempty"`
}

// typeState is one xDS type of one Envoy in /debug/proxies.
type typeState struct {
	Served string `json:"served"`
	Acked  string `json:"acked,omitempty"`
	InSync bool   `json:"inSync"`
}

// debugProxies lists the connected Envoys, sorted by group and node, with
// every NACK still in force: the type, Envoy's reason and the policy lines
// it points at. The answer to "is any Envoy not running my config?".
func (s *Server) debugProxies(w http.ResponseWriter, _ *http.Request) {
	out := s.px.list()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string][]debugProxy{"proxies": out})
}

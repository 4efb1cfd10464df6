package controlplane

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/switchyard-io/switchyard/envoy"
)

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
	return mux
}

func (s *Server) notReadyReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ready:
		return ""
	case s.consul == nil:
		return "waiting for the first full Consul sync"
	case s.policy == nil && s.pending != nil:
		return "waiting for Consul data for the services the policy routes to"
	case s.policy == nil:
		return "waiting for a valid policy set"
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
	s.mu.Lock()
	gs := s.groups[group]
	names := make([]string, 0, len(s.groups))
	for name := range s.groups {
		names = append(names, name)
	}
	s.mu.Unlock()
	sort.Strings(names)
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
	for _, typ := range envoy.Types {
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
	Node      string      `json:"node"`
	Group     string      `json:"group"`
	Protocol  string      `json:"protocol"`
	Since     time.Time   `json:"connectedSince"`
	Rejected  []rejection `json:"rejected,omitempty"`
	Rejecting bool        `json:"rejecting"`
}

// debugProxies lists the connected Envoys, sorted by group and node, with
// every NACK still in force: the type, Envoy's reason and the policy lines
// it points at. The answer to "is any Envoy not running my config?".
func (s *Server) debugProxies(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := make([]debugProxy, 0, len(s.streams))
	for _, st := range s.streams {
		p := debugProxy{Node: st.node.GetId(), Group: st.node.GetCluster(), Protocol: st.protocol,
			Since: st.since.UTC(), Rejecting: len(st.rejected) > 0}
		for _, r := range st.rejected {
			c := *r
			c.At, c.Resources = c.At.UTC(), slices.Clone(c.Resources)
			p.Rejected = append(p.Rejected, c)
		}
		sort.Slice(p.Rejected, func(i, j int) bool { return p.Rejected[i].Type < p.Rejected[j].Type })
		out = append(out, p)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Protocol < out[j].Protocol
	})
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string][]debugProxy{"proxies": out})
}

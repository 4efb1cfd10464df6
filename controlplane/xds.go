package controlplane

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/internal/redact"
	"github.com/switchyard-io/switchyard/policy"
)

// xDS connection limits that are not settings. An Envoy keeps one
// long-lived ADS stream per connection.
const (
	// keepaliveTime: ping a connection idle this long, and drop it when the
	// ping is not answered within keepaliveTimeout. Finds dead peers behind
	// NATs and load balancers that drop idle flows silently.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 5 * time.Second
	// keepaliveMinTime: a client pinging more often than this is told to
	// go away (Envoy's default keepalive is far slower), so a client cannot
	// make Switchyard answer pings in a loop.
	keepaliveMinTime = 15 * time.Second
	// maxRecvMsgSize bounds one request: a node and its metadata, the
	// names subscribed to and, on a NACK, Envoy's error text.
	maxRecvMsgSize = 4 << 20
)

// newGRPCServer serves ADS, state-of-the-world and delta, on one gRPC
// server, within Config.Limits.
func (s *Server) newGRPCServer(ctx context.Context) *grpc.Server {
	l := s.cfg.Limits
	params := keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}
	if l.XDSMaxConnectionAge > 0 {
		params.MaxConnectionAge = l.XDSMaxConnectionAge
		params.MaxConnectionAgeGrace = l.XDSMaxConnectionAgeGrace
	}
	opts := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(l.XDSMaxStreams),
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.KeepaliveParams(params),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
	if s.xdsTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.xdsTLS)))
	}
	gs := grpc.NewServer(opts...)
	xds := serverv3.NewServer(ctx, s.cache, s.callbacks())
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	return gs
}

// streamKey identifies an xDS stream. The state-of-the-world and delta
// servers number their streams independently, both from 1.
type streamKey struct {
	delta bool
	id    int64
}

// stream is what Switchyard remembers of one open xDS stream.
type stream struct {
	node     *corev3.Node
	protocol string // "sotw" or "delta"
	since    time.Time
	// sent is the version last sent per type URL (state of the world).
	sent map[string]string
	// lastNonce is the nonce of the latest response per type URL.
	lastNonce map[string]string
	// deltaSent remembers, per type URL, the resource names of the last
	// few delta responses, by nonce: a delta response carries only what
	// changed, so an ACK vouches for those resources alone.
	deltaSent map[string][]sentNames
	// rejected holds, per type URL, a NACK still in force (see ack).
	rejected map[string]*rejection
}

// sentNames is the resources (updated or removed) of one delta response.
type sentNames struct {
	nonce string
	names []string
}

// maxDeltaSent bounds deltaSent per type: Envoy answers each response
// before the next of its type is sent, so a few are plenty.
const maxDeltaSent = 16

// rejection is a NACK still in force: Envoy runs its previous config of
// that type (or, on delta, of the Resources named).
type rejection struct {
	Type      string    `json:"type"`
	Error     string    `json:"error"`
	Policy    string    `json:"policy,omitempty"`
	Resources []string  `json:"resources,omitempty"` // delta: the rejected resources not yet accepted since
	At        time.Time `json:"at"`
	nonce     string    // of the rejected response
}

// callbacks observe the xDS streams: connected proxies, pushes and NACKs.
// They run synchronously on the stream's goroutine, so they stay cheap.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.metrics.connectedProxies.WithLabelValues("sotw").Inc()
			s.streamOpened(ctx, streamKey{false, id})
			return nil
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.metrics.connectedProxies.WithLabelValues("sotw").Dec()
			s.streamClosed(streamKey{false, id}, node)
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.metrics.connectedProxies.WithLabelValues("delta").Inc()
			s.streamOpened(ctx, streamKey{true, id})
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, node *corev3.Node) {
			s.metrics.connectedProxies.WithLabelValues("delta").Dec()
			s.streamClosed(streamKey{true, id}, node)
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			key := streamKey{false, id}
			if err := s.checkRequest(key, req.GetNode(), req.GetTypeUrl()); err != nil {
				return err
			}
			if err := s.checkGroup(key, req.GetNode()); err != nil {
				return err
			}
			s.streamRequest(key, req.GetNode())
			if req.GetErrorDetail() != nil {
				s.nack(key, req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
				s.holdRejected(key, req)
			} else if req.GetResponseNonce() != "" {
				s.ack(key, req.GetTypeUrl(), req.GetResponseNonce())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			key := streamKey{true, id}
			if err := s.checkRequest(key, req.GetNode(), req.GetTypeUrl()); err != nil {
				return err
			}
			if err := s.checkGroup(key, req.GetNode()); err != nil {
				return err
			}
			s.streamRequest(key, req.GetNode())
			if req.GetErrorDetail() != nil {
				s.nack(key, req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail().GetMessage())
			} else if req.GetResponseNonce() != "" {
				s.ack(key, req.GetTypeUrl(), req.GetResponseNonce())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
			s.mu.Lock()
			if st := s.streams[streamKey{false, id}]; st != nil {
				st.sent[resp.GetTypeUrl()] = resp.GetVersionInfo()
				st.lastNonce[resp.GetTypeUrl()] = resp.GetNonce()
			}
			s.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
			names := slices.Clone(resp.GetRemovedResources())
			for _, r := range resp.GetResources() {
				names = append(names, r.GetName())
			}
			s.mu.Lock()
			if st := s.streams[streamKey{true, id}]; st != nil {
				typ := resp.GetTypeUrl()
				st.lastNonce[typ] = resp.GetNonce()
				sent := append(st.deltaSent[typ], sentNames{nonce: resp.GetNonce(), names: names})
				st.deltaSent[typ] = sent[max(0, len(sent)-maxDeltaSent):]
			}
			s.mu.Unlock()
		},
	}
}

// holdRejected stops a state-of-the-world NACK from turning into a push
// loop. After a NACK Envoy asks again with the version it last accepted;
// the snapshot cache sees a version that differs from the current one and
// answers at once with the rejected config, which Envoy rejects again, as
// fast as the two can talk (thousands of NACKs a second). Rewriting the
// request to claim the rejected version makes the cache wait for the next
// real change instead; the NACK itself is logged and counted. (Delta xDS
// tracks versions per resource and does not loop.) The server passes this
// same request to the cache after the callback returns.
func (s *Server) holdRejected(key streamKey, req *discoveryv3.DiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[key]; st != nil {
		if v, ok := st.sent[req.GetTypeUrl()]; ok {
			req.VersionInfo = v
		}
	}
}

// streamRequest logs each stream's Envoy when it first speaks and warns
// about Envoys whose group no policy defines: they would otherwise wait
// silently. Only a stream's first request is sure to carry the node (delta
// Envoys send it once), so the stream remembers it.
func (s *Server) streamRequest(key streamKey, node *corev3.Node) {
	s.mu.Lock()
	if _, ok := s.streams[key]; ok {
		s.mu.Unlock()
		return
	}
	protocol := "sotw"
	if key.delta {
		protocol = "delta"
	}
	// Only what Switchyard needs of the node: a client may send megabytes
	// of metadata, which must not live as long as the stream.
	node = &corev3.Node{Id: truncate(node.GetId(), maxNodeID), Cluster: node.GetCluster()}
	s.groupStreams[node.GetCluster()]++
	delete(s.lastLeft, node.GetCluster())
	s.streams[key] = &stream{node: node, protocol: protocol, since: time.Now(),
		sent: map[string]string{}, lastNonce: map[string]string{},
		deltaSent: map[string][]sentNames{}, rejected: map[string]*rejection{}}
	ready := s.ready
	_, hasGroup := s.groups[node.GetCluster()]
	retained := s.retained[node.GetCluster()]
	s.mu.Unlock()
	s.log.Info("envoy connected", "node", node.GetId(), "group", node.GetCluster(), "protocol", protocol)
	switch {
	case retained:
		s.log.Warn("envoy asks for a proxy group removed from policy that other Envoys still use; it gets the group's last listeners and routes, with endpoints following Consul",
			"node", node.GetId(), "group", node.GetCluster())
	case ready && !hasGroup:
		s.log.Warn("envoy asks for a proxy group no policy defines; it gets no config until one does",
			"node", node.GetId(), "group", node.GetCluster())
	}
}

// maxNodeID bounds the node id Switchyard keeps and logs: it only names
// the Envoy to an operator.
const maxNodeID = 128

// checkRequest refuses, ending the stream, a request that would make
// Switchyard (or the snapshot cache behind it) keep state for something it
// can never serve: a type it does not serve, a node.cluster that no policy
// could define, or a stream that changes its node.cluster (the cache files
// each request's watch under the cluster it names, so a stream switching
// between made-up names would leave state under every one of them).
func (s *Server) checkRequest(key streamKey, node *corev3.Node, typeURL string) error {
	if _, ok := typeLabels[typeURL]; !ok {
		return s.refuse("type", node, codes.InvalidArgument,
			"type %q is not served by Switchyard (it serves %s)", truncate(typeURL, 128), servedTypes)
	}
	if node == nil {
		return nil
	}
	group := node.GetCluster()
	s.mu.Lock()
	st := s.streams[key]
	s.mu.Unlock()
	switch {
	case st != nil && st.node.GetCluster() != group:
		return s.refuse("node", node, codes.InvalidArgument,
			"node.cluster changed on one stream from %q to %q; open a new stream for another proxy group", st.node.GetCluster(), truncate(group, 128))
	case st == nil && !policy.ValidName(group):
		return s.refuse("node", node, codes.InvalidArgument,
			"node.cluster %q cannot name a proxy group (a DNS label: lowercase letters, digits and '-', at most 63 characters); start Envoy with a bootstrap from 'switchyard bootstrap --group NAME'", truncate(group, 128))
	}
	return nil
}

// servedTypes lists the type URLs Switchyard serves, for error messages.
var servedTypes = strings.Join(envoy.Types, ", ")

// refuse counts and logs a refused request and returns its gRPC error.
func (s *Server) refuse(reason string, node *corev3.Node, code codes.Code, format string, args ...any) error {
	s.metrics.refusedStreams.WithLabelValues(reason).Inc()
	msg := fmt.Sprintf(format, args...)
	s.log.Warn("refused an xDS request", "reason", msg, "node", truncate(node.GetId(), maxNodeID))
	return status.Error(code, msg)
}

// streamOpened remembers the names a stream's client certificate vouches
// for, when groups are bound to certificates.
func (s *Server) streamOpened(ctx context.Context, key streamKey) {
	if !s.cfg.XDSTLS.BindGroups {
		return
	}
	names := certNames(ctx)
	s.mu.Lock()
	s.certNames[key] = names
	s.mu.Unlock()
}

// checkGroup refuses a request for a proxy group the stream's client
// certificate does not name, when groups are bound to certificates. Every
// request that carries a node is checked: a state-of-the-world client may
// name another node on a later request.
func (s *Server) checkGroup(key streamKey, node *corev3.Node) error {
	if !s.cfg.XDSTLS.BindGroups || node == nil {
		return nil
	}
	s.mu.Lock()
	names := s.certNames[key]
	s.mu.Unlock()
	if slices.Contains(names, node.GetCluster()) {
		return nil
	}
	return s.refuse("certificate", node, codes.PermissionDenied,
		"the client certificate does not name proxy group %q (it names %s)", node.GetCluster(), strings.Join(names, ", "))
}

func (s *Server) streamClosed(key streamKey, node *corev3.Node) {
	s.mu.Lock()
	st := s.streams[key]
	delete(s.streams, key)
	delete(s.certNames, key)
	if st == nil { // it never sent a request Switchyard accepted
		s.mu.Unlock()
		return
	}
	group := st.node.GetCluster()
	if s.groupStreams[group]--; s.groupStreams[group] <= 0 {
		delete(s.groupStreams, group)
	}
	last := s.groupStreams[group] == 0
	if last && (s.retained[group] || s.groups[group] != nil) {
		// The last Envoy of a served group left: should the group leave
		// the policy, it stays for retainLinger in case one comes back.
		s.lastLeft[group] = time.Now()
		if s.retained[group] {
			// Already removed: unless an Envoy comes back, the rebuild
			// after the linger withdraws it.
			time.AfterFunc(s.retainLinger, func() { notify(s.changed) })
		}
	}
	s.countRejecting()
	unknown := last && s.groups[group] == nil && !s.retained[group]
	s.mu.Unlock()
	s.log.Info("envoy disconnected", "node", st.node.GetId(), "group", group)
	if unknown {
		s.forgetUnknownGroup(group)
	}
}

// forgetUnknownGroup drops what the snapshot cache keeps for a group no
// policy defines (its node and watch bookkeeping) once its last stream has
// closed. Without it every node.cluster a client sends would cost memory
// for as long as Switchyard runs. Under publishMu, so a rebuild cannot
// publish the group between the check and the clearing, and under mu, so
// no new stream of the group registers (streamRequest) in between.
func (s *Server) forgetUnknownGroup(group string) {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[group] != nil || s.retained[group] || s.groupStreams[group] > 0 {
		return
	}
	s.cache.ClearSnapshot(group)
}

// maxNACKDetail bounds how much of Envoy's error text a NACK keeps, in
// /debug/proxies and in the log: an error can be megabytes (it may quote a
// whole resource), and a client can send as many NACKs as it likes.
const maxNACKDetail = 2048

// nack logs a rejected config with Envoy's own reason. The previous config
// stays in force on that Envoy. Tracing the NACK to policy lines scans the
// error text for resource names, so it runs outside s.mu: a big NACK must
// not hold up Consul updates or other streams.
func (s *Server) nack(key streamKey, typeURL, nonce, version, detail string) {
	label := typeLabel(typeURL)
	s.metrics.nacks.WithLabelValues(label).Inc()
	detail = redact.PEMKeys(truncate(strings.TrimSpace(detail), maxNACKDetail))

	s.mu.Lock()
	var (
		node    *corev3.Node
		sources map[string]string // immutable, like the groupSnapshot holding it
		sent    []sentNames
	)
	st := s.streams[key]
	if st != nil {
		node = st.node
		sent = slices.Clone(st.deltaSent[typeURL]) // entries are never changed, only dropped
	}
	if gs := s.groups[node.GetCluster()]; gs != nil {
		sources = gs.sources[typeURL]
	}
	s.mu.Unlock()

	policy := rejectedSources(sources, detail)
	if st != nil && label != otherType {
		r := &rejection{Type: label, Error: detail, Policy: policy, At: time.Now(), nonce: nonce}
		if key.delta {
			r.Resources = deltaRejected(sent, nonce, detail)
		}
		s.mu.Lock()
		if s.streams[key] == st { // still open
			st.rejected[typeURL] = r
			s.countRejecting()
		}
		s.mu.Unlock()
	}
	attrs := []any{"node", node.GetId(), "group", node.GetCluster(), "type", label,
		"nonce", truncate(nonce, 64), "accepted_version", truncate(version, 64), "error", detail}
	if policy != "" {
		attrs = append(attrs, "policy", policy)
	}
	s.log.Error("envoy rejected config (NACK); it keeps its previous config", attrs...)
}

// truncate cuts s to at most n bytes (on a rune boundary), saying how much
// was cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... [%d bytes cut]", len(s)-cut)
}

// deltaRejected lists what a delta NACK rejected: the resources of the
// rejected response (found by nonce in sent) that Envoy's error names, or
// all of them when it names none (nil when the response is no longer
// remembered).
func deltaRejected(sent []sentNames, nonce, detail string) []string {
	for _, sent := range sent {
		if sent.nonce != nonce {
			continue
		}
		var named []string
		for _, n := range sent.names {
			if containsWord(detail, n) {
				named = append(named, n)
			}
		}
		if len(named) == 0 {
			named = slices.Clone(sent.names)
		}
		slices.Sort(named)
		return named
	}
	return nil
}

// ack records Envoy accepting the response with nonce, and ends a NACK of
// that type once Envoy has accepted what it rejected:
//   - state of the world: a later response, which is the type's whole
//     config, accepted. A request that still names the rejected response
//     (Envoy changing its subscriptions after the NACK) is no acceptance.
//   - delta: later responses, accepted, that carried every rejected
//     resource again (changed, or removed). One that carried others only
//     leaves the rejected ones in force.
func (s *Server) ack(key streamKey, typeURL, nonce string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil {
		return
	}
	r, ok := st.rejected[typeURL]
	if !ok || nonce == r.nonce {
		return
	}
	// (A delta NACK whose response is no longer remembered has no
	// Resources: like state of the world, a later acceptance ends it.)
	if key.delta && r.Resources != nil {
		for _, sent := range st.deltaSent[typeURL] {
			if sent.nonce == nonce {
				r.Resources = slices.DeleteFunc(r.Resources, func(n string) bool { return slices.Contains(sent.names, n) })
			}
		}
		if len(r.Resources) > 0 {
			return
		}
	} else if !key.delta && nonce != st.lastNonce[typeURL] {
		return // an older response's ACK, arriving late
	}
	delete(st.rejected, typeURL)
	s.countRejecting()
	s.log.Info("envoy accepted config again after a NACK", "node", st.node.GetId(),
		"group", st.node.GetCluster(), "type", r.Type)
}

// countRejecting updates the gauge of Envoys running with rejected config.
// Called with s.mu held.
func (s *Server) countRejecting() {
	n := 0
	for _, st := range s.streams {
		if len(st.rejected) > 0 {
			n++
		}
	}
	s.metrics.rejectingProxies.Set(float64(n))
}

// rejectedSources names the policy lines behind a NACK: the resources of
// the rejected type whose names appear in Envoy's error as whole words, as
// "file:line (name)", joined by "; ". When none is named and the type has
// one resource only, it is that one. "" when nothing is known.
func rejectedSources(sources map[string]string, detail string) string {
	var hits []string
	for name, src := range sources {
		if containsWord(detail, name) {
			hits = append(hits, src+" ("+name+")")
		}
	}
	if len(hits) == 0 && len(sources) == 1 {
		for name, src := range sources {
			hits = append(hits, src+" ("+name+")")
		}
	}
	sort.Strings(hits)
	return strings.Join(hits, "; ")
}

// containsWord reports whether word occurs in s not as part of a longer
// name: "web" is in "cluster 'web': ..." but not in "web-canary".
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		if (start == 0 || !nameChar(s[start-1])) && wordEnds(s, end) {
			return true
		}
		i = start + 1
	}
}

// wordEnds reports whether a name ending at s[end] ends there: a dot ends
// it only when it ends a sentence ("... listener public.").
func wordEnds(s string, end int) bool {
	if end < len(s) && s[end] == '.' {
		end++
		return end == len(s) || !nameChar(s[end])
	}
	return end == len(s) || !nameChar(s[end])
}

func nameChar(c byte) bool {
	return c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// otherType is the label of every type URL Switchyard does not serve. A
// client chooses the type URLs it sends; only known ones become metric
// labels or stream state, so a client cannot grow either without bound.
const otherType = "other"

// typeLabels maps the type URLs Switchyard serves to their short names
// ("Cluster").
var typeLabels = func() map[string]string {
	m := make(map[string]string, len(envoy.Types))
	for _, typ := range envoy.Types {
		m[typ] = typ[strings.LastIndexByte(typ, '.')+1:]
	}
	return m
}()

// typeLabel shortens a type URL to the resource's name ("Cluster"), or
// "other" for a type Switchyard does not serve.
func typeLabel(typeURL string) string {
	if l, ok := typeLabels[typeURL]; ok {
		return l
	}
	return otherType
}

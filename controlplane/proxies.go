package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/internal/redact"
	"github.com/switchyard-io/switchyard/policy"
)

// proxies tracks the xDS streams: which Envoys are connected and for which
// group, what each was sent, what each rejected. It refuses requests that
// would make Switchyard keep state for what it can never serve. Its
// callbacks run on the streams' goroutines; its lock is never held while
// it asks publishing anything (publishing may take its lock while holding
// its own: the order is publishing, then proxies).
type proxies struct {
	log        *slog.Logger
	metrics    *metrics
	pub        groupView
	changed    chan<- struct{} // asks for a rebuild
	bindGroups bool            // XDSTLS.BindGroups
	linger     time.Duration   // see inUse

	mu      sync.Mutex
	streams map[streamKey]*stream // open streams that sent an accepted request
	// certNames is what each stream's client certificate names (bindGroups).
	certNames map[streamKey][]string
	// groupStreams counts each group's streams; lastLeft is when the last
	// stream of a served group closed, while it has none (see inUse).
	groupStreams map[string]int
	lastLeft     map[string]time.Time
}

// groupView is what stream tracking asks of publishing.
type groupView interface {
	// groupState says whether a group is served (published, or retained
	// after leaving the policy), whether it is retained, and whether the
	// first build is done.
	groupState(group string) (served, retained, ready bool)
	// sources maps a group's resources of one type to their policy lines.
	sources(group, typeURL string) map[string]string
	// forgetUnknown drops what the snapshot cache keeps for a group that
	// is not served, if it still has no stream.
	forgetUnknown(group string)
	// servedVersions is, per type URL, the version a group (or sidecar)
	// is served and when the input change behind it arrived.
	servedVersions(group string) map[string]servedVersion
}

// servedVersion is a type's published version and when the change that
// produced it arrived.
type servedVersion struct {
	version   string
	changedAt time.Time
}

// retainLinger is how long a group removed from the policy stays served
// after its last Envoy disconnected, in case it reconnects.
const retainLinger = 2 * time.Minute

func newProxies(log *slog.Logger, m *metrics, pub groupView, changed chan<- struct{}, bindGroups bool) *proxies {
	return &proxies{log: log, metrics: m, pub: pub, changed: changed, bindGroups: bindGroups, linger: retainLinger,
		streams: map[streamKey]*stream{}, certNames: map[streamKey][]string{},
		groupStreams: map[string]int{}, lastLeft: map[string]time.Time{}}
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
	key      string // what it is served: proxyKey(node)
	protocol string // "sotw" or "delta"
	since    time.Time
	version  string // the Envoy release it reported, "" if none
	// acked is, per type URL, the version of the last response the Envoy
	// accepted; observed, the last version whose convergence was measured.
	acked, observed map[string]string
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
	nonce   string
	names   []string
	version string // the type's version the response brings the stream to
}

// maxDeltaSent bounds deltaSent per type: Envoy answers each response
// before the next of its type is sent, so a few are plenty.
const maxDeltaSent = 16

// dropAnswered forgets the delta responses of typeURL up to the one with
// nonce, which the Envoy just answered (ACK or NACK): it answers them in
// order, so those will not be answered again, and a first response's
// names (every resource of the type) would otherwise stay with the
// stream until more responses pushed them out: about 35 KB a stream at
// a thousand services. Called with x.mu held.
func (st *stream) dropAnswered(typeURL, nonce string) {
	sent := st.deltaSent[typeURL]
	for i, s := range sent {
		if s.nonce != nonce {
			continue
		}
		if rest := sent[i+1:]; len(rest) > 0 {
			st.deltaSent[typeURL] = slices.Clone(rest)
		} else {
			delete(st.deltaSent, typeURL)
		}
		return
	}
}

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
func (x *proxies) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			x.metrics.connectedProxies.WithLabelValues("sotw").Inc()
			x.streamOpened(ctx, streamKey{false, id})
			return nil
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			x.metrics.connectedProxies.WithLabelValues("sotw").Dec()
			x.streamClosed(streamKey{false, id})
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			x.metrics.connectedProxies.WithLabelValues("delta").Inc()
			x.streamOpened(ctx, streamKey{true, id})
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			x.metrics.connectedProxies.WithLabelValues("delta").Dec()
			x.streamClosed(streamKey{true, id})
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			key := streamKey{false, id}
			return x.request(key, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail(),
				func() { x.holdRejected(key, req) })
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			return x.request(streamKey{true, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail(), nil)
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			x.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
			x.mu.Lock()
			if st := x.streams[streamKey{false, id}]; st != nil {
				st.sent[resp.GetTypeUrl()] = resp.GetVersionInfo()
				st.lastNonce[resp.GetTypeUrl()] = resp.GetNonce()
			}
			x.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			x.metrics.pushes.WithLabelValues(typeLabel(resp.GetTypeUrl())).Inc()
			names := slices.Clone(resp.GetRemovedResources())
			for _, r := range resp.GetResources() {
				names = append(names, r.GetName())
			}
			x.mu.Lock()
			if st := x.streams[streamKey{true, id}]; st != nil {
				typ := resp.GetTypeUrl()
				st.lastNonce[typ] = resp.GetNonce()
				sent := append(st.deltaSent[typ], sentNames{nonce: resp.GetNonce(), names: names, version: resp.GetSystemVersionInfo()})
				st.deltaSent[typ] = sent[max(0, len(sent)-maxDeltaSent):]
			}
			x.mu.Unlock()
		},
	}
}

// request handles one request of either protocol: it checks it (an error
// ends the stream), registers the stream on its first request, and records
// an ACK or a NACK (afterNACK, when set, runs after a NACK is recorded).
func (x *proxies) request(key streamKey, node *corev3.Node, typeURL, nonce, version string, errDetail *statuspb.Status, afterNACK func()) error {
	if err := x.checkRequest(key, node, typeURL); err != nil {
		return err
	}
	if err := x.checkGroup(key, node); err != nil {
		return err
	}
	x.streamRequest(key, node)
	switch {
	case errDetail != nil:
		x.nack(key, typeURL, nonce, version, errDetail.GetMessage())
		if afterNACK != nil {
			afterNACK()
		}
	case nonce != "":
		x.ack(key, typeURL, nonce)
	}
	return nil
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
func (x *proxies) holdRejected(key streamKey, req *discoveryv3.DiscoveryRequest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if st := x.streams[key]; st != nil {
		if v, ok := st.sent[req.GetTypeUrl()]; ok {
			req.VersionInfo = v
		}
	}
}

// streamRequest logs each stream's Envoy when it first speaks and warns
// about Envoys whose group no policy defines: they would otherwise wait
// silently. Only a stream's first request is sure to carry the node (delta
// Envoys send it once), so the stream remembers it.
func (x *proxies) streamRequest(key streamKey, node *corev3.Node) {
	x.mu.Lock()
	if _, ok := x.streams[key]; ok {
		x.mu.Unlock()
		return
	}
	protocol := "sotw"
	if key.delta {
		protocol = "delta"
	}
	// Only what Switchyard needs of the node: a client may send megabytes
	// of metadata, which must not live as long as the stream.
	reported := node.GetUserAgentBuildVersion()
	version := envoyVersion(node)
	node = &corev3.Node{Id: truncate(node.GetId(), maxNodeID), Cluster: node.GetCluster()}
	served := proxyKey(node)
	x.groupStreams[served]++
	delete(x.lastLeft, served)
	x.streams[key] = &stream{node: node, key: served, protocol: protocol, since: time.Now(), version: version,
		sent: map[string]string{}, lastNonce: map[string]string{}, acked: map[string]string{}, observed: map[string]string{},
		deltaSent: map[string][]sentNames{}, rejected: map[string]*rejection{}}
	x.mu.Unlock()
	known, retained, ready := x.pub.groupState(served)
	if served == rateLimitKey {
		x.log.Info("rate limit service connected", "node", node.GetId(), "protocol", protocol)
		return
	}
	x.log.Info("envoy connected", "node", node.GetId(), "group", node.GetCluster(), "protocol", protocol, "envoy_version", version)
	if v := reported.GetVersion(); v != nil && !envoy.EnvoySupported(v.GetMajorNumber(), v.GetMinorNumber()) {
		x.log.Warn("envoy version outside the supported range; its config may be refused or behave differently",
			"node", node.GetId(), "envoy_version", version, "supported", envoy.SupportedEnvoys)
	}
	switch {
	case retained:
		x.log.Warn("envoy asks for a proxy group removed from policy that other Envoys still use; it gets the group's last listeners and routes, with endpoints following Consul",
			"node", node.GetId(), "group", node.GetCluster())
	case !known && node.GetCluster() == envoy.SidecarNodeCluster:
		x.log.Warn("envoy asks for a sidecar's config that Switchyard has not built (is the mesh on, is the proxy registered in Consul, does its service have a leaf certificate yet?); it gets config once there is one",
			"node", node.GetId())
	case ready && !known:
		x.log.Warn("envoy asks for a proxy group no policy defines; it gets no config until one does",
			"node", node.GetId(), "group", node.GetCluster())
	}
}

// maxNodeID bounds the node id Switchyard keeps and logs: it only names
// the Envoy to an operator.
const maxNodeID = 128

// envoyVersion is the release an Envoy reports in its node
// (user_agent_build_version), such as "1.40.0", or "" when it reports none
// (a client that is not Envoy).
func envoyVersion(node *corev3.Node) string {
	v := node.GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch())
}

// checkRequest refuses, ending the stream, a request that would make
// Switchyard (or the snapshot cache behind it) keep state for something it
// can never serve: a type it does not serve, a node.cluster that no policy
// could define, or a stream that changes its node.cluster (the cache files
// each request's watch under the cluster it names, so a stream switching
// between made-up names would leave state under every one of them).
func (x *proxies) checkRequest(key streamKey, node *corev3.Node, typeURL string) error {
	if _, ok := typeLabels[typeURL]; !ok {
		return x.refuse("type", node, codes.InvalidArgument,
			"type %q is not served by Switchyard (it serves %s)", truncate(typeURL, 128), servedTypes)
	}
	if node == nil {
		return nil
	}
	group := node.GetCluster()
	x.mu.Lock()
	st := x.streams[key]
	x.mu.Unlock()
	sidecar := group == envoy.SidecarNodeCluster
	rls := typeURL == resource.RateLimitConfigType
	switch {
	case rls && !isRateLimitService(group):
		return x.refuse("type", node, codes.InvalidArgument,
			"type %s is the rate limit service's, which sends no node.cluster; node.cluster %q is an Envoy's", typeURL, truncate(group, 128))
	case !rls && isRateLimitService(group):
		return x.refuse("node", node, codes.InvalidArgument,
			"no node.cluster: only the rate limit service (which asks for %s) sends none; start Envoy with a bootstrap from 'switchyard bootstrap --group NAME'", resource.RateLimitConfigType)
	case st != nil && st.node.GetCluster() != group:
		return x.refuse("node", node, codes.InvalidArgument,
			"node.cluster changed on one stream from %q to %q; open a new stream for another proxy group", st.node.GetCluster(), truncate(group, 128))
	case st != nil && sidecar && st.node.GetId() != node.GetId():
		return x.refuse("node", node, codes.InvalidArgument,
			"node.id changed on one sidecar's stream from %q to %q", st.node.GetId(), truncate(node.GetId(), maxNodeID))
	case st == nil && sidecar && !validProxyID(node.GetId()):
		return x.refuse("node", node, codes.InvalidArgument,
			"node.id %q cannot be a sidecar's proxy service ID (1 to %d letters, digits, '-', '_' and '.'); start Envoy with a bootstrap from 'switchyard bootstrap --sidecar-for SERVICE_ID'", truncate(node.GetId(), maxNodeID), maxNodeID)
	case st == nil && !sidecar && !rls && !policy.ValidName(group):
		return x.refuse("node", node, codes.InvalidArgument,
			"node.cluster %q cannot name a proxy group (a DNS label: lowercase letters, digits and '-', at most 63 characters); start Envoy with a bootstrap from 'switchyard bootstrap --group NAME'", truncate(group, 128))
	}
	return nil
}

// SidecarCertName is the name (a DNS SAN or the common name) a sidecar's
// xDS client certificate must carry when groups are bound to certificates:
// sidecar.<proxy service ID>. A group name has no dot, so a certificate for
// a group never vouches for a sidecar, nor one sidecar's for another.
func SidecarCertName(proxyID string) string { return "sidecar." + proxyID }

// validProxyID reports whether id can be a Consul proxy service ID as
// Switchyard serves it: bounded, and no character that could confuse a
// log line or a cache key.
func validProxyID(id string) bool {
	if id == "" || len(id) > maxNodeID {
		return false
	}
	for _, c := range []byte(id) {
		if !nameChar(c) {
			return false
		}
	}
	return true
}

// servedTypes lists the type URLs Switchyard serves, for error messages.
var servedTypes = strings.Join(servedTypeURLs, ", ")

// refuse counts and logs a refused request and returns its gRPC error.
func (x *proxies) refuse(reason string, node *corev3.Node, code codes.Code, format string, args ...any) error {
	x.metrics.refusedStreams.WithLabelValues(reason).Inc()
	msg := fmt.Sprintf(format, args...)
	x.log.Warn("refused an xDS request", "reason", msg, "node", truncate(node.GetId(), maxNodeID))
	return status.Error(code, msg)
}

// streamOpened remembers the names a stream's client certificate vouches
// for, when groups are bound to certificates.
func (x *proxies) streamOpened(ctx context.Context, key streamKey) {
	if !x.bindGroups {
		return
	}
	names := certNames(ctx)
	x.mu.Lock()
	x.certNames[key] = names
	x.mu.Unlock()
}

// checkGroup refuses a request for a proxy group the stream's client
// certificate does not name, when groups are bound to certificates. Every
// request that carries a node is checked: a state-of-the-world client may
// name another node on a later request.
func (x *proxies) checkGroup(key streamKey, node *corev3.Node) error {
	if !x.bindGroups || node == nil {
		return nil
	}
	x.mu.Lock()
	names := x.certNames[key]
	x.mu.Unlock()
	// A group's Envoys are vouched for by the group's name; a sidecar by
	// its proxy ID: one sidecar cannot ask for another's identity.
	want, what := node.GetCluster(), "proxy group"
	switch {
	case want == envoy.SidecarNodeCluster:
		want, what = SidecarCertName(node.GetId()), "sidecar"
	case isRateLimitService(want):
		want, what = RateLimitCertName, "the rate limit service"
	}
	if slices.Contains(names, want) {
		return nil
	}
	return x.refuse("certificate", node, codes.PermissionDenied,
		"the client certificate does not name %s %q (it names %s)", what, truncate(want, maxNodeID), strings.Join(names, ", "))
}

func (x *proxies) streamClosed(key streamKey) {
	x.mu.Lock()
	st := x.streams[key]
	delete(x.streams, key)
	delete(x.certNames, key)
	if st == nil { // it never sent a request Switchyard accepted
		x.mu.Unlock()
		return
	}
	group := st.key
	if x.groupStreams[group]--; x.groupStreams[group] <= 0 {
		delete(x.groupStreams, group)
	}
	last := x.groupStreams[group] == 0
	if last {
		// Should the group leave the policy (or the sidecar Consul), it
		// stays for the linger in case an Envoy comes back (see inUse).
		// Set with the count, so a withdrawal never sees neither.
		x.lastLeft[group] = time.Now()
	}
	x.countRejecting()
	x.mu.Unlock()
	x.log.Info("envoy disconnected", "node", st.node.GetId(), "group", group)
	if !last {
		return
	}
	served, retained, _ := x.pub.groupState(group)
	switch {
	case !served:
		// Not served: forget what the cache keeps for it.
		x.pub.forgetUnknown(group)
	case retained || strings.HasPrefix(group, "sidecar:"):
		// Removed from the policy, or a sidecar Consul may have dropped:
		// unless an Envoy comes back, the rebuild after the linger
		// withdraws it.
		time.AfterFunc(x.linger, func() { notify(x.changed) })
	}
}

// inUse reports whether Envoys use a group: one has a stream open, or the
// last one left less than the linger ago (an Envoy reconnecting after
// xds.max-connection-age, a Switchyard replica going away or a network
// blip, comes back within a second or two and must find its group).
func (x *proxies) inUse(group string) (bool, int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if n := x.groupStreams[group]; n > 0 {
		return true, n
	}
	left, ok := x.lastLeft[group]
	return ok && time.Since(left) < x.linger, 0
}

// forgetLocked drops a group's linger record (it was withdrawn). Called
// with x.mu held (inside whileIdle).
func (x *proxies) forgetLocked(group string) {
	delete(x.lastLeft, group)
}

// whileIdle runs fn while no stream of group is registered, holding x.mu
// so that none registers (streamRequest) before fn returns. It reports
// whether fn ran.
func (x *proxies) whileIdle(group string, fn func()) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.groupStreams[group] > 0 {
		return false
	}
	fn()
	return true
}

// maxNACKDetail bounds how much of Envoy's error text a NACK keeps, in
// /debug/proxies and in the log: an error can be megabytes (it may quote a
// whole resource), and a client can send as many NACKs as it likes.
const maxNACKDetail = 2048

// nack logs a rejected config with Envoy's own reason. The previous config
// stays in force on that Envoy. Tracing the NACK to policy lines scans the
// error text for resource names, so it runs outside s.mu: a big NACK must
// not hold up Consul updates or other streams.
func (x *proxies) nack(key streamKey, typeURL, nonce, version, detail string) {
	label := typeLabel(typeURL)
	x.metrics.nacks.WithLabelValues(label).Inc()
	detail = redact.PEMKeys(truncate(strings.TrimSpace(detail), maxNACKDetail))

	x.mu.Lock()
	var (
		node    *corev3.Node
		sources map[string]string // immutable, like the groupSnapshot holding it
		sent    []sentNames
	)
	st := x.streams[key]
	if st != nil {
		node = st.node
		sent = slices.Clone(st.deltaSent[typeURL]) // entries are never changed, only dropped
		st.dropAnswered(typeURL, nonce)
	}
	x.mu.Unlock()
	if st != nil {
		sources = x.pub.sources(st.key, typeURL)
	}

	policy := rejectedSources(sources, detail)
	if st != nil && label != otherType {
		r := &rejection{Type: label, Error: detail, Policy: policy, At: time.Now(), nonce: nonce}
		if key.delta {
			r.Resources = deltaRejected(sent, nonce, detail)
		}
		x.mu.Lock()
		if x.streams[key] == st { // still open
			st.rejected[typeURL] = r
			x.countRejecting()
		}
		x.mu.Unlock()
	}
	attrs := []any{"node", node.GetId(), "group", node.GetCluster(), "type", label,
		"nonce", truncate(nonce, 64), "accepted_version", truncate(version, 64), "error", detail}
	if policy != "" {
		attrs = append(attrs, "policy", policy)
	}
	x.log.Error("envoy rejected config (NACK); it keeps its previous config", attrs...)
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
func (x *proxies) ack(key streamKey, typeURL, nonce string) {
	version, group := x.noteACK(key, typeURL, nonce)
	if version == "" {
		return
	}
	// Convergence: from the input change behind the version served now to
	// this Envoy's acceptance of it, once per stream and version. A change
	// made before the stream opened is not one it converged on (an Envoy
	// reconnecting or starting gets the current config; timing that from
	// an old change would say hours).
	served, ok := x.pub.servedVersions(group)[typeURL]
	if !ok || served.version != version || served.changedAt.IsZero() {
		return
	}
	x.mu.Lock()
	st := x.streams[key]
	first := st != nil && st.observed[typeURL] != version && !served.changedAt.Before(st.since)
	if first {
		st.observed[typeURL] = version
	}
	x.mu.Unlock()
	if first {
		x.metrics.convergence.WithLabelValues(typeLabel(typeURL)).Observe(time.Since(served.changedAt).Seconds())
	}
}

// noteACK records an accepted response: the version it brought the stream
// to, and the end of a NACK it replaces. It returns that version ("" when
// the response is not remembered) and the stream's group.
func (x *proxies) noteACK(key streamKey, typeURL, nonce string) (version, group string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.streams[key]
	if st == nil {
		return "", ""
	}
	if key.delta {
		for _, sent := range st.deltaSent[typeURL] {
			if sent.nonce == nonce {
				version = sent.version
			}
		}
	} else if nonce == st.lastNonce[typeURL] {
		version = st.sent[typeURL]
	}
	x.endRejection(st, key, typeURL, nonce)
	st.dropAnswered(typeURL, nonce)
	if _, rejecting := st.rejected[typeURL]; rejecting {
		// (Delta) the response accepted did not replace everything
		// rejected: the Envoy does not run that version.
		return "", st.key
	}
	if version != "" {
		st.acked[typeURL] = version
	}
	return version, st.key
}

// endRejection ends a NACK in force on typeURL when the accepted response
// (nonce) replaces what was rejected. Called with x.mu held.
func (x *proxies) endRejection(st *stream, key streamKey, typeURL, nonce string) {
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
	x.countRejecting()
	x.log.Info("envoy accepted config again after a NACK", "node", st.node.GetId(),
		"group", st.node.GetCluster(), "type", r.Type)
}

// countRejecting updates the gauge of Envoys running with rejected config.
// Called with s.mu held.
func (x *proxies) countRejecting() {
	n := 0
	for _, st := range x.streams {
		if len(st.rejected) > 0 {
			n++
		}
	}
	x.metrics.rejectingProxies.Set(float64(n))
}

// list describes the connected Envoys for /debug/proxies, sorted by group,
// node and protocol, with every NACK still in force, and per type the
// version served and the version accepted.
func (x *proxies) list() []debugProxy {
	x.mu.Lock()
	out := make([]debugProxy, 0, len(x.streams))
	keys := make([]string, 0, len(x.streams))
	rejectedTypes := make([]map[string]bool, 0, len(x.streams))
	for _, st := range x.streams {
		p := debugProxy{Node: st.node.GetId(), Group: st.node.GetCluster(), Protocol: st.protocol, EnvoyVersion: st.version,
			Since: st.since.UTC(), Rejecting: len(st.rejected) > 0, Types: map[string]typeState{}}
		for _, r := range st.rejected {
			c := *r
			c.At, c.Resources = c.At.UTC(), slices.Clone(c.Resources)
			p.Rejected = append(p.Rejected, c)
		}
		slices.SortFunc(p.Rejected, func(a, b rejection) int { return strings.Compare(a.Type, b.Type) })
		// The types the Envoy was sent: those it subscribes to.
		for typ := range st.lastNonce {
			p.Types[typ] = typeState{Acked: st.acked[typ]}
		}
		rt := map[string]bool{}
		for typ := range st.rejected {
			rt[typ] = true
		}
		out = append(out, p)
		keys = append(keys, st.key)
		rejectedTypes = append(rejectedTypes, rt)
	}
	x.mu.Unlock()
	served := map[string]map[string]servedVersion{}
	for i := range out {
		if _, ok := served[keys[i]]; !ok {
			served[keys[i]] = x.pub.servedVersions(keys[i])
		}
		// Nothing served for it (a group no policy defines, a sidecar not
		// built), or nothing sent yet: it has no config from Switchyard.
		out[i].NoConfig = served[keys[i]] == nil || len(out[i].Types) == 0
		for typ, ts := range out[i].Types {
			ts.Served = served[keys[i]][typ].version
			ts.InSync = ts.Acked != "" && ts.Acked == ts.Served && !rejectedTypes[i][typ]
			if !ts.InSync {
				out[i].Behind = append(out[i].Behind, typeLabel(typ))
			}
			out[i].Types[typ] = ts
		}
		slices.Sort(out[i].Behind)
	}
	slices.SortFunc(out, func(a, b debugProxy) int {
		if c := strings.Compare(a.Group, b.Group); c != 0 {
			return c
		}
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.Protocol, b.Protocol)
	})
	return out
}

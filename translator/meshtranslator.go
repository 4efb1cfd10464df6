package translator

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/switchyard-io/switchyard/policy"
	"github.com/switchyard-io/switchyard/registry"
	"github.com/switchyard-io/switchyard/translator/ir"
)

// MeshTranslator translates the mesh as TranslateMesh does, remembering
// its last call, so that a change costs work in proportion to the
// sidecars it touches, not to the fleet: a health flip of a destination
// translates that destination's cluster and nothing else, and reports
// its callers (whose snapshots hold the cluster) as affected.
//
// It remembers each sidecar's translation and what it read (its
// registration, its service's leaf and intentions, the clusters of its
// upstreams), each destination cluster's and what it read (the
// destination's endpoints, what its sidecars serve, its Service policy),
// and indexes from each input to what read it. A change in Consul's view
// (registry.MeshSnapshot.Changes) or in the policy marks what read the
// changed input; only that is translated again. Same inputs, same result:
// an incremental translation equals a fresh one, byte for byte.
//
// Pure like the rest of the package (no clock, I/O or goroutines), and
// not safe for concurrent use. Its zero value is ready.
type MeshTranslator struct {
	snap *registry.MeshSnapshot // the last snapshot translated (it had roots)
	set  *policy.Set
	// roots are the last snapshot's; rootsErr is why they cannot serve
	// (then no cluster is valid, and no sidecar served).
	roots    ir.MeshRoots
	rootsErr error
	sidecars map[string]*sidecarNode // every registration, by proxy ID
	services map[string]*serviceNode // by name
	clusters map[string]*clusterNode // by SNI
	serves   map[string]ir.Protocol  // what each service's sidecars serve
	// warnedSidecars and warnedClusters are the nodes with warnings, so
	// that listing the warnings does not walk the fleet.
	warnedSidecars map[string]bool
	warnedClusters map[string]bool
}

// MeshUpdate is what changed since the translator's previous call, for a
// consumer that keeps what it built from the previous ones.
type MeshUpdate struct {
	// NoRoots: the Connect CA has no roots (yet, or Consul lost them).
	// Nothing was translated and the translator kept its state: every
	// sidecar keeps its last config.
	NoRoots bool
	Roots   ir.MeshRoots
	// RootsChanged: the roots differ from the previous call's, and every
	// served sidecar is in Sidecars.
	RootsChanged bool
	// Clusters are the destinations whose cluster changed or that joined
	// the mesh, sorted by SNI; RemovedClusters (sorted) left it: no
	// sidecar uses them any more.
	Clusters        []*ir.MeshCluster
	RemovedClusters []string
	// Sidecars are the sidecars whose snapshot may have changed, sorted
	// by proxy ID.
	Sidecars []SidecarUpdate
	// Diagnostics are every current warning about the mesh (not only the
	// new ones): those of each sidecar by proxy ID, then those of each
	// destination by SNI.
	Diagnostics policy.Diagnostics
}

// SidecarUpdate is one sidecar whose snapshot may have changed.
type SidecarUpdate struct {
	ProxyID string
	// Sidecar is its IR (immutable, like every IR), nil when it is no
	// longer served: gone from Consul, or not servable (see the
	// diagnostics).
	Sidecar *ir.Sidecar
	// IRChanged: its IR differs from the one last reported (or none was).
	// Otherwise only shared parts it uses changed: a cluster, or the roots.
	IRChanged bool
}

// sidecarNode is one sidecar registration and its translation.
type sidecarNode struct {
	reg   registry.Sidecar
	out   *ir.Sidecar // nil: not served
	diags policy.Diagnostics
	// calls are the clusters its usable upstreams name (it is in their
	// callers); reads the clusters its translation read (it is in their
	// readers): those, their split targets and theirs.
	calls []string
	reads []string
}

// serviceNode indexes what depends on one service.
type serviceNode struct {
	sidecars  map[string]bool // its sidecars' proxy IDs
	clusters  map[string]bool // SNIs of its clusters (one per caller datacenter)
	splitFrom map[string]bool // SNIs of clusters whose mesh policy splits to it
}

func (s *serviceNode) empty() bool {
	return len(s.sidecars) == 0 && len(s.clusters) == 0 && len(s.splitFrom) == 0
}

// clusterNode is one destination cluster: a service as callers of one
// datacenter reach it.
type clusterNode struct {
	service, dc string
	// callers are the sidecars whose upstreams name it, with the protocol
	// each declares: a service no sidecar serves speaks the first's.
	callers map[string]ir.Protocol
	readers map[string]bool
	stale   bool // to translate again before it is read
	out     *ir.MeshCluster
	err     error // why it cannot be served; then neither can its readers
	diags   policy.Diagnostics
	policy  *policy.MeshPolicy // the Service policy it was translated with
	splitTo []string           // the services that policy splits to
	// present: reported to the consumer as part of the mesh (read, and
	// valid).
	present bool
}

// round is one Translate call's work: what to translate again and what
// to report.
type round struct {
	dirty    map[string]bool        // sidecars to translate again
	affected map[string]bool        // sidecars a changed shared part touches
	before   map[string]*ir.Sidecar // what dirty sidecars were served as (absent: nothing)
	protos   map[string]bool        // services whose served protocol may have changed
	clusters map[string]bool        // clusters to translate again
	touched  map[string]bool        // clusters whose readers, callers or IR changed
	changed  map[string]bool        // clusters whose IR or validity changed
	dropped  []string               // clusters in the mesh before a fresh start
}

// Translate translates what changed since the previous call.
func (t *MeshTranslator) Translate(snap *registry.MeshSnapshot, set *policy.Set) *MeshUpdate {
	roots, ok := snap.Roots()
	if !ok || len(roots.Roots) == 0 {
		up := &MeshUpdate{NoRoots: true}
		if len(snap.SidecarIDs()) > 0 {
			up.Diagnostics = policy.Diagnostics{warning("the Connect CA has no roots yet; no sidecar is served until it has")}
		}
		return up
	}
	r := &round{dirty: map[string]bool{}, affected: map[string]bool{}, before: map[string]*ir.Sidecar{},
		protos: map[string]bool{}, clusters: map[string]bool{}, touched: map[string]bool{}, changed: map[string]bool{}}
	mr := meshRoots(roots)
	up := &MeshUpdate{Roots: mr, RootsChanged: mr != t.roots}
	prev := t.begin(r, mr)
	t.snap = snap
	t.markChanges(r, snap.Changes(prev), set)
	t.translateClusters(r)
	for _, id := range slices.Sorted(maps.Keys(r.dirty)) {
		if n := t.sidecars[id]; n != nil {
			t.translateSidecar(r, id, n)
		}
	}
	if up.RootsChanged {
		for id, n := range t.sidecars {
			if n.out != nil {
				r.affected[id] = true
			}
		}
	}
	up.Clusters, up.RemovedClusters = t.settleClusters(r)
	up.Sidecars = t.report(r)
	up.Diagnostics = t.diagnostics()
	return up
}

// begin takes the roots in and returns the snapshot to compare the new
// one with: the last, or nil to start afresh (the first call, or roots
// that change every SNI, SPIFFE ID or cluster's validity). A fresh start
// remembers what was served, to report what no longer is.
func (t *MeshTranslator) begin(r *round, roots ir.MeshRoots) *registry.MeshSnapshot {
	rootsErr := roots.Validate()
	defer func() { t.roots, t.rootsErr = roots, rootsErr }()
	if t.sidecars != nil && roots.TrustDomain == t.roots.TrustDomain && (rootsErr == nil) == (t.rootsErr == nil) {
		return t.snap
	}
	for id, n := range t.sidecars {
		r.dirty[id], r.before[id] = true, n.out
	}
	for sni, c := range t.clusters {
		if c.present {
			r.dropped = append(r.dropped, sni)
		}
	}
	*t = MeshTranslator{sidecars: map[string]*sidecarNode{}, services: map[string]*serviceNode{},
		clusters: map[string]*clusterNode{}, serves: map[string]ir.Protocol{},
		warnedSidecars: map[string]bool{}, warnedClusters: map[string]bool{}}
	return nil
}

// markChanges marks what read a changed input: the sidecars and clusters
// to translate again.
func (t *MeshTranslator) markChanges(r *round, ch registry.MeshChanges, set *policy.Set) {
	t.registrations(r, ch.Sidecars)
	t.servedProtocols(r)
	for _, name := range ch.Destinations {
		if s := t.services[name]; s != nil {
			addAll(r.clusters, s.clusters)
		}
	}
	for _, svc := range ch.Leaves {
		t.markService(r, svc)
	}
	if ch.IntentionDefault || slices.Contains(ch.Intentions, registry.WildcardName) {
		for id := range t.sidecars {
			t.mark(r, id)
		}
	} else {
		for _, name := range ch.Intentions {
			t.markService(r, name)
		}
	}
	if set != t.set {
		// The Mesh document is in every sidecar's IR.
		if !reflect.DeepEqual(meshSettings(t.set), meshSettings(set)) {
			for id := range t.sidecars {
				t.mark(r, id)
			}
		}
		for sni, c := range t.clusters {
			if !reflect.DeepEqual(c.policy, meshPolicy(set, c.service)) {
				r.clusters[sni] = true
			}
		}
		t.set = set
	}
}

// Roots are the roots of the last translation.
func (t *MeshTranslator) Roots() ir.MeshRoots { return t.roots }

// Cluster returns a cluster of the mesh by SNI (nil when it is not in the
// mesh): what the sidecars of the last update name.
func (t *MeshTranslator) Cluster(sni string) *ir.MeshCluster {
	if c := t.clusters[sni]; c != nil && c.present {
		return c.out
	}
	return nil
}

// mark marks a sidecar for translation, remembering what it was served as.
func (t *MeshTranslator) mark(r *round, id string) {
	if r.dirty[id] {
		return
	}
	r.dirty[id] = true
	if n := t.sidecars[id]; n != nil {
		r.before[id] = n.out
	}
}

// wasServed is what a sidecar was served as before this round.
func (t *MeshTranslator) wasServed(r *round, id string) *ir.Sidecar {
	if r.dirty[id] {
		return r.before[id]
	}
	if n := t.sidecars[id]; n != nil {
		return n.out
	}
	return nil
}

// markService marks a service's sidecars: its leaf or intentions changed.
func (t *MeshTranslator) markService(r *round, svc string) {
	if s := t.services[svc]; s != nil {
		for id := range s.sidecars {
			t.mark(r, id)
		}
	}
}

// service returns a service's index node, creating it.
func (t *MeshTranslator) service(name string) *serviceNode {
	s := t.services[name]
	if s == nil {
		s = &serviceNode{sidecars: map[string]bool{}, clusters: map[string]bool{}, splitFrom: map[string]bool{}}
		t.services[name] = s
	}
	return s
}

// registrations takes in the sidecars added, removed or changed: each is
// translated again, and the callers of the clusters it names and the
// protocol its service serves may change.
func (t *MeshTranslator) registrations(r *round, ids []string) {
	for _, id := range ids {
		t.mark(r, id)
		if old := t.sidecars[id]; old != nil {
			delete(t.service(old.reg.Service).sidecars, id)
			r.protos[old.reg.Service] = true
			for _, sni := range old.calls {
				if c := t.clusters[sni]; c != nil {
					delete(c.callers, id)
					r.clusters[sni], r.touched[sni] = true, true
				}
			}
			t.dropReads(r, id, old)
			delete(t.sidecars, id)
			delete(t.warnedSidecars, id)
		}
		reg, ok := t.snap.Sidecar(id)
		if !ok {
			continue
		}
		n := &sidecarNode{reg: reg}
		t.sidecars[id] = n
		t.service(reg.Service).sidecars[id] = true
		r.protos[reg.Service] = true
		for _, u := range reg.Upstreams {
			if !usableUpstream(reg, u) {
				continue
			}
			sni := ir.MeshSNI(u.DestinationName, reg.Datacenter, t.roots.TrustDomain)
			c := t.cluster(sni, u.DestinationName, reg.Datacenter)
			if _, seen := c.callers[id]; !seen {
				c.callers[id] = protocolOf(u.Protocol) // its first upstream to the destination
				n.calls = append(n.calls, sni)
			}
			r.clusters[sni], r.touched[sni] = true, true
		}
	}
}

// usableUpstream reports whether an upstream can be served: the registry
// found no problem, and its names and port fit an SNI and a listener.
func usableUpstream(sc registry.Sidecar, u registry.Upstream) bool {
	return u.Problem == "" && ir.ValidMeshName(u.DestinationName) && ir.ValidMeshName(sc.Datacenter) &&
		u.LocalBindPort > 0 && u.LocalBindPort <= 65535
}

// cluster returns a cluster's node, creating it (stale: it is translated
// when first read).
func (t *MeshTranslator) cluster(sni, service, dc string) *clusterNode {
	c := t.clusters[sni]
	if c == nil {
		c = &clusterNode{service: service, dc: dc, callers: map[string]ir.Protocol{}, readers: map[string]bool{}, stale: true}
		t.clusters[sni] = c
		t.service(service).clusters[sni] = true
	}
	return c
}

// servedProtocols updates what the services whose sidecars changed serve
// (their first sidecar's protocol, by proxy ID); a change there changes
// the service's clusters, and those that split to it.
func (t *MeshTranslator) servedProtocols(r *round) {
	for svc := range r.protos {
		s := t.service(svc)
		first := ""
		for id := range s.sidecars {
			if first == "" || id < first {
				first = id
			}
		}
		old, had := t.serves[svc]
		var now ir.Protocol
		if first != "" {
			now = protocolOf(t.sidecars[first].reg.Protocol)
			t.serves[svc] = now
		} else {
			delete(t.serves, svc)
		}
		if had != (first != "") || old != now {
			addAll(r.clusters, s.clusters)
			addAll(r.clusters, s.splitFrom)
		}
		t.gcService(svc)
	}
}

// translateClusters translates the clusters marked. One that is read and
// changed affects its readers (their snapshots hold its resources), which
// are also translated again when what they read of it (its protocol,
// split or validity) changed. One no sidecar reads waits until one does.
func (t *MeshTranslator) translateClusters(r *round) {
	for _, sni := range slices.Sorted(maps.Keys(r.clusters)) {
		c := t.clusters[sni]
		if c == nil {
			continue
		}
		if len(c.readers) == 0 {
			c.stale = true
			continue
		}
		old, oldErr := c.out, errString(c.err)
		if !t.translateCluster(r, sni, c) {
			continue
		}
		structural := old == nil || old.Protocol != c.out.Protocol || !reflect.DeepEqual(old.Split, c.out.Split) || oldErr != errString(c.err)
		for id := range c.readers {
			r.affected[id] = true
			if structural {
				t.mark(r, id)
			}
		}
	}
}

// translateCluster translates one cluster and reports whether its IR or
// validity changed.
func (t *MeshTranslator) translateCluster(r *round, sni string, c *clusterNode) bool {
	proto, known := t.serves[c.service]
	if !known {
		proto = firstCaller(c.callers)
	}
	var diags policy.Diagnostics
	warn := func(format string, args ...any) { diags = append(diags, warning(format, args...)) }
	out := meshCluster(t.snap, t.set, c.service, c.dc, t.roots.TrustDomain, proto, t.serves, warn)
	err := errors.Join(t.rootsErr, out.Validate(t.roots.TrustDomain))
	for _, svc := range c.splitTo {
		if s := t.services[svc]; s != nil {
			delete(s.splitFrom, sni)
			t.gcService(svc)
		}
	}
	c.policy, c.splitTo = meshPolicy(t.set, c.service), nil
	if c.policy != nil {
		for _, w := range c.policy.Split {
			c.splitTo = append(c.splitTo, w.Service)
			t.service(w.Service).splitFrom[sni] = true
		}
	}
	changed := c.out == nil || errString(c.err) != errString(err) || !reflect.DeepEqual(c.out, out)
	c.out, c.err, c.diags, c.stale = out, err, diags, false
	setWarned(t.warnedClusters, sni, len(diags) > 0)
	r.touched[sni] = true
	if changed {
		r.changed[sni] = true
	}
	return changed
}

// firstCaller is the protocol the first caller (by proxy ID) declares.
func firstCaller(callers map[string]ir.Protocol) ir.Protocol {
	first := ""
	for id := range callers {
		if first == "" || id < first {
			first = id
		}
	}
	if first == "" {
		return ir.ProtocolTCP
	}
	return callers[first]
}

// meshPolicy is a service's mesh policy in set, nil when it has none.
func meshPolicy(set *policy.Set, service string) *policy.MeshPolicy {
	if set == nil {
		return nil
	}
	sv, _ := set.Service(service)
	return sv.Mesh
}

// read returns the cluster a sidecar's translation reads, translating it
// first if it is stale, and records the sidecar as its reader.
func (t *MeshTranslator) read(r *round, id, sni, service, dc string, reads map[string]bool) *clusterNode {
	c := t.cluster(sni, service, dc)
	if c.stale {
		t.translateCluster(r, sni, c)
	}
	if !reads[sni] {
		reads[sni] = true
		c.readers[id] = true
		r.touched[sni] = true
	}
	return c
}

// dropReads removes a sidecar from the readers of what it read.
func (t *MeshTranslator) dropReads(r *round, id string, n *sidecarNode) {
	for _, sni := range n.reads {
		if c := t.clusters[sni]; c != nil {
			delete(c.readers, id)
			r.touched[sni] = true
		}
	}
	n.reads = nil
}

// translateSidecar translates one sidecar: what TranslateMesh serves it,
// or nil with warnings saying why it cannot be served.
func (t *MeshTranslator) translateSidecar(r *round, id string, n *sidecarNode) {
	t.dropReads(r, id, n)
	var diags policy.Diagnostics
	warn := func(format string, args ...any) { diags = append(diags, warning(format, args...)) }
	reads := map[string]bool{}
	n.out = t.sidecarIR(r, id, n.reg, reads, warn)
	n.diags = diags
	setWarned(t.warnedSidecars, id, len(diags) > 0)
	n.reads = slices.Sorted(maps.Keys(reads))
}

// sidecarIR is one sidecar's IR, reading the clusters of its upstreams
// (into reads), or nil when it cannot be served.
func (t *MeshTranslator) sidecarIR(r *round, id string, sc registry.Sidecar, reads map[string]bool, warn func(string, ...any)) *ir.Sidecar {
	td := t.roots.TrustDomain
	side, ok := sidecar(t.snap, sc, td, warn)
	if !ok {
		return nil
	}
	observe(&side, meshSettings(t.set))
	for _, u := range sc.Upstreams {
		if u.Problem != "" {
			continue // logged by the registry, once per proxy
		}
		// One bad upstream is dropped, not the sidecar, and never the
		// mesh every sidecar shares.
		if !usableUpstream(sc, u) {
			warn("sidecar %q: upstream %q (bind port %d) cannot be served; skipped", sc.ID, u.DestinationName, u.LocalBindPort)
			continue
		}
		sni := ir.MeshSNI(u.DestinationName, sc.Datacenter, td)
		c := t.read(r, id, sni, u.DestinationName, sc.Datacenter, reads).out
		// A split (a Service's mesh block) needs its targets' clusters,
		// in the mesh and in this sidecar's snapshot; their own splits'
		// targets are in the mesh too (reads), though not in the snapshot.
		var also []string
		for _, b := range c.Split {
			if b.Cluster != sni {
				also = append(also, b.Cluster)
			}
			t.readSplit(r, id, b, sc.Datacenter, reads)
		}
		bind := u.LocalBindAddress
		if bind == "" {
			bind = "127.0.0.1"
		}
		side.Upstreams = append(side.Upstreams, ir.Upstream{
			Destination: u.DestinationName, BindAddress: bind, BindPort: uint32(u.LocalBindPort),
			Protocol: c.Protocol, Cluster: sni, Also: also,
		})
	}
	slices.SortFunc(side.Upstreams, func(a, b ir.Upstream) int {
		if a.BindAddress != b.BindAddress {
			if a.BindAddress < b.BindAddress {
				return -1
			}
			return 1
		}
		return int(a.BindPort) - int(b.BindPort)
	})
	// Spans come from HTTP connection managers: a sidecar whose listeners
	// all proxy TCP has no use for the collector's cluster.
	if side.Tracing != nil && !side.Protocol.IsHTTP() && !slices.ContainsFunc(side.Upstreams, func(u ir.Upstream) bool { return u.Protocol.IsHTTP() }) {
		side.Tracing, side.TracingCluster = nil, nil
	}
	if err := side.Validate(); err != nil {
		warn("sidecar %q cannot be served: %v", sc.ID, err)
		return nil
	}
	for _, sni := range slices.Sorted(maps.Keys(reads)) {
		if err := t.clusters[sni].err; err != nil {
			warn("sidecar %q cannot be served: %v", sc.ID, err)
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return &side
}

// readSplit reads a split's target and, once each, the targets of its
// own split.
func (t *MeshTranslator) readSplit(r *round, id string, b ir.MeshBackend, dc string, reads map[string]bool) {
	if reads[b.Cluster] {
		return
	}
	c := t.read(r, id, b.Cluster, b.Service, dc, reads).out
	for _, next := range c.Split {
		t.readSplit(r, id, next, dc, reads)
	}
}

// settleClusters decides, for each cluster touched, whether it is in the
// mesh (read, and valid), reports those that joined or changed and those
// that left, and forgets those nothing names any more.
func (t *MeshTranslator) settleClusters(r *round) (changed []*ir.MeshCluster, removed []string) {
	for _, sni := range slices.Sorted(maps.Keys(r.touched)) {
		c := t.clusters[sni]
		if c == nil {
			continue
		}
		present := len(c.readers) > 0 && c.err == nil
		switch {
		case present && (!c.present || r.changed[sni]):
			changed = append(changed, c.out)
		case !present && c.present:
			removed = append(removed, sni)
		}
		c.present = present
		if len(c.readers) == 0 && len(c.callers) == 0 {
			delete(t.clusters, sni)
			delete(t.warnedClusters, sni)
			for _, svc := range append([]string{c.service}, c.splitTo...) {
				if s := t.services[svc]; s != nil {
					delete(s.clusters, sni)
					delete(s.splitFrom, sni)
					t.gcService(svc)
				}
			}
		}
	}
	for _, sni := range r.dropped { // after a fresh start: unless back
		if c := t.clusters[sni]; c == nil || !c.present {
			removed = append(removed, sni)
		}
	}
	slices.Sort(removed)
	return changed, removed
}

// gcService forgets a service nothing depends on.
func (t *MeshTranslator) gcService(name string) {
	if s := t.services[name]; s != nil && s.empty() {
		delete(t.services, name)
	}
}

// report lists the sidecars whose IR changed or that a changed shared
// part affects, served before or now.
func (t *MeshTranslator) report(r *round) []SidecarUpdate {
	ids := maps.Clone(r.affected)
	addAll(ids, r.dirty)
	var out []SidecarUpdate
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		var now *ir.Sidecar
		if n := t.sidecars[id]; n != nil {
			now = n.out
		}
		before := t.wasServed(r, id)
		if before == nil && now == nil {
			continue
		}
		irChanged := before == nil || now == nil || (before != now && !reflect.DeepEqual(before, now))
		if !irChanged && !r.affected[id] {
			continue
		}
		out = append(out, SidecarUpdate{ProxyID: id, Sidecar: now, IRChanged: irChanged})
	}
	return out
}

// diagnostics lists every current warning: each sidecar's, by proxy ID,
// then each read cluster's, by SNI.
func (t *MeshTranslator) diagnostics() policy.Diagnostics {
	var out policy.Diagnostics
	for _, id := range slices.Sorted(maps.Keys(t.warnedSidecars)) {
		out = append(out, t.sidecars[id].diags...)
	}
	for _, sni := range slices.Sorted(maps.Keys(t.warnedClusters)) {
		if c := t.clusters[sni]; len(c.readers) > 0 {
			out = append(out, c.diags...)
		}
	}
	return out
}

// setWarned records whether a node has warnings.
func setWarned(warned map[string]bool, key string, has bool) {
	if has {
		warned[key] = true
	} else {
		delete(warned, key)
	}
}

func warning(format string, args ...any) policy.Diagnostic {
	return policy.Diagnostic{Pos: consulPos, Severity: policy.SeverityWarning, Message: fmt.Sprintf(format, args...)}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func addAll(dst, src map[string]bool) {
	for k := range src {
		dst[k] = true
	}
}

package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// intentionsState is the service-intentions list watch, with fail-static
// like any list.
type intentionsState struct {
	watchState
	entries  map[string]*Intentions // by destination (or "*"); never modified once set
	filtered bool                   // ACL filtering of the answer already logged
	// aclHeader is the last answer's X-Consul-Default-ACL-Policy: Consul's
	// acl.default_policy, which is the intention default only when ACLs
	// are enabled (with ACLs off Consul still sends it, while intentions
	// default to allow).
	aclHeader string
}

// selfState is what /v1/agent/self said about ACLs.
type selfState struct {
	read        bool   // answered, or failed for good (then failure is set)
	aclsEnabled bool   // DebugConfig.ACLsEnabled
	policy      string // DebugConfig's ACL default policy
	forbidden   bool   // 403: the token lacks agent:read; ACLs are enforced
	failure     string // why it could not be read, when not forbidden
}

// selfTimeout bounds one /v1/agent/self request (not a blocking query).
const selfTimeout = 30 * time.Second

// agentSelf is the part of /v1/agent/self that tells the ACL default.
// DebugConfig is not a stable API: Consul 1.11+ has ACLResolverSettings,
// older agents the fields at the top.
type agentSelf struct {
	DebugConfig *struct {
		ACLsEnabled         *bool
		ACLDefaultPolicy    string
		ACLResolverSettings *struct {
			ACLsEnabled      *bool
			ACLDefaultPolicy string
		}
	}
}

func (st *meshState) watchIntentions(ctx context.Context) {
	var (
		entries []consulapi.ConfigEntry
		meta    *consulapi.QueryMeta
	)
	st.m.w.loop(ctx, "mesh:intentions",
		func(opts *consulapi.QueryOptions) (*consulapi.QueryMeta, error) {
			var err error
			entries, meta, err = st.m.w.client.ConfigEntries().List(consulapi.ServiceIntentions, opts)
			return meta, err
		},
		func(suspect string) { st.applyIntentions(entries, meta, suspect) })
}

// watchIntentionDefault reads the agent's ACL settings once, and again
// after every suspect intentions answer (the agent may have restarted with
// another configuration).
func (st *meshState) watchIntentionDefault(ctx context.Context) {
	failures := 0
	for {
		self, err := st.readSelf(ctx)
		if ctx.Err() != nil {
			return
		}
		st.m.w.hooks.request(KindMesh, err)
		if err != nil { // Consul unreachable: try again
			failures++
			err = redactErr(err, st.m.w.cfg.Token)
			if h := st.m.w.hooks.WatchError; h != nil {
				h("mesh:agent-self", err)
			}
			st.log().Debug("consul query failed; will retry", "op", "mesh:agent-self", "error", err, "failures", failures)
			if !sleep(ctx, st.m.w.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		st.mu.Lock()
		changed := st.self != self
		st.self = self
		st.mu.Unlock()
		if changed {
			st.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-st.reread:
		}
	}
}

// readSelf reads /v1/agent/self. An error means Consul could not be
// asked (retry); an answer that does not tell is a selfState with failure.
func (st *meshState) readSelf(ctx context.Context) (selfState, error) {
	qctx, cancel := context.WithTimeout(ctx, selfTimeout)
	defer cancel()
	var self agentSelf
	_, err := st.m.w.client.Raw().Query("/v1/agent/self", &self, (&consulapi.QueryOptions{}).WithContext(qctx))
	var se consulapi.StatusError
	switch {
	case errors.As(err, &se) && se.Code == 403:
		return selfState{read: true, forbidden: true}, nil
	case errors.As(err, &se):
		return selfState{read: true, failure: fmt.Sprintf("/v1/agent/self answered HTTP %d", se.Code)}, nil
	case errors.As(err, new(*json.SyntaxError)) || errors.As(err, new(*json.UnmarshalTypeError)):
		return selfState{read: true, failure: "/v1/agent/self is not the JSON Consul sends"}, nil
	case err != nil:
		return selfState{}, err
	}
	dc := self.DebugConfig
	if dc == nil {
		return selfState{read: true, failure: "/v1/agent/self has no DebugConfig"}, nil
	}
	enabled, policy := dc.ACLsEnabled, dc.ACLDefaultPolicy
	if r := dc.ACLResolverSettings; r != nil {
		if enabled == nil {
			enabled = r.ACLsEnabled
		}
		if r.ACLDefaultPolicy != "" {
			policy = r.ACLDefaultPolicy
		}
	}
	if enabled == nil {
		return selfState{read: true, failure: "/v1/agent/self has no DebugConfig.ACLsEnabled"}, nil
	}
	return selfState{read: true, aclsEnabled: *enabled, policy: policy}, nil
}

// intentionDefaultLocked is the decision for a caller no intention
// matches, where it comes from, and whether Consul told it (known is false
// when it is deny only because it could not be read). The caller holds
// st.mu.
func (st *meshState) intentionDefaultLocked() (policy, from string, known bool) {
	s := st.self
	valid := func(p string) bool { return p == IntentionAllow || p == IntentionDeny }
	switch {
	case !s.read:
		return IntentionDeny, "not read yet", false
	case s.failure != "":
		return IntentionDeny, "cannot read the agent's ACL settings (" + s.failure + "): deny, to fail closed", false
	case s.forbidden && valid(st.ints.aclHeader):
		return st.ints.aclHeader, "ACLs are enabled (/v1/agent/self needs agent:read, which the token lacks); acl.default_policy from Consul's X-Consul-Default-ACL-Policy header", true
	case s.forbidden:
		return IntentionDeny, "ACLs are enabled (/v1/agent/self needs agent:read, which the token lacks) and Consul sent no X-Consul-Default-ACL-Policy: deny, to fail closed", false
	case !s.aclsEnabled:
		return IntentionAllow, "ACLs are disabled (/v1/agent/self DebugConfig.ACLsEnabled)", true
	case valid(s.policy):
		return s.policy, "ACLs are enabled; acl.default_policy (/v1/agent/self DebugConfig)", true
	}
	return IntentionDeny, fmt.Sprintf("ACLs are enabled with default policy %q, neither allow nor deny: deny, to fail closed", s.policy), false
}

// applyIntentions takes one answer of the service-intentions list.
func (st *meshState) applyIntentions(entries []consulapi.ConfigEntry, meta *consulapi.QueryMeta, suspect string) {
	next := map[string]*Intentions{}
	rejected := map[string][]string{} // entries not kept at all: their problems, by name
	for i, ce := range entries {
		if ce == nil {
			continue
		}
		in, ok := intentionsOf(ce)
		if !ok {
			key := ce.GetName()
			if key == "" || !localScope(ce.GetNamespace()) || !localScope(ce.GetPartition()) {
				key = fmt.Sprintf("%s (entry %d, namespace %q, partition %q)", ce.GetName(), i, ce.GetNamespace(), ce.GetPartition())
			}
			rejected[key] = in.Problems
			continue
		}
		if _, dup := next[in.Destination]; dup {
			continue // one per name in the default namespace: cannot happen
		}
		next[in.Destination] = in
	}

	var events []event
	st.mu.Lock()
	is := &st.ints
	if meta != nil {
		is.aclHeader = meta.DefaultACLPolicy
		if meta.ResultsFilteredByACLs && !is.filtered {
			is.filtered = true
			events = append(events, func() {
				st.log().Warn("consul left some service-intentions out of its answer (the token may not read them): callers of those destinations get the intention default",
					"fix", "give the token intentions = \"read\" on every service")
			})
		}
	}
	changed := !is.synced
	is.synced = true
	switch {
	case len(next) == 0 && is.held:
	case len(next) == 0 && len(is.entries) > 0 && suspect != "":
		events = append(events, st.hold(&is.watchState, len(is.entries), "empty answer: "+suspect))
		changed = true
	default:
		if is.held {
			events = append(events, st.recovered(&is.watchState, len(next)))
		}
		for name, in := range next {
			if old := is.entries[name]; old != nil && deepEqual(old, in) {
				next[name] = old // unchanged: the snapshots share it
			}
		}
		if !mapsEqualDeep(is.entries, next) {
			is.entries = next
			changed = true
		}
		events = append(events, st.intentionProblemsLocked(rejected)...)
	}
	if suspect != "" {
		select {
		case st.reread <- struct{}{}:
		default:
		}
	}
	st.mu.Unlock()
	runEvents(events)
	if changed {
		st.notify()
	}
}

// intentionProblemsLocked logs each entry's problems once (again only when
// they change) and reports each through Hooks.SidecarProblem as
// "intentions:<destination>". The caller holds st.mu.
func (st *meshState) intentionProblemsLocked(rejected map[string][]string) []event {
	all := maps.Clone(rejected)
	for name, in := range st.ints.entries {
		if len(in.Problems) > 0 {
			all[name] = in.Problems
		}
	}
	var events []event
	for key := range st.intLogged {
		if _, ok := all[key]; !ok {
			delete(st.intLogged, key)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		problems := all[name]
		joined := strings.Join(problems, "\n")
		if st.intLogged[name] == joined {
			continue
		}
		st.intLogged[name] = joined
		id := "intentions:" + name
		events = append(events, func() {
			st.log().Warn("service-intentions entry has problems; the rest of it is served", "destination", name, "problems", problems)
			if h := st.m.w.hooks.SidecarProblem; h != nil {
				for _, p := range problems {
					h(id, p)
				}
			}
		})
	}
	return events
}

// l7OnTCPLocked reports, once each, the sidecars that speak tcp while
// intentions for their service have L7 permissions: Consul refuses to
// write such intentions, but a sidecar registered with protocol tcp (or a
// protocol changed afterwards) can still meet them, and Consul's own
// sidecar then denies the sources with permissions. The intentions stay
// as they are in the snapshot: the translator decides. The caller holds
// st.mu.
func (st *meshState) l7OnTCPLocked(snap *MeshSnapshot) []event {
	now := map[string]bool{}
	var events []event
	for _, id := range slices.Sorted(maps.Keys(snap.sidecars)) {
		sc := snap.sidecars[id]
		if sc.Protocol != ProtocolTCP || sc.Service == "" {
			continue
		}
		in, ok := snap.Intentions(sc.Service)
		if !ok {
			continue
		}
		src, l7 := in.hasL7()
		if !l7 {
			continue
		}
		key := sc.Service + "/" + sc.ID
		now[key] = true
		if st.l7Logged[key] {
			continue
		}
		problem := fmt.Sprintf("intentions for %s have L7 permissions (source %q) but its sidecar %s speaks tcp: Consul treats such sources as deny", sc.Service, src, sc.ID)
		id := "intentions:" + sc.Service
		events = append(events, func() {
			st.log().Warn("service-intentions entry has problems; the rest of it is served", "destination", sc.Service, "problems", []string{problem})
			if h := st.m.w.hooks.SidecarProblem; h != nil {
				h(id, problem)
			}
		})
	}
	st.l7Logged = now
	return events
}

// intentionsEqual compares the intentions parts of two snapshots.
func intentionsEqual(a, b *MeshSnapshot) bool {
	return a.intentionDefault == b.intentionDefault && mapsEqualDeep(a.intentions, b.intentions)
}

// String describes the intentions on one line, for logs and test
// failures.
func (in Intentions) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", in.Destination)
	for _, s := range in.Sources {
		fmt.Fprintf(&b, " %s", s.Name)
		if s.Action != "" {
			fmt.Fprintf(&b, "=%s", s.Action)
		} else {
			j, _ := json.Marshal(s.Permissions)
			fmt.Fprintf(&b, "=%s", j)
		}
		fmt.Fprintf(&b, "(%d)", s.Precedence)
	}
	return b.String()
}

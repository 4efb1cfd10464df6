// Package registry watches Consul for services, their instances and health,
// and (MeshWatcher) for Connect sidecars and certificates, and publishes
// immutable snapshots.
//
// It is the only package that imports consul/api: Consul's types stop here,
// and the rest of Switchyard sees Service, Instance, Health and Snapshot.
//
// # Watching
//
// A Watcher runs one blocking query on the service list
// (/v1/catalog/services) and watches the health of every listed service.
// A service's watch starts when it appears in the list and stops when it
// leaves it. Answers from all watches are merged into one state; after
// each change the watcher publishes a new Snapshot, unless its content
// equals the last one (a blocking query also returns when its wait
// expires or after a write that changed nothing). The first snapshot comes
// only after a full sync (of every wanted service, once Want was called),
// so the control plane never serves a partial view. Debouncing is the
// control plane's job.
//
// Over plain HTTP each blocking query keeps one connection busy while it
// blocks, and Consul caps the connections from one client address
// (limits.http_max_conns_per_client, default 200; beyond it the agent
// answers 429 or drops the connection). So a bounded pool of services
// (Config.MaxServiceWatches: 100 over http by default, the first by name,
// refilled by name when one leaves) each get a blocking query of their own
// on /v1/health/service/<name>, and any number of others are multiplexed:
//
//   - Two blocking queries, on the critical and on the warning checks
//     (/v1/health/state/critical, /v1/health/state/warning; Consul 1.14
//     serves them from its index of checks by status, wakes each on writes
//     to checks in that state (on any status change while none is in it),
//     and answers with the checks table's index; each is paced to 50 a
//     second). A check that enters or leaves
//     a set names the service whose health changed (a node check, every
//     multiplexed service with an instance on the node), which is read
//     once, without blocking, on /v1/health/service/<name>. They run while
//     a service is multiplexed; their first answers are baselines that the
//     first reads wait for, so no change falls between the two. (One query
//     on /v1/health/state/any filtered to Status != "passing" would do
//     with one connection less, but Consul would evaluate the filter on
//     every check, passing ones too, at every check write.)
//   - The catalog query: its index is the services table's, which moves on
//     every registration change but on no health change. A multiplexed
//     service whose tags changed is read again at once; a service added
//     or removed is started or dropped as always; and since the list does
//     not say which other service changed (an instance added, a port), the
//     multiplexed services are swept: each read again, paced to 500 reads
//     a second, a service pending at most once however many changes come.
//
// At most sharedReaders (4) reads run at once, changed services before
// sweeps. So the Watcher holds at most MaxServiceWatches + 7 connections,
// and Consul's load from it follows the rate of change, not the number of
// services or proxies. Consul's per-service index makes the reads safe
// with stale reads: a read asked for by a check change must show an
// X-Consul-Index at least that of the change (the check's ModifyIndex, or
// past the previous health-state answer for a check that left), else a
// lagging server answered and it is read again (up to three times). First
// reads and sweep reads cannot name such an index, so they are never stale.
// A failed read is queued again and its reader pauses with jittered
// backoff; the readers share the failure count, so a Consul answering 429
// slows them all.
//
// Over HTTPS (Config.Scheme "https") the queries share HTTP/2
// connections, up to 250 streams each, the cap does not apply, and by
// default every service has a query of its own (the pool has no limit).
//
// Switchyard needs only the services its routing policy references, so
// Watcher.Want restricts the watcher to them. Until Want is first called
// every service in the catalog is watched; afterwards only the services both
// wanted and listed. A service that stops being wanted has its watch
// stopped (its place in the pool, if it had one, goes to a multiplexed
// service) and leaves the snapshots. A newly wanted service that the last
// catalog answer listed is watched at once, without waiting for the
// catalog query, which may block for minutes.
//
// Snapshot.Covers tells which services a snapshot speaks for: the wanted
// ones that were watched, or known absent from the catalog, when it was
// published (every name, without Want). A newly wanted service is not
// covered until its first health answer arrives, so "absent because not
// yet read" is never confused with "absent from Consul". Meanwhile the
// watcher keeps publishing changes to other services, and publishes again
// when the new service's answer arrives (coverage is part of a snapshot's
// content: Snapshot.Equal compares it). A wanted service that appears in
// the catalog after being covered as absent stays covered, and absent,
// until its first answer, as any new service does without Want.
//
// DESIGN says only controlplane starts goroutines; this package is the one
// exception, because every blocking query (and every reader) needs a
// goroutine of its own. All of them are started inside Watcher.Run, under
// a context derived from Run's, and all have exited when Run returns.
//
// # Health
//
// An instance's health aggregates every check of its entry, the node's
// (serfHealth) as well as the service's: a critical maintenance check
// (_node_maintenance, _service_maintenance:<id>) makes it Draining, any
// other critical check Unhealthy, and passing or warning Healthy. Weights
// come from Consul's service weights (see Instance.Weight).
//
// # Fail static
//
// When Consul is unreachable or failing, the watcher retries with jittered
// exponential backoff, reports each failure through Hooks.WatchError, and
// publishes nothing: the last snapshot stays in force.
//
// Worse is an agent that answers but has lost its state: a restarted dev
// agent, or one that rejoined with a wiped data dir, answers "no instances"
// for every service until they register again, and believing it would take
// every route down at once. So an empty answer for a service that had
// instances, or a service leaving the list, is suspect when
//
//   - the X-Consul-Index went backwards (the agent's raft index restarted),
//   - the answer is the first after a failed query, or came only after
//     net/http silently retried the query on a new connection because the
//     pooled one broke (either way the agent may have restarted meanwhile:
//     its new index cannot be compared with the old one, since
//     re-registrations can carry it past the index we held),
//   - or the agent reports no known leader (only where that header means
//     something: answers from Consul's streaming backend, which serves
//     blocking health queries by default since 1.10, always say false).
//
// A suspect service keeps its last known instances for Config.StaleHold,
// its watch keeps running, and Hooks.FailStatic is called. Any later answer
// with instances ends the hold (logged as recovered); an empty answer,
// suspect or not, does not, so the hold survives the whole restart sequence:
// empty answers at a low index, then the index climbing as other services
// re-register first. When StaleHold passes without instances, the watcher
// believes Consul.
//
// An empty answer at a forward-moving index from a healthy connection is a
// real deregistration of every instance: the service is published with no
// instances (Envoy then answers 503 for it, as it should). A service leaving
// the list in the same conditions is dropped.
//
// A service that stops being wanted is not a fail-static case: it is
// dropped at once, a hold on it ends, and no hook is called.
//
// # Mesh
//
// A MeshWatcher watches Consul Connect (sidecars, destinations,
// certificates and intentions) for the sidecar mesh and publishes
// immutable MeshSnapshots, the way a Watcher publishes Snapshots: one
// publish goroutine, never concurrent, never an unchanged snapshot, the
// first only after a full sync. It is separate from the Watcher because
// its inputs are (connect-proxy registrations, certificates), and so that
// edge-only deployments never touch Connect endpoints. Both share Config,
// Hooks and the query loop (backoff, index handling, suspect answers).
//
//	mw, err := registry.NewMeshWatcher(cfg, log, hooks)
//	mw.WantDestinations(edgeMeshServices) // optional: beyond the upstreams
//	mw.WantLeaves([]string{"edge"})        // optional: beyond the sidecars' services
//	err = mw.Run(ctx, func(s *registry.MeshSnapshot) {
//		for _, id := range s.SidecarIDs() {
//			sc, _ := s.Sidecar(id)   // inbound: sc.Address:sc.Port -> sc.LocalServiceAddress:sc.LocalServicePort
//			leaf, _ := s.Leaf(sc.Service) // its identity (leaf.KeyPEM never prints)
//			for _, u := range sc.Upstreams {
//				if u.Problem != "" { continue } // counted through Hooks.SidecarProblem
//				d, _ := s.Destination(u.DestinationName) // endpoints; use ep.Usable()
//				_, _ = d, leaf
//			}
//		}
//		roots, _ := s.Roots() // every root is trusted (a rotation has two)
//		_ = roots
//		in, ok := s.Intentions("api") // api's entry merged with the "*" entry
//		if !ok {
//			_ = s.IntentionDefault() // "allow" or "deny" for every caller
//		}
//		_ = in
//	})
//	// errors.Is(err, registry.ErrConnectDisabled): Connect is off in Consul.
//
// How sidecars are found. Consul has no single query for "every
// connect-proxy registration with its Proxy block", so the watcher uses
// two levels, each bounded by the number of services, never by the
// number of proxies:
//
//   - one blocking query on /v1/catalog/services with the filter
//     ServiceKind == "connect-proxy" (supported since Consul 1.14): the
//     names of the proxy services (web-sidecar-proxy, ...);
//   - one blocking query per proxy service name on
//     /v1/health/service/<name>: every instance of it, with its Proxy
//     block (destination, local app, upstreams, Config) and its checks.
//     100 instances of web with a sidecar each are one query.
//
// The agent's /v1/agent/services sees only the local agent's
// registrations; /v1/catalog/connect/<service> and
// /v1/health/connect/<service> are keyed by the destination, which a
// proxy's name does not reliably tell (a standalone proxy may be named
// anything), so they cannot discover sidecars, only serve destinations.
//
// Destinations. Every service an upstream names (and every service given
// to WantDestinations) is watched with two blocking queries (past the
// pool, multiplexed: see below):
// /v1/health/connect/<service>, the sidecars (and Connect-native
// instances) that front it, whose public address and port are the
// endpoints, and /v1/health/service/<service>, the instances' own health.
// An endpoint is usable only while both its sidecar and its instance pass
// (Endpoint.Usable). Consul's default sidecar checks include an alias of
// the instance, which Consul's own xDS server relies on; joining the
// instance's health as well keeps sidecars registered with checks of their
// own (and no alias) honest. A destination no upstream names any more has
// its watches stopped.
//
// Certificates. One blocking query on /v1/agent/connect/ca/roots, and one
// per service with a sidecar (and per WantLeaves name) on
// /v1/agent/connect/ca/leaf/<service> (past the pool, plain reads: see
// below); the local agent renews leaves
// before they expire and after a CA rotation, and the blocking query
// returns the new one. A leaf that cannot be fetched (an error, a
// certificate and key that do not match, no SPIFFE URI) keeps the last
// good one in the snapshots; the failure goes to Hooks.WatchError as
// "mesh:leaf:<service>" and the log, and Leaf.NotAfter tells how long the
// kept one lasts. A leaf never fetched is absent and does not hold up the
// first snapshot. Private keys are KeyPEM values, which print as
// "[redacted]" everywhere, and errors that might quote a leaf answer are
// replaced by a sentence saying so.
//
// Consul without Connect answers every Connect endpoint with HTTP 500
// "Connect must be enabled": before the first snapshot, Run returns an
// error wrapping ErrConnectDisabled that names connect { enabled = true };
// after it, the last snapshot stays in force and the error is logged.
//
// Intentions. One blocking query on /v1/config/service-intentions
// (ConfigEntries().List("service-intentions")) holds every
// service-intentions entry; on Consul 1.14 it blocks on the config
// entries' index and returns on a write of one (checked on the dev agent).
// Each entry becomes an Intentions value: its sources (a service name or
// "*") with an action (L4) or ordered L7 permissions (HTTP path exact,
// prefix or regex, methods, headers exact, prefix, suffix, regex or
// present, each possibly inverted), and Consul's precedence.
// MeshSnapshot.Intentions(destination) merges the destination's entry
// with the "*" entry the way Consul ranks them: an exact destination
// before "*", then an exact source before "*" (web->api 9, *->api 8,
// web->* 6, *->* 5); the highest match alone decides; L7 permissions are
// tried in order and a request none matches gets the default; a caller
// no intention matches gets the default.
//
// The default decision (MeshSnapshot.IntentionDefault) is Consul's: allow
// when ACLs are disabled, else acl.default_policy. It is read from
// /v1/agent/self (DebugConfig.ACLsEnabled and the ACL default policy; not
// a stable API, so both the 1.11+ ACLResolverSettings and the older
// layout are read), once, and again after any suspect intentions answer
// (the agent may have restarted with another configuration). A token
// without agent:read gets 403: ACLs are then on, and the
// X-Consul-Default-ACL-Policy header Consul puts on every answer is the
// policy (that header alone is not enough: with ACLs off it still says the
// configured policy, while intentions default to allow). If the default
// cannot be read at all it is deny, and the log says why, once; while
// Consul cannot be reached it is not guessed: the first snapshot waits.
// On the 1.14 dev agent ACLs are off: allow.
//
// Odd entries never fail the snapshot: an entry for another namespace or
// partition is ignored, a source from another namespace, partition, peer
// or sameness group is dropped (its callers are not this mesh's), and a
// source Switchyard cannot represent faithfully (an unknown action, both
// or neither of an action and permissions, a permission with an invalid
// path or regex, an unsupported header match, a JWT requirement) is kept
// as deny, so that no broader rule lets its callers in. Each is put in
// Intentions.Problems, logged once per entry (again when its problems
// change) and reported through Hooks.SidecarProblem as
// "intentions:<destination>". L7 permissions for a service whose sidecar
// speaks tcp are kept (Consul's own sidecar denies such sources; the
// translator decides) and reported once per sidecar. An answer that Consul
// filtered by ACLs (the token may not read some entries) is logged once.
//
// In all, 3 + P + 2D + L blocking queries for P proxy services, D
// destinations and L leaves, and one plain read of /v1/agent/self. Over
// HTTPS they share HTTP/2 connections. Over plain HTTP each holds a
// connection, and Consul's cap on connections per client (see
// "Watching") counts them together with the Watcher's, so the per-name
// ones are pooled as the Watcher's services are, with a budget of their
// own (Config.MaxMeshWatches, DefaultMaxMeshWatches = 40 over http):
// proxy services first, then destinations (two queries each), then
// leaves, each by name, the pool refilled in the same order when one
// leaves. The budget is separate from MaxServiceWatches because the two
// watchers are separate clients, and so that a big mesh cannot starve the
// edge's services (or the reverse); with the defaults the two hold at
// most 107 + 50 connections, well under 200. The others are multiplexed
// (meshshared.go), reusing the Watcher's machinery (readQueue,
// stateSet.update, Watcher.failedRead):
//
//   - two blocking queries on the critical and warning checks, running
//     while a proxy service or destination is multiplexed: a check that
//     enters or leaves a set re-reads (/v1/health/service/<name>) the
//     multiplexed proxy service it belongs to, the connect health of the
//     multiplexed destinations that proxy's sidecars front, and both
//     reads of a multiplexed destination it belongs to (a node check:
//     every multiplexed entry with a sidecar, endpoint or instance on the
//     node). Reads of a service's own health carry the check's index and
//     may be stale, as the Watcher's; connect health reads are
//     consistent (the change was to another service's check);
//   - the proxy list query, whose index is the services table's and moves
//     on every registration change of any service (Consul filters the
//     answer, not the index): the multiplexed proxy services and
//     destinations are swept at the sweep pace;
//   - leaves, read without blocking (the local agent answers from its
//     cache, where it renews them): each at least every 5 minutes, every
//     quarter of its remaining life once that is shorter (at least 5 s
//     apart), and, after the active root changes, every second until the
//     agent has re-signed it (up to 2 minutes). A failed read keeps the
//     last good leaf and is retried with the leaf's own backoff.
//
// At most sharedReaders (4) mesh reads run at once, counted by
// Hooks.Request as "mesh-read"; the multiplexed entries are counted by
// Hooks.Watches as "mesh-multiplexed". So the mesh holds at most
// MaxMeshWatches + 10 connections (the pool, the proxy list, roots and
// intentions, two health-state queries, four readers and the agent-self
// read). Fail static is the Watcher's: a read is suspect after a failed
// read, a lost connection, a suspect shared answer, an index that went
// backwards or no leader, and an empty suspect answer is held.
//
// Bad registrations. What Switchyard cannot serve is put in
// Sidecar.Problems or Upstream.Problem (an unknown protocol, a prepared
// query or another datacenter or peer as destination, no bind port, a bind
// address used twice, transparent mode, a proxy ID registered on two
// nodes), logged once per proxy ID (again only when the problems change)
// and reported through Hooks.SidecarProblem; the rest of the registration,
// and every other sidecar, is served.
//
// Fail static works as for the Watcher: an empty answer for a proxy
// service, a destination or the intentions list that had entries is held
// for StaleHold when it is suspect (index reset, reconnect, no leader),
// with Hooks.FailStatic called ("service-intentions" for the intentions).
// A restarted dev agent forgets its intentions with everything else:
// holding them keeps a deny in force until the entries are written again
// (any non-empty answer ends the hold) or StaleHold passes.
package registry

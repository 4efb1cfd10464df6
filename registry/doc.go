// Package registry watches Consul for services, their instances and health, and publishes immutable snapshots.
//
// It is the only package that imports consul/api: Consul's types stop here,
// and the rest of Switchyard sees Service, Instance, Health and Snapshot.
//
// # Watching
//
// A Watcher runs one blocking query on the service list
// (/v1/catalog/services) and one per service on /v1/health/service/<name>
// (every instance, any state). A service's watch starts when it appears in
// the list and stops when it leaves it. Answers from all watches are merged
// into one state; after each change the watcher publishes a new Snapshot,
// unless its content equals the last one (a blocking query also returns when
// its wait expires or after a write that changed nothing). The first
// snapshot comes only after a full sync (of every wanted service, once Want
// was called), so the control plane never serves a partial view.
// Debouncing is the control plane's job.
//
// Over plain HTTP each watch keeps one connection busy while it blocks.
// Consul caps the connections from one client address
// (limits.http_max_conns_per_client, default 200; beyond it the agent
// answers 429 or drops the connection), so more services than that cannot
// be watched: the watches beyond the cap fail forever and the first full
// sync never completes. Over HTTPS (Config.Scheme "https") the watches share
// HTTP/2 connections, up to 250 streams each, and the cap stops mattering.
//
// Switchyard needs only the services its routing policy references, so
// Watcher.Want restricts the watcher to them. Until Want is first called
// every service in the catalog is watched; afterwards only the services both
// wanted and listed, each still with its own watch (so the cap then bounds
// the number of services the policy may route to, not the catalog's size).
// A service that stops being wanted has its watch stopped and leaves the
// snapshots. A newly wanted service that the last catalog answer listed is
// watched at once, without waiting for the catalog query, which may block
// for minutes.
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
// exception, because every watched service needs its own blocking query in
// flight. All of them are started inside Watcher.Run, under a context
// derived from Run's, and all have exited when Run returns.
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
package registry

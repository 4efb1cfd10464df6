package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/registry"
)

// metrics are Switchyard's Prometheus series. Their names are part of the
// operator contract, like Envoy resource names: dashboards key on them.
type metrics struct {
	registry          *prometheus.Registry
	connectedProxies  *prometheus.GaugeVec
	pushes            *prometheus.CounterVec
	nacks             *prometheus.CounterVec
	convergence       *prometheus.HistogramVec
	rejectingProxies  prometheus.Gauge
	refusedStreams    *prometheus.CounterVec
	snapshotBuild     prometheus.Histogram
	snapshotErrors    prometheus.Counter
	rateLimitDomains  prometheus.Gauge
	rateLimitLimits   *prometheus.GaugeVec
	failingGroups     prometheus.Gauge
	sidecarProblems   prometheus.Counter
	failingSidecars   prometheus.Gauge
	leafExpiry        *prometheus.GaugeVec
	meshWarnings      prometheus.Gauge
	consulWatchErrors *prometheus.CounterVec
	consulFailStatic  prometheus.Counter
	consulStaleState  prometheus.Gauge
	consulWatches     *prometheus.GaugeVec
	consulRequests    *prometheus.CounterVec
	policyReloads     *prometheus.CounterVec
	policyWarnings    prometheus.Gauge
	ready             prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connectedProxies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_connected_proxies",
			Help: "Envoy xDS streams open now, by protocol (sotw or delta).",
		}, []string{"protocol"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_xds_pushes_total",
			Help: "xDS responses sent to Envoy, by resource type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchyard_xds_convergence_seconds",
			Help:    "From a Consul or policy change reaching Switchyard to an Envoy accepting (ACK) the config it produced, per Envoy and xDS type.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_xds_nacks_total",
			Help: "xDS responses Envoy rejected (NACKed), by resource type.",
		}, []string{"type"}),
		rejectingProxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_xds_rejecting_proxies",
			Help: "Envoy xDS streams whose latest response of some type was NACKed and not since replaced by an accepted one: they run older config. /debug/proxies says which and why.",
		}),
		refusedStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_xds_refused_streams_total",
			Help: "xDS streams ended because of a request Switchyard refuses, by reason: certificate (the client certificate does not name the proxy group asked for, xds.client-cert-groups), type (a type Switchyard does not serve), node (a node.cluster that cannot name a proxy group, or that changed on one stream).",
		}, []string{"reason"}),
		snapshotBuild: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchyard_snapshot_build_seconds",
			Help:    "Time to translate inputs and build every proxy group's xDS snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		rateLimitDomains: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_ratelimit_domains",
			Help: "Rate limit domains (one per proxy group with global rate limits) in the config served to the rate limit service.",
		}),
		rateLimitLimits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_ratelimit_limits",
			Help: "Descriptors with a limit (shadow ones included; a limit by a header counts twice: with the header and without) served to the rate limit service, by domain (switchyard_<group>).",
		}, []string{"domain"}),
		snapshotErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_snapshot_errors_total",
			Help: "Proxy group builds that failed (a bug); the group's last good snapshot kept serving, other groups were built as usual.",
		}),
		sidecarProblems: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_sidecar_problems_total",
			Help: "Problems found in Connect sidecar registrations (an unknown protocol, a duplicate bind port, an unsupported upstream): each is logged once with the proxy ID; the rest of the mesh is served.",
		}),
		leafExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_mesh_leaf_expiry_timestamp_seconds",
			Help: "When each service's Connect leaf certificate, as served to its sidecars, expires (Unix time). Consul renews leaves well before; alert when time() comes within hours of it: renewal is failing and the last good certificate is being served.",
		}, []string{"service"}),
		meshWarnings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_mesh_warnings",
			Help: "Warnings in the current mesh translation (a sidecar or upstream that cannot be served, an intention or policy a tcp service cannot apply); the log says which.",
		}),
		failingSidecars: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_failing_sidecars",
			Help: "Connect sidecars whose latest build failed: their Envoys run the last good config. The log names each and why.",
		}),
		failingGroups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_failing_groups",
			Help: "Proxy groups whose latest build failed: their Envoys run the last good config. The log names each group and why.",
		}),
		consulWatchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_consul_watch_errors_total",
			Help: "Consul queries that failed, by kind: services, health (a service's own blocking query), health-state (the shared queries on critical and warning checks), read (a re-read of a multiplexed service), or mesh (the Connect sidecar watches and re-reads).",
		}, []string{"kind"}),
		consulWatches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_consul_watches",
			Help: "Consul watches now, by kind: services, health, health-state and mesh are blocking queries (each holds a connection over plain HTTP); multiplexed counts the services watched without a query of their own (past consul.max-service-watches), mesh-multiplexed the mesh's proxies, destinations and leaves past consul.max-mesh-watches.",
		}, []string{"kind"}),
		consulRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_consul_requests_total",
			Help: "Requests to Consul, by kind (services, health, health-state, read, mesh, mesh-read) and result (ok, throttled: Consul answered 429, error); its rate is Switchyard's load on Consul.",
		}, []string{"kind", "result"}),
		consulStaleState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_consul_saved_view",
			Help: "1 while Switchyard serves Consul's last view saved in state.dir because Consul has not answered since the start; 0 once it does.",
		}),
		consulFailStatic: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchyard_consul_fail_static_total",
			Help: "Times a suspect empty Consul answer was ignored and the last known instances kept.",
		}),
		policyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_policy_reloads_total",
			Help: "Policy reloads, by result (ok or error). On error the last good policy keeps serving.",
		}, []string{"result"}),
		policyWarnings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_translation_warnings",
			Help: "Warnings in the current translation (for example routes to services Consul does not know).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchyard_ready",
			Help: "1 once Consul is synced, the policy is valid and snapshots are served.",
		}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connectedProxies, m.pushes, m.nacks, m.convergence, m.rejectingProxies, m.refusedStreams, m.snapshotBuild, m.snapshotErrors, m.rateLimitDomains, m.rateLimitLimits, m.failingGroups, m.sidecarProblems, m.failingSidecars, m.leafExpiry, m.meshWarnings,
		m.consulWatchErrors, m.consulFailStatic, m.consulStaleState, m.consulWatches, m.consulRequests, m.policyReloads, m.policyWarnings, m.ready,
	)
	// Pre-create the error series so they read 0, not absent, before the
	// first failure: alerts on rate() need them.
	m.policyReloads.WithLabelValues("error")
	m.policyReloads.WithLabelValues("ok")
	for _, k := range []string{registry.KindServices, registry.KindHealth, registry.KindHealthState, registry.KindRead, registry.KindMesh} {
		m.consulWatchErrors.WithLabelValues(k)
		for _, r := range []string{registry.ResultOK, registry.ResultThrottled, registry.ResultError} {
			m.consulRequests.WithLabelValues(k, r)
		}
	}
	for _, k := range []string{registry.KindServices, registry.KindHealth, registry.KindHealthState, registry.KindMultiplexed, registry.KindMesh} {
		m.consulWatches.WithLabelValues(k)
	}
	for _, r := range []string{"certificate", "type", "node"} {
		m.refusedStreams.WithLabelValues(r)
	}
	for _, p := range []string{"sotw", "delta"} {
		m.connectedProxies.WithLabelValues(p)
	}
	for _, typ := range envoy.Types {
		m.pushes.WithLabelValues(typeLabel(typ))
		m.nacks.WithLabelValues(typeLabel(typ))
		m.convergence.WithLabelValues(typeLabel(typ))
	}
	return m
}

// consulRequest counts one Consul request (registry.Hooks.Request).
func (m *metrics) consulRequest(kind, result string) {
	m.consulRequests.WithLabelValues(kind, result).Inc()
}

// consulWatch moves the Consul watch count (registry.Hooks.Watches).
func (m *metrics) consulWatch(kind string, delta int) {
	m.consulWatches.WithLabelValues(kind).Add(float64(delta))
}

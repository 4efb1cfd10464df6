package controlplane

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-io/switchyard/envoy"
	"github.com/switchyard-io/switchyard/policy"
)

// The rate limit service (envoyproxy/ratelimit started with
// CONFIG_TYPE=GRPC_XDS_SOTW and CONFIG_GRPC_XDS_SERVER_URL pointing at
// Switchyard's xDS address) takes its limits from Switchyard: one
// RateLimitConfig per proxy group with a rateLimitService, whose domain is
// the group's (ir.RateLimitDomain), so two groups never share counters. It asks on state-of-the-world ADS, for every RateLimitConfig
// (no names), with an empty node.cluster; that empty cluster is what
// marks its streams, and they are served one snapshot, under
// rateLimitKey, holding every group's limits. A policy edit changes the
// limits it enforces within a push, without a restart.

// rateLimitKey is the snapshot key of the rate limit service's streams. A
// group name cannot hold a colon, so it never meets a group's.
const rateLimitKey = "ratelimit:service"

// RateLimitCertName is the name (a DNS SAN or the common name) the rate
// limit service's xDS client certificate must carry when groups are bound
// to certificates (xds.client-cert-groups). It has a dot, so it can be
// neither a group's name nor a sidecar's (sidecar.<id>).
const RateLimitCertName = "ratelimit.switchyard"

// servedTypes is every type URL Switchyard serves: the Envoys' types and
// the rate limit service's, in the order a change goes out.
var servedTypeURLs = append(slices.Clone(envoy.Types), resource.RateLimitConfigType)

// isRateLimitService reports whether node is the rate limit service's.
func isRateLimitService(clusterName string) bool { return clusterName == "" }

// rateLimitSnapshot is the rate limit service's snapshot: every served
// group's limits, by domain. groups are the published group snapshots,
// sidecars and the rate limit service's own included (they hold no
// limits).
func rateLimitSnapshot(groups map[string]*groupSnapshot) *groupSnapshot {
	var items []types.Resource
	digests := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		if !policy.ValidName(key) {
			continue // a sidecar's, or this very snapshot
		}
		for _, c := range groups[key].rateLimits {
			items = append(items, c)
			digests[c.GetName()] = rateLimitDigest(c)
		}
	}
	v := typeVersion(items, digests)
	snap := &cache.Snapshot{VersionMap: map[string]map[string]string{resource.RateLimitConfigType: digests}}
	snap.Resources[types.RateLimitConfig] = cache.NewResources(v, items)
	return &groupSnapshot{
		group:     rateLimitKey,
		resources: envoy.Resources{resource.RateLimitConfigType: items},
		versions:  map[resource.Type]string{resource.RateLimitConfigType: v},
		snapshot:  snap,
	}
}

// countLimits counts the descriptors, nested ones included, that carry a
// limit.
func countLimits(ds []*rlsconfv3.RateLimitDescriptor) int {
	n := 0
	for _, d := range ds {
		if d.GetRateLimit() != nil {
			n++
		}
		n += countLimits(d.GetDescriptors())
	}
	return n
}

// rateLimitDigest hashes a RateLimitConfig's deterministic encoding, as
// the Envoy resources' digests do.
func rateLimitDigest(c *rlsconfv3.RateLimitConfig) string {
	data, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c) // a generated message always marshals
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// publishRateLimits publishes the rate limit service's snapshot when the
// groups' limits changed, and always once: the service opens no port
// until its first answer, even an empty one.
func (p *publisher) publishRateLimits() {
	p.mu.Lock()
	gs := rateLimitSnapshot(p.groups)
	old := p.groups[rateLimitKey]
	p.mu.Unlock()
	if old != nil && sameVersions(old, gs) {
		return
	}
	if p.put(gs) {
		domains := make([]string, 0, len(gs.resources[resource.RateLimitConfigType]))
		limits := map[string]int{}
		for _, r := range gs.resources[resource.RateLimitConfigType] {
			c := r.(*rlsconfv3.RateLimitConfig)
			domains = append(domains, c.GetDomain())
			limits[c.GetDomain()] += countLimits(c.GetDescriptors())
		}
		p.metrics.rateLimitDomains.Set(float64(len(domains)))
		for d := range p.rateLimitSeries {
			if _, ok := limits[d]; !ok {
				p.metrics.rateLimitLimits.DeleteLabelValues(d)
			}
		}
		for d, n := range limits {
			p.metrics.rateLimitLimits.WithLabelValues(d).Set(float64(n))
		}
		p.rateLimitSeries = limits
		p.log.Info("rate limit service config published", "domains", strings.Join(domains, ","), "version", gs.versions[resource.RateLimitConfigType])
	}
}

package controlplane

import (
	"context"
	"sort"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
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
		grpc.ForceServerCodecV2(newXDSCodec()),
	}
	if s.xdsTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.xdsTLS)))
	}
	gs := grpc.NewServer(opts...)
	xds := serverv3.NewServer(ctx, s.cache, s.px.callbacks())
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	return gs
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
	m := make(map[string]string, len(servedTypeURLs))
	for _, typ := range servedTypeURLs {
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

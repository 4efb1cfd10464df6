package xdscache

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
)

var (
	benchStreams   = flag.Int("streams", 1000, "delta streams (watches) in the benchmarks")
	benchResources = flag.Int("resources", 1000, "services (a cluster and an endpoint assignment each) in the benchmarks")
)

// caches are the two caches compared: go-control-plane's SnapshotCache
// (what Switchyard used) and this package's.
var caches = []struct {
	name string
	make func() interface {
		cache.Cache
		SetSnapshot(context.Context, string, cache.ResourceSnapshot) error
	}
}{
	{"snapshot-cache", func() interface {
		cache.Cache
		SetSnapshot(context.Context, string, cache.ResourceSnapshot) error
	} {
		return cache.NewSnapshotCache(true, nodeKey{}, nil)
	}},
	{"linear-cache", func() interface {
		cache.Cache
		SetSnapshot(context.Context, string, cache.ResourceSnapshot) error
	} {
		return &linearEDS{LinearCache: cache.NewLinearCache(resource.EndpointType)}
	}},
	{"xdscache", func() interface {
		cache.Cache
		SetSnapshot(context.Context, string, cache.ResourceSnapshot) error
	} {
		return New(nodeKey{}, order, true)
	}},
}

// linearEDS puts go-control-plane's LinearCache, the other candidate, in
// the benchmarks: one per type (behind a MuxCache in a real server), fed
// the changed endpoint assignments of each snapshot. Endpoints only: what
// the benchmarks watch.
type linearEDS struct {
	*cache.LinearCache
	versions map[string]string
}

func (l *linearEDS) SetSnapshot(_ context.Context, _ string, snap cache.ResourceSnapshot) error {
	versions := snap.GetVersionMap(resource.EndpointType)
	changed := map[string]types.Resource{}
	for name, r := range snap.GetResourcesAndTTL(resource.EndpointType) {
		if l.versions[name] != versions[name] {
			changed[name] = r.Resource
		}
	}
	var removed []string
	for name := range l.versions {
		if _, ok := versions[name]; !ok {
			removed = append(removed, name)
		}
	}
	l.versions = versions
	return l.UpdateResources(changed, removed)
}

// BenchmarkHealthFlip measures what the cache costs per change, without
// gRPC: -streams wildcard delta watches of endpoints in one group of
// -resources services (10 endpoints each). Each op flips one service's
// endpoints, sets the snapshot, takes every stream's answer as the server
// would (its response message, its version map) and opens the stream's
// next watch, as its ACK does. ns/op is the cache's CPU per change.
func BenchmarkHealthFlip(b *testing.B) {
	for _, cc := range caches {
		b.Run(fmt.Sprintf("%s/%dx%d", cc.name, *benchStreams, *benchResources), func(b *testing.B) {
			c := cc.make()
			e := newEstate(*benchResources, 10)
			if err := c.SetSnapshot(context.Background(), "edge", e.snapshot()); err != nil {
				b.Fatal(err)
			}
			node := &corev3.Node{Id: "n", Cluster: "edge"}
			type stream struct {
				sub streamv3.Subscription
				ch  chan cache.DeltaResponse
			}
			streams := make([]*stream, *benchStreams)
			watch := func(s *stream, nonce string) {
				req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResponseNonce: nonce}
				if _, err := c.CreateDeltaWatch(req, s.sub, s.ch); err != nil {
					b.Fatal(err)
				}
			}
			take := func(s *stream) {
				resp := <-s.ch
				if _, err := resp.GetDeltaDiscoveryResponse(); err != nil {
					b.Fatal(err)
				}
				s.sub.SetReturnedResources(resp.GetNextVersionMap())
			}
			for i := range streams {
				s := &stream{sub: streamv3.NewDeltaSubscription(nil, nil, nil, true), ch: make(chan cache.DeltaResponse, 20)}
				streams[i] = s
				watch(s, "")
				take(s)
				watch(s, "1")
			}
			snaps := make([]*cache.Snapshot, 0, 64)
			for i := range cap(snaps) {
				e.gen[svc(i%*benchResources)]++
				snaps = append(snaps, e.snapshot())
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if err := c.SetSnapshot(context.Background(), "edge", snaps[i%len(snaps)]); err != nil {
					b.Fatal(err)
				}
				i++
				for _, s := range streams {
					take(s)
					watch(s, "2")
				}
			}
		})
	}
}

// BenchmarkFanout measures a change reaching -streams delta ADS clients
// over gRPC (in this process, on loopback; 100 streams per connection),
// each subscribed to every endpoint assignment of -resources services and
// ACKing like Envoy. Each op changes one service's endpoints and waits
// for the last client; first-ms and last-ms are the median times to the
// first and the last client, last-p99-ms the slowest op's last client.
func BenchmarkFanout(b *testing.B) {
	for _, cc := range caches {
		b.Run(fmt.Sprintf("%s/%dx%d", cc.name, *benchStreams, *benchResources), func(b *testing.B) {
			c := cc.make()
			e := newEstate(*benchResources, 10)
			if err := c.SetSnapshot(context.Background(), "edge", e.snapshot()); err != nil {
				b.Fatal(err)
			}
			addr := serve(b, c, nil)
			var (
				target  atomic.Pointer[string] // the service every client must see change
				arrived = make(chan time.Time, *benchStreams)
			)
			var conn *grpc.ClientConn
			clients := make([]*deltaClient, *benchStreams)
			for i := range clients {
				if i%100 == 0 {
					conn = dial(b, addr)
				}
				cl := newDeltaClient(b, conn, fmt.Sprintf("c%d", i), true)
				var seen string
				cl.onChange = func(cl *deltaClient) {
					// SnapshotCache versions delta resources by its own hash,
					// not the snapshot's: look for the name in the response
					// (nothing else changes it while an op waits).
					t := target.Load()
					if t == nil || *t == seen {
						return
					}
					cl.mu.Lock()
					resp := cl.got[len(cl.got)-1]
					cl.got = cl.got[:0] // keep memory flat
					cl.mu.Unlock()
					if slices.Contains(names(resp), *t) {
						seen = *t
						arrived <- time.Now()
					}
				}
				cl.subscribe(b, resource.EndpointType, nil, nil)
				clients[i] = cl
			}
			for _, cl := range clients {
				cl.waitFor(b, "initial sync", count(resource.EndpointType, *benchResources))
			}
			var first, last []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				name := svc(i % *benchResources)
				i++
				e.gen[name]++
				snap := e.snapshot()
				target.Store(&name)
				start := time.Now()
				if err := c.SetSnapshot(context.Background(), "edge", snap); err != nil {
					b.Fatal(err)
				}
				var f, l time.Time
				for n := range *benchStreams {
					select {
					case at := <-arrived:
						if n == 0 {
							f = at
						}
						l = at
					case <-time.After(time.Minute):
						b.Fatalf("op %d: %d of %d clients got the change", i, n, *benchStreams)
					}
				}
				first = append(first, f.Sub(start))
				last = append(last, l.Sub(start))
			}
			b.StopTimer()
			slices.Sort(first)
			slices.Sort(last)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
			b.ReportMetric(ms(first[len(first)/2]), "first-ms")
			b.ReportMetric(ms(last[len(last)/2]), "last-ms")
			b.ReportMetric(ms(last[min(len(last)-1, len(last)*99/100)]), "last-p99-ms")
		})
	}
}

// BenchmarkFanoutSotw is BenchmarkFanout with state-of-the-world clients,
// each asking for every endpoint assignment: an op waits until every
// client has acknowledged the endpoints' new version.
func BenchmarkFanoutSotw(b *testing.B) {
	for _, cc := range caches {
		if cc.name == "linear-cache" {
			continue // it serves no snapshot versions to wait for
		}
		b.Run(fmt.Sprintf("%s/%dx%d", cc.name, *benchStreams, *benchResources), func(b *testing.B) {
			c := cc.make()
			e := newEstate(*benchResources, 10)
			if err := c.SetSnapshot(context.Background(), "edge", e.snapshot()); err != nil {
				b.Fatal(err)
			}
			addr := serve(b, c, nil)
			var (
				target  atomic.Pointer[string] // the endpoints' version every client must reach
				arrived = make(chan time.Time, *benchStreams)
				bytes   atomic.Int64
			)
			v0 := e.snapshot().GetVersion(resource.EndpointType)
			target.Store(&v0)
			var conn *grpc.ClientConn
			for i := range *benchStreams {
				if i%100 == 0 {
					conn = dial(b, addr)
				}
				stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				node := &corev3.Node{Id: fmt.Sprintf("c%d", i), Cluster: "edge"}
				if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType}); err != nil {
					b.Fatal(err)
				}
				go func() {
					for {
						resp, err := stream.Recv()
						if err != nil {
							return
						}
						for _, r := range resp.GetResources() {
							bytes.Add(int64(len(r.GetValue())))
						}
						if t := target.Load(); t != nil && *t == resp.GetVersionInfo() {
							arrived <- time.Now()
						}
						if stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType,
							VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}) != nil {
							return
						}
					}
				}()
			}
			for n := range *benchStreams { // the first full answers
				select {
				case <-arrived:
				case <-time.After(5 * time.Minute):
					b.Fatalf("initial sync: %d of %d clients", n, *benchStreams)
				}
			}
			var last []time.Duration
			bytes.Store(0)
			b.ResetTimer()
			i := 0
			for b.Loop() {
				name := svc(i % *benchResources)
				i++
				e.gen[name]++
				snap := e.snapshot()
				v := snap.GetVersion(resource.EndpointType)
				target.Store(&v)
				start := time.Now()
				if err := c.SetSnapshot(context.Background(), "edge", snap); err != nil {
					b.Fatal(err)
				}
				var l time.Time
				for n := range *benchStreams {
					select {
					case l = <-arrived:
					case <-time.After(time.Minute):
						b.Fatalf("op %d: %d of %d clients got the change", i, n, *benchStreams)
					}
				}
				last = append(last, l.Sub(start))
			}
			b.StopTimer()
			slices.Sort(last)
			b.ReportMetric(float64(last[len(last)/2].Microseconds())/1e3, "last-ms")
			b.ReportMetric(float64(bytes.Load())/float64(b.N)/1e6, "resource-MB/op")
		})
	}
}

package xdscache

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// Random changes and subscription changes, each followed by a check that
// every stream holds exactly what the protocol says it should: a wildcard
// stream every resource at its current version, a named stream what it
// names and exists. Checks the fast paths (a change answered from the
// changed names, an ACK recognized as in sync, or as in sync with a state
// a burst of changes replaced since, version maps updated in place)
// against the rules, with the race detector on.
func TestRandomChangesKeepStreamsExact(t *testing.T) {
	c := New(nodeKey{}, order, true)
	e := newEstate(30, 2)
	set(t, c, e)
	addr := serve(t, c, nil)
	wild := newDeltaClient(t, dial(t, addr), "wild", true)
	wild.subscribe(t, resource.ClusterType, nil, nil)
	wild.subscribe(t, resource.EndpointType, []string{"*"}, nil) // explicit: a legacy wildcard ignores unsubscriptions
	named := newDeltaClient(t, dial(t, addr), "named", true)
	subscribed := map[string]bool{svc(1): true, svc(2): true}
	named.subscribe(t, resource.EndpointType, []string{svc(1), svc(2)}, nil)
	sotw := newSotwClient(t, dial(t, addr), "sotw")
	sotw.request(t, resource.ClusterType, nil)
	sotw.request(t, resource.EndpointType, nil)

	rng := rand.New(rand.NewPCG(1, 2))
	next := 30
	for step := range 150 {
		var what string
		switch op := rng.IntN(11); {
		case op == 10: // a burst: changes faster than the streams ACK
			for range 3 {
				name := svc(rng.IntN(next))
				if _, ok := e.gen[name]; ok {
					e.gen[name]++
				}
				set(t, c, e)
			}
			what = "burst of flips"
		case op < 4: // flip a service
			name := svc(rng.IntN(next))
			if _, ok := e.gen[name]; ok {
				e.gen[name]++
			}
			what = "flip " + name
		case op < 5: // add a service
			e.gen[svc(next)] = 0
			what = "add " + svc(next)
			next++
		case op < 6: // remove one
			name := svc(rng.IntN(next))
			delete(e.gen, name)
			what = "remove " + name
		case op < 8: // the named stream subscribes to one, unsubscribes another
			add, drop := svc(rng.IntN(next)), svc(rng.IntN(next))
			if add == drop {
				continue
			}
			subscribed[add] = true
			delete(subscribed, drop)
			named.mu.Lock()
			delete(named.have[resource.EndpointType], drop) // Envoy forgets what it unsubscribes
			named.mu.Unlock()
			named.subscribe(t, resource.EndpointType, []string{add}, []string{drop})
			what = fmt.Sprintf("named: +%s -%s", add, drop)
		default: // the wildcard stream unsubscribes a name: it must be sent again
			name := svc(rng.IntN(next))
			wild.subscribe(t, resource.EndpointType, nil, []string{name})
			what = "wildcard unsubscribes " + name
		}
		set(t, c, e)
		snap := e.snapshot()
		clusters, endpoints := snap.GetVersionMap(resource.ClusterType), snap.GetVersionMap(resource.EndpointType)
		wantNamed := map[string]string{}
		for name := range subscribed {
			if v, ok := endpoints[name]; ok {
				wantNamed[name] = v
			}
		}
		label := fmt.Sprintf("step %d (%s)", step, what)
		wild.waitFor(t, label+": wildcard stream", func(h map[string]map[string]string) bool {
			return maps.Equal(h[resource.ClusterType], clusters) && maps.Equal(h[resource.EndpointType], endpoints)
		})
		named.waitFor(t, label+": named stream", func(h map[string]map[string]string) bool {
			return maps.Equal(h[resource.EndpointType], wantNamed)
		})
		want := snap.GetVersion(resource.ClusterType)
		sotw.waitFor(t, resource.ClusterType, label+": state-of-the-world clusters", func(r *discoveryv3.DiscoveryResponse) bool {
			return r.GetVersionInfo() == want && len(r.GetResources()) == len(clusters)
		})
		want = snap.GetVersion(resource.EndpointType)
		sotw.waitFor(t, resource.EndpointType, label+": state-of-the-world endpoints", func(r *discoveryv3.DiscoveryResponse) bool {
			if r.GetVersionInfo() != want {
				return false
			}
			for name := range endpoints { // what it holds of each is current
				b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e.cla(name))
				if err != nil || !bytes.Equal(sotw.have[resource.EndpointType][name], b) {
					return false
				}
			}
			return true
		})
	}
}

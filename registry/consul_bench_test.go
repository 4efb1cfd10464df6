package registry

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/switchyard-io/switchyard/test/testenv"
)

// BenchmarkWatcherFlip measures the registry's part of a health flip, on
// a real dev agent over plain HTTP with 1,000 services (100 with a query
// of their own, 900 multiplexed): from the Consul write (a check set
// critical, then passing again) until a published snapshot shows it.
//
//	go test -run '^$' -bench WatcherFlip -benchtime 40x ./registry/
func BenchmarkWatcherFlip(b *testing.B) {
	const total = 1000
	c := testenv.Consul(b)
	client := c.Client(b)
	names := registerCatalog(b, client, total)
	var (
		mu     sync.Mutex
		latest *Snapshot
	)
	w, err := NewWatcher(Config{Address: c.HTTPAddr, AllowStale: true}, nil, Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	w.Want(names)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			latest = s
		})
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	health := func(name string) (Health, bool) {
		mu.Lock()
		defer mu.Unlock()
		svc, ok := latest.Service(name)
		if !ok || len(svc.Instances) != 1 {
			return 0, false
		}
		return svc.Instances[0].Health, true
	}
	testenv.Eventually(b, time.Minute, "every service published", func() error {
		for _, name := range names {
			if _, ok := health(name); !ok {
				return context.DeadlineExceeded
			}
		}
		return nil
	})
	for _, bc := range []struct {
		name string
		svc  int
	}{{"own-query", 5}, {"multiplexed", 950}} {
		b.Run(bc.name, func(b *testing.B) {
			var took []time.Duration
			for i := range b.N {
				status, want := consulapi.HealthCritical, Unhealthy
				if i%2 == 1 {
					status, want = consulapi.HealthPassing, Healthy
				}
				start := time.Now()
				setCheck(b, client, bc.svc, status)
				for {
					if h, _ := health(names[bc.svc]); h == want {
						break
					}
					if time.Since(start) > time.Minute {
						b.Fatalf("%s not %s a minute after the write", names[bc.svc], want)
					}
					time.Sleep(200 * time.Microsecond)
				}
				took = append(took, time.Since(start))
				time.Sleep(20 * time.Millisecond) // let the next flip start from quiet
			}
			slices.Sort(took)
			var sum time.Duration
			for _, d := range took {
				sum += d
			}
			b.ReportMetric(float64(sum.Nanoseconds())/float64(len(took)), "ns/op") // not the pauses between flips
			pct := func(p float64) float64 {
				return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1e3
			}
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.9), "p90-ms")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1e3, "max-ms")
		})
	}
}

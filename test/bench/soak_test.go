package bench

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

var (
	soakDuration = flag.Duration("soak", 30*time.Second, "how long BenchmarkFlipSoak flips")
	soakRate     = flag.Int("soak-rate", 100, "health flips a second in BenchmarkFlipSoak")
	soakProxies  = flag.Int("soak-proxies", 200, "xDS clients in BenchmarkFlipSoak")
)

// BenchmarkFlipSoak keeps Switchyard busy: -soak-rate health flips a
// second for -soak, round robin over the services (so one service flips
// again only after services/rate seconds), with -soak-proxies clients of
// one edge group asking for every endpoint assignment. Flips are written
// to Consul on a clock, up to maxWrites at once, whether or not the last
// has arrived (flips/s is the rate reached); each is timed from its Consul
// write until the last client saw it, and consul-write-* is the write's
// own share (a transaction's round trip, which a busy agent stretches). A
// flip some client had not seen a second before its service flips again
// counts as missed (as does one a client had already: it missed the
// service's previous flip); the log shows the flips by 30 s window.
// Switchyard's RSS, Go heap and goroutines are read from its /metrics
// before the soak, every 5 s during it and at its end, to show whether
// anything grows; Switchyard exports no queue length, so the goroutine
// count stands in for one. Switchyard's and Consul's CPU are reported as a
// share of one core.
func BenchmarkFlipSoak(b *testing.B) {
	w, _, xds := startControlPlane(b, estate{services: *services, instances: *instances})
	if period := time.Duration(w.services) * time.Second / time.Duration(*soakRate); period < 3*time.Second {
		b.Fatalf("-services %d at -soak-rate %d flips a service every %s; want 3 s or more", w.services, *soakRate, period)
	}
	clients := startClients(b, xds, *soakProxies, edgeNode(0), edgeEndpoints(w.services))
	if _, err := waitAllFull(clients, nil, 5*time.Minute); err != nil {
		b.Fatalf("first sync: %v", err)
	}
	w.timeFlips(b, clients, 10) // warm up

	b.Run("soak", func(b *testing.B) {
		var took, writes []time.Duration
		var missed, flips int
		var cpu, secs float64
		var samples []metricsSample
		var timeline []timedFlip
		consul0 := procCPU(b, w.agent.Pid())
		for range b.N {
			start := w.sample(b)
			cpu0 := w.cpuSeconds(b)
			r := w.soak(b, clients, *soakDuration, *soakRate)
			took = append(took, r.took...)
			timeline = append(timeline, r.timeline...)
			writes = append(writes, r.writes...)
			missed += r.missed
			flips += r.flips
			cpu += w.cpuSeconds(b) - cpu0
			secs += r.elapsed.Seconds()
			samples = append(append([]metricsSample{start}, r.samples...), w.sample(b))
		}
		if len(took) == 0 {
			b.Fatalf("no flip reached every client (%d missed)", missed)
		}
		report(b, took)
		percentiles(b, "consul-write-", writes)
		b.ReportMetric(float64(missed), "missed")
		b.ReportMetric(float64(flips)/secs, "flips/s")
		b.ReportMetric(1e3*cpu/float64(flips), "switchyard-cpu-ms/flip")
		b.ReportMetric(100*cpu/secs, "switchyard-cpu-%")
		b.ReportMetric(100*(procCPU(b, w.agent.Pid())-consul0)/secs, "consul-cpu-%")
		first, last := samples[0], samples[len(samples)-1]
		var peak metricsSample
		for _, s := range samples {
			peak = metricsSample{max(peak.rss, s.rss), max(peak.heap, s.heap), max(peak.goroutines, s.goroutines)}
		}
		b.ReportMetric(first.rss/1e6, "start-MB")
		b.ReportMetric(last.rss/1e6, "end-MB")
		b.ReportMetric(peak.rss/1e6, "max-MB")
		b.ReportMetric(first.heap/1e6, "start-heap-MB")
		b.ReportMetric(last.heap/1e6, "end-heap-MB")
		b.ReportMetric(first.goroutines, "start-goroutines")
		b.ReportMetric(last.goroutines, "end-goroutines")
		b.ReportMetric(peak.goroutines, "max-goroutines")
		b.ReportMetric(float64(len(clients)), "proxies")
		b.Logf("samples every 5 s (RSS MB, heap MB, goroutines): %s", sampleList(samples))
		b.Logf("flips by 30 s window: %s", windows(timeline))
	})
}

// maxWrites bounds the Consul writes in flight in a soak: enough for 100
// a second when a write takes up to 300 ms.
const maxWrites = 32

// soakResult is what one soak measured.
type soakResult struct {
	took          []time.Duration // each flip every client saw: write -> last client
	writes        []time.Duration // each Consul write's own time
	timeline      []timedFlip     // every flip, in order
	missed, flips int
	elapsed       time.Duration
	samples       []metricsSample
}

// timedFlip is a flip's write and how long until the last client saw it
// (-1: missed).
type timedFlip struct {
	at   time.Time
	took time.Duration
}

// windows prints the timeline in windows of 30 s: flips, missed, p50 and
// p99 of the rest; a queue that grows shows as times that grow.
func windows(timeline []timedFlip) string {
	var s strings.Builder
	for len(timeline) > 0 {
		end := timeline[0].at.Add(30 * time.Second)
		var took []time.Duration
		n := 0
		for n < len(timeline) && timeline[n].at.Before(end) {
			if timeline[n].took >= 0 {
				took = append(took, timeline[n].took)
			}
			n++
		}
		slices.Sort(took)
		fmt.Fprintf(&s, "\n  %d flips, %d missed", n, n-len(took))
		if len(took) > 0 {
			fmt.Fprintf(&s, ", p50 %s, p99 %s", took[len(took)/2].Round(time.Millisecond), took[len(took)*99/100].Round(time.Millisecond))
		}
		timeline = timeline[n:]
	}
	return s.String()
}

// soakFlip is a flip written to Consul.
type soakFlip struct {
	svc      int
	critical bool
	at       time.Time // just before the write
}

// soak flips at rate for d (see BenchmarkFlipSoak) and returns once every
// flip is timed or missed.
func (w *world) soak(b *testing.B, clients []*xdsClient, d time.Duration, rate int) soakResult {
	b.Helper()
	period := time.Duration(w.services) * time.Second / time.Duration(rate)
	written := make(chan soakFlip, 2*rate*int(period/time.Second+1))
	var r soakResult
	checked := make(chan struct{})
	go func() { // the checker: each flip a second after it, in order
		defer close(checked)
		for f := range written {
			time.Sleep(time.Until(f.at.Add(time.Second)))
			last, ok := time.Time{}, true
			for _, c := range clients {
				at, seen := c.wait(edgeEndpoint(f.svc), !f.critical, f.at.Add(period-time.Second))
				// Seen before the write: the client missed the service's
				// previous flip, and cannot tell this one.
				if ok = seen && !at.Before(f.at); !ok {
					break
				}
				if at.After(last) {
					last = at
				}
			}
			d := time.Duration(-1)
			if ok {
				d = last.Sub(f.at)
				r.took = append(r.took, d)
			} else {
				r.missed++
			}
			r.timeline = append(r.timeline, timedFlip{f.at, d})
		}
	}()

	var mu sync.Mutex // guards r.samples, r.writes and failure
	var failure error
	var writers sync.WaitGroup
	inFlight := make(chan struct{}, maxWrites)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	sampleTick := time.NewTicker(5 * time.Second)
	defer sampleTick.Stop()
	start := time.Now()
	for end := time.After(d); ; {
		select {
		case <-tick.C:
			// A tick a busy machine delayed or dropped is made up here,
			// so the rate holds on average.
			for due := int(time.Since(start) * time.Duration(rate) / time.Second); r.flips < due; r.flips++ {
				svc, critical := w.nextFlip()
				inFlight <- struct{}{}
				writers.Go(func() {
					defer func() { <-inFlight }()
					at := time.Now()
					err := w.writeCheck(w.check(svc, 0, health(critical)))
					mu.Lock()
					r.writes = append(r.writes, time.Since(at))
					if err != nil {
						failure = err
					}
					mu.Unlock()
					if err == nil {
						written <- soakFlip{svc: svc, critical: critical, at: at}
					}
				})
			}
		case <-sampleTick.C:
			writers.Go(func() {
				s, err := w.readSample()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failure = err
				}
				r.samples = append(r.samples, s)
			})
		case <-end:
			tick.Stop()
			writers.Wait()
			r.elapsed = time.Since(start)
			close(written)
			<-checked
			if failure != nil {
				b.Fatal(failure)
			}
			return r
		}
	}
}

// writeCheck is setCheck for goroutines other than the benchmark's: it
// returns its error.
func (w *world) writeCheck(check consulapi.HealthCheck) error {
	ok, _, _, err := w.consul.Txn().Txn(consulapi.TxnOps{{Check: &consulapi.CheckTxnOp{Verb: consulapi.CheckSet, Check: check}}}, nil)
	if err == nil && !ok {
		err = fmt.Errorf("transaction rolled back")
	}
	if err != nil {
		return fmt.Errorf("flip %s: %w", check.CheckID, err)
	}
	return nil
}

// metricsSample is Switchyard's resident set, Go heap in use (bytes) and
// goroutines at one moment.
type metricsSample struct{ rss, heap, goroutines float64 }

// sample reads a metricsSample from Switchyard's /metrics.
func (w *world) sample(b *testing.B) metricsSample {
	b.Helper()
	s, err := w.readSample()
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// readSample is sample for goroutines other than the benchmark's: it
// returns its error.
func (w *world) readSample() (metricsSample, error) {
	var text string
	if err := get(w.switchyard, "/metrics", &text); err != nil {
		return metricsSample{}, err
	}
	var s metricsSample
	var err error
	for name, v := range map[string]*float64{"process_resident_memory_bytes": &s.rss, "go_memstats_heap_inuse_bytes": &s.heap, "go_goroutines": &s.goroutines} {
		if *v, err = metricIn(text, name); err != nil {
			return s, err
		}
	}
	return s, nil
}

// sampleList prints samples as "rss/heap/goroutines" in MB.
func sampleList(samples []metricsSample) string {
	var s strings.Builder
	for _, x := range samples {
		fmt.Fprintf(&s, " %.0f/%.0f/%.0f", x.rss/1e6, x.heap/1e6, x.goroutines)
	}
	return s.String()
}

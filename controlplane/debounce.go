package controlplane

import (
	"context"
	"time"
)

// debounce turns change signals into rebuilds. A signal after a quiet
// spell rebuilds at once: a lone change, the common case, waits for
// nothing. Other signals are batched: fn runs once no signal has arrived
// for holdoff, or once maxDelay has passed since the first signal of the
// batch, whichever comes first. A Consul flap that touches fifty services
// becomes two pushes (its first change, then the rest), and a steady
// stream of changes is batched, still pushed at least every maxDelay.
//
// The quiet spell is ten times the last rebuild's duration, at least
// holdoff and at most maxDelay: rebuilding at once then costs at most a
// tenth of the time, whatever the rebuild costs. A health flip's rebuild
// takes a millisecond or two (the health path), so flips a few tens of
// milliseconds apart are each pushed at once; a stream of 100 changes a
// second is still batched (rebuilding for each cost more than it saved:
// measured with BenchmarkFlipSoak).
func debounce(ctx context.Context, signals <-chan struct{}, holdoff, maxDelay time.Duration, fn func()) {
	var (
		timer   *time.Timer
		timerC  <-chan time.Time
		first   time.Time
		pending bool
		last    time.Time // when the last rebuild ended
		spell   = holdoff // the quiet spell after it
	)
	rebuild := func() {
		start := time.Now()
		fn()
		last = time.Now()
		spell = min(maxDelay, max(holdoff, quietFactor*last.Sub(start)))
	}
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-signals:
			now := time.Now()
			if !pending && now.Sub(last) >= spell {
				rebuild()
				continue
			}
			if !pending {
				pending = true
				first = now
			}
			wait := holdoff
			if rest := maxDelay - now.Sub(first); rest < wait {
				wait = max(rest, 0)
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		case <-timerC:
			pending = false
			timerC = nil
			rebuild()
		}
	}
}

// quietFactor is how many rebuild durations make a quiet spell (debounce).
const quietFactor = 10

// notify signals ch without blocking: one pending signal is enough.
func notify(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

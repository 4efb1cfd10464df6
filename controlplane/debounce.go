package controlplane

import (
	"context"
	"time"
)

// debounce turns change signals into rebuilds. A signal after a quiet
// spell (no rebuild for maxDelay) rebuilds at once: a lone change, the
// common case, waits for nothing. Other signals are batched: fn runs once
// no signal has arrived for holdoff, or once maxDelay has passed since the
// first signal of the batch, whichever comes first. A Consul flap that
// touches fifty services becomes two pushes (its first change, then the
// rest), and a steady stream of changes is batched as before (a quiet
// spell of holdoff would let a stream of 100 changes a second rebuild for
// each, which costs more than it saves: measured with BenchmarkFlipSoak),
// still pushed at least every maxDelay.
func debounce(ctx context.Context, signals <-chan struct{}, holdoff, maxDelay time.Duration, fn func()) {
	var (
		timer   *time.Timer
		timerC  <-chan time.Time
		first   time.Time
		pending bool
		last    time.Time // when the last rebuild ended
	)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-signals:
			now := time.Now()
			if !pending && now.Sub(last) >= maxDelay {
				fn()
				last = time.Now()
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
			fn()
			last = time.Now()
		}
	}
}

// notify signals ch without blocking: one pending signal is enough.
func notify(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

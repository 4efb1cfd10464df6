package controlplane

import (
	"context"
	"time"
)

// debounce batches bursts of change signals into one rebuild: it calls fn
// once no signal has arrived for holdoff, or once maxDelay has passed since
// the first signal of the burst, whichever comes first. A Consul flap that
// touches fifty services becomes one push, and a steady stream of changes
// still gets pushed at least every maxDelay.
func debounce(ctx context.Context, signals <-chan struct{}, holdoff, maxDelay time.Duration, fn func()) {
	var (
		timer   *time.Timer
		timerC  <-chan time.Time
		first   time.Time
		pending bool
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

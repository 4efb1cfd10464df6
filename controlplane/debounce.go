package controlplane

import (
	"context"
	"time"
)

// debounce turns change signals into rebuilds. A signal after a quiet
// spell (no rebuild for holdoff) rebuilds at once: a lone change, the
// common case, waits for nothing. Signals that follow within holdoff of a
// rebuild are batched into one more: fn runs once no signal has arrived for
// holdoff, or once maxDelay has passed since the first signal of the batch,
// whichever comes first. A Consul flap that touches fifty services becomes
// two pushes (its first change, then the rest), and a steady stream of
// changes still gets pushed at least every maxDelay.
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
			if !pending && now.Sub(last) >= holdoff {
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

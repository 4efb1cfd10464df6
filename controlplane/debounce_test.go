package controlplane

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestDebounceBatchesBurst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan struct{}, 1)
	var calls atomic.Int32
	fired := make(chan struct{}, 10)
	go debounce(ctx, signals, 30*time.Millisecond, time.Second, func() {
		calls.Add(1)
		fired <- struct{}{}
	})
	for range 20 {
		notify(signals)
		time.Sleep(time.Millisecond)
	}
	<-fired
	time.Sleep(100 * time.Millisecond)
	if got := calls.Load(); got != 2 {
		t.Fatalf("got %d rebuilds for one burst; want 2 (its first signal at once, the rest together)", got)
	}
}

// A lone change after a quiet spell is not held back by the holdoff; one
// that follows a rebuild closely is.
func TestDebounceLoneChangeAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan struct{}, 1)
	fired := make(chan struct{}, 10)
	go debounce(ctx, signals, time.Hour, 2*time.Hour, func() { fired <- struct{}{} })
	notify(signals)
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("no rebuild after a lone change with an hour's holdoff")
	}
	notify(signals)
	select {
	case <-fired:
		t.Fatal("a change right after a rebuild was not batched")
	case <-time.After(100 * time.Millisecond):
	}
}

// The quiet spell is ten rebuild durations (at least the holdoff): a
// change 400 ms after a quick rebuild goes at once (the spell is the
// 300 ms holdoff), one 400 ms after a 50 ms rebuild waits (its spell is
// 500 ms) and is batched.
func TestDebounceSpellFollowsRebuildCost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cost   time.Duration
		atOnce bool
	}{{"quick rebuild", 0, true}, {"slow rebuild", 50 * time.Millisecond, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			signals := make(chan struct{}, 1)
			fired := make(chan time.Time, 10)
			go debounce(ctx, signals, 300*time.Millisecond, time.Hour, func() {
				time.Sleep(tc.cost)
				fired <- time.Now()
			})
			notify(signals)
			<-fired // the first change: at once
			time.Sleep(400 * time.Millisecond)
			sent := time.Now()
			notify(signals)
			at := <-fired
			took := at.Sub(sent) - tc.cost
			if tc.atOnce && took > 150*time.Millisecond {
				t.Errorf("rebuilt %v after the change; want at once", took)
			}
			if !tc.atOnce && took < 150*time.Millisecond {
				t.Errorf("rebuilt %v after the change; want it batched (after the 300 ms holdoff)", took)
			}
		})
	}
}

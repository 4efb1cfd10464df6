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
	if got := calls.Load(); got != 1 {
		t.Fatalf("got %d rebuilds for one burst; want 1", got)
	}
}

func TestDebounceMaxDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan struct{}, 1)
	fired := make(chan struct{}, 100)
	go debounce(ctx, signals, 50*time.Millisecond, 100*time.Millisecond, func() { fired <- struct{}{} })
	// Signal every 10ms for 600ms: the holdoff never expires, so only the
	// maximum delay can fire the rebuild.
	stop := time.After(600 * time.Millisecond)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-time.After(10 * time.Millisecond):
			notify(signals)
		}
	}
	if n := len(fired); n < 2 {
		t.Fatalf("got %d rebuilds during a 600ms stream of changes with a 100ms maximum delay; want at least 2", n)
	}
}

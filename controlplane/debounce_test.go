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

package controlplane

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

type blockedWriter struct{ release chan struct{} }

func (b blockedWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// A stderr nobody reads must not stop a log call: lines beyond the queue
// are dropped and counted.
func TestLogWriterNeverBlocks(t *testing.T) {
	out := blockedWriter{release: make(chan struct{})}
	w := NewLogWriter(out, 10)
	log := slog.New(slog.NewTextHandler(w, nil))
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			log.Info("line", "i", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("logging blocked on a writer that does not read")
	}
	if d := w.Dropped(); d < 1000-11 {
		t.Errorf("dropped %d lines; want at least %d (queue of 10, one in the writer)", d, 1000-11)
	}
	close(out.release)
	w.Close(30 * time.Second)

	broken := NewLogWriter(brokenWriter{}, 10)
	_, _ = broken.Write([]byte("x\n"))
	broken.Close(30 * time.Second)
	if d := broken.Dropped(); d != 1 {
		t.Errorf("dropped %d after a failed write; want 1", d)
	}
}

// The queue is bounded in bytes too, and a line after Close is dropped,
// not a panic.
func TestLogWriterBytesAndClose(t *testing.T) {
	out := blockedWriter{release: make(chan struct{})}
	w := NewLogWriter(out, 1000)
	big := make([]byte, 1<<20)
	for range 10 {
		_, _ = w.Write(big)
	}
	if d := w.Dropped(); d < 5 {
		t.Errorf("dropped %d of ten 1 MiB lines with a 4 MiB budget; want at least 5", d)
	}
	close(out.release)
	w.Close(30 * time.Second)
	before := w.Dropped()
	if _, err := w.Write([]byte("late\n")); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() != before+1 {
		t.Error("a line written after Close was not dropped")
	}
}

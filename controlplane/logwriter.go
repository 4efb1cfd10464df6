package controlplane

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// LogWriter hands log lines to another writer (stderr) from a goroutine of
// its own, so that logging never blocks serving: when the writer does not
// keep up (stderr piped to a reader that stopped reading) and the queue is
// full, lines are dropped and counted (switchyard_log_dropped_lines_total)
// instead of stalling the rebuild loop or an xDS stream on a log call. A
// write error (the reader went away) drops the line too; with SIGPIPE
// ignored, as serve does, a closed stderr cannot kill the process.
//
// It is the one goroutine started outside Server.Run: logging starts
// before the server exists. Close stops it.
type LogWriter struct {
	out     io.Writer
	queue   chan []byte
	dropped atomic.Uint64
	done    chan struct{}
	once    sync.Once
}

// DefaultLogQueue is how many lines LogWriter holds before dropping.
const DefaultLogQueue = 4096

// NewLogWriter starts writing to out, holding up to queue lines
// (DefaultLogQueue when queue <= 0).
func NewLogWriter(out io.Writer, queue int) *LogWriter {
	if queue <= 0 {
		queue = DefaultLogQueue
	}
	w := &LogWriter{out: out, queue: make(chan []byte, queue), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *LogWriter) run() {
	defer close(w.done)
	for line := range w.queue {
		if _, err := w.out.Write(line); err != nil {
			w.dropped.Add(1)
		}
	}
}

// Write queues p (one log record, as slog's handlers write them) and
// returns at once.
func (w *LogWriter) Write(p []byte) (int, error) {
	select {
	case w.queue <- bytes.Clone(p):
	default:
		w.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped is how many lines were dropped so far.
func (w *LogWriter) Dropped() uint64 { return w.dropped.Load() }

// Close stops accepting lines and waits up to timeout for the queued ones
// to be written. Writes after Close panic: close only after the last log
// call.
func (w *LogWriter) Close(timeout time.Duration) {
	w.once.Do(func() { close(w.queue) })
	select {
	case <-w.done:
	case <-time.After(timeout):
	}
}

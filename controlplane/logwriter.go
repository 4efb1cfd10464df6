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
// instead of stalling the rebuild loop or an xDS stream on a log call. The
// queue is bounded in lines and in bytes. A write error (the reader went
// away) drops the line too; with SIGPIPE ignored, as serve does, a closed
// stderr cannot kill the process.
//
// It is the one goroutine started outside Server.Run: logging starts
// before the server exists. Close stops it; lines written after Close are
// dropped.
type LogWriter struct {
	out     io.Writer
	queue   chan []byte
	bytes   atomic.Int64 // bytes queued, not yet written
	dropped atomic.Uint64
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
}

// Log queue bounds: lines, and bytes (a line may quote client-sent text).
const (
	DefaultLogQueue = 4096
	maxLogQueued    = 4 << 20
)

// NewLogWriter starts writing to out, holding up to queue lines
// (DefaultLogQueue when queue <= 0).
func NewLogWriter(out io.Writer, queue int) *LogWriter {
	if queue <= 0 {
		queue = DefaultLogQueue
	}
	w := &LogWriter{out: out, queue: make(chan []byte, queue), closing: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *LogWriter) run() {
	defer close(w.done)
	for {
		select {
		case line := <-w.queue:
			w.write(line)
		case <-w.closing:
			for {
				select {
				case line := <-w.queue:
					w.write(line)
				default:
					return
				}
			}
		}
	}
}

func (w *LogWriter) write(line []byte) {
	w.bytes.Add(-int64(len(line)))
	if _, err := w.out.Write(line); err != nil {
		w.dropped.Add(1)
	}
}

// Write queues p (one log record, as slog's handlers write them) and
// returns at once.
func (w *LogWriter) Write(p []byte) (int, error) {
	select {
	case <-w.closing:
		w.dropped.Add(1)
		return len(p), nil
	default:
	}
	if w.bytes.Add(int64(len(p))) > maxLogQueued {
		w.bytes.Add(-int64(len(p)))
		w.dropped.Add(1)
		return len(p), nil
	}
	select {
	case w.queue <- bytes.Clone(p):
	default:
		w.bytes.Add(-int64(len(p)))
		w.dropped.Add(1)
	}
	return len(p), nil
}

// Dropped is how many lines were dropped so far.
func (w *LogWriter) Dropped() uint64 { return w.dropped.Load() }

// Close stops accepting lines and waits up to timeout for the queued ones
// to be written.
func (w *LogWriter) Close(timeout time.Duration) {
	w.once.Do(func() { close(w.closing) })
	select {
	case <-w.done:
	case <-time.After(timeout):
	}
}

package registry

import (
	"context"
	"net"
	"sync/atomic"
)

// lossCounter counts connections to Consul that the other side ended: an
// agent that restarts or goes away closes them, idle or in use. The
// watches read it to tell a restarted agent's empty answers from real
// deregistrations, whichever query happens to notice the restart first
// (see Watcher.loop).
type lossCounter struct{ n atomic.Int64 }

// load and add treat a nil counter (a Watcher made without NewWatcher, in
// tests) as one that never counts.
func (c *lossCounter) load() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

func (c *lossCounter) add() {
	if c != nil {
		c.n.Add(1)
	}
}

// dialer wraps dial so that every connection it makes reports to c when a
// read fails on it before Switchyard itself closed it. A query that times
// out or is cancelled closes its connection from this side first, which is
// not a loss. dial nil means a plain net.Dialer.
func (c *lossCounter) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &watchedConn{Conn: conn, c: c}, nil
	}
}

type watchedConn struct {
	net.Conn
	c        *lossCounter
	closed   atomic.Bool // closed from this side
	reported atomic.Bool // the loss was counted
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil && !w.closed.Load() && w.reported.CompareAndSwap(false, true) {
		w.c.add()
	}
	return n, err
}

func (w *watchedConn) Close() error {
	w.closed.Store(true)
	return w.Conn.Close()
}

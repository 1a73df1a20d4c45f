package apns

import (
	"crypto/tls"
	"net"
	"sync"
)

// maxPending bounds what a coalescingConn buffers before writers wait.
const maxPending = 256 << 10

// coalescingConn merges the small writes x/net/http2 makes per request into
// fewer, larger TLS writes. The HTTP/2 client flushes after the HEADERS frame
// and again after the DATA frame of every push, so without this each push
// costs two TLS records and two write syscalls; under load, while one write
// is in the kernel, the frames of the next tens of pushes queue up here and
// leave in one record and one syscall.
//
// A dedicated goroutine does the writing, so Write only copies and returns
// (group commit: no timer, no added latency when idle beyond one goroutine
// handoff). A write error is sticky: later Writes return it, and the reads
// on the same connection fail too, which http2 already handles.
type coalescingConn struct {
	*tls.Conn

	mu      sync.Mutex
	wake    sync.Cond // the flusher waits for data
	room    sync.Cond // writers wait for the buffer to drain below maxPending
	pending []byte
	spare   []byte
	err     error
	closed  bool
}

func newCoalescingConn(c *tls.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.wake.L = &cc.mu
	cc.room.L = &cc.mu
	go cc.flushLoop()
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && len(c.pending) >= maxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closed:
		return 0, net.ErrClosed
	}
	wasEmpty := len(c.pending) == 0
	c.pending = append(c.pending, p...)
	if wasEmpty {
		c.wake.Signal()
	}
	return len(p), nil
}

func (c *coalescingConn) flushLoop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.pending) == 0 && !c.closed {
			c.wake.Wait()
		}
		if c.closed {
			return
		}
		out := c.pending
		c.pending = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(out)
		c.mu.Lock()
		if cap(out) <= maxPending*2 {
			c.spare = out[:0]
		}
		c.room.Broadcast()
		if err != nil {
			c.err = err
			c.pending = nil
			return
		}
	}
}

// Close stops the flusher and closes the connection; unflushed bytes are
// dropped, as a closed TCP connection would drop them.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.wake.Broadcast()
	c.room.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

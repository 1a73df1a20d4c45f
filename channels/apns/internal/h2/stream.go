package h2

import (
	"context"
	"sync/atomic"
)

// Call is one request in flight on its stream, from Conn.Start until
// Call.Wait. Calls are pooled per connection; every field but the
// connection, the channels and the body buffer is reset on reuse.
type Call struct {
	conn *Conn

	// done gets exactly one signal when the reader (or a failing
	// connection) decides the outcome; a caller that gives up decides it
	// itself and gets none. Capacity 1, so the send never blocks.
	done chan struct{}
	// wake nudges a caller waiting for a slot or for send window.
	// Capacity 1; waiters recheck state under the lock and drain it.
	wake chan struct{}

	group    *Group      // set at Start, read by the signaller
	answered atomic.Bool // set just before done's signal: see Finished

	// All below is guarded by Conn.mu.
	id         uint32
	prev, next *Call
	list       *waitList
	retried    bool  // Client: this is the request's second attempt
	granted    bool  // a slot was handed over while waiting
	refused    error // the slot wait ended without one

	sendWindow  int64
	recvAvail   int64
	recvUnacked int64
	sentEnd     bool // END_STREAM sent (or no body)
	gotFinal    bool // final (non-1xx) response headers read
	finished    bool // outcome decided
	closed      bool // forgotten by the connection, slot freed
	err         error

	status                       int
	apnsID, uniqueID, retryAfter string
	body                         []byte
}

func (c *Conn) getStream() *Call { return c.pool.Get().(*Call) }

// putStream recycles st. Callers only do so once st is closed, out of
// every list and both channels are drained, so no one else holds it.
func (c *Conn) putStream(st *Call) {
	body := st.body
	if cap(body) > 2*c.cfg.MaxResponseBody {
		body = nil
	}
	conn, done, wake := st.conn, st.done, st.wake
	*st = Call{conn: conn, done: done, wake: wake, body: body[:0]}
	c.pool.Put(st)
}

// waitList is an intrusive FIFO of waiting streams: O(1) push, pop and
// removal of a waiter whose ctx ended.
type waitList struct{ head, tail *Call }

func (l *waitList) push(st *Call) {
	st.list, st.prev, st.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = st
	} else {
		l.head = st
	}
	l.tail = st
}

func (l *waitList) remove(st *Call) {
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		l.head = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	} else {
		l.tail = st.prev
	}
	st.list, st.prev, st.next = nil, nil, nil
}

func (l *waitList) pop() *Call {
	st := l.head
	if st != nil {
		l.remove(st)
	}
	return st
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Group lets one goroutine keep many calls in flight and be woken once per
// few answers of any of them, instead of once per answer (or, waiting on the
// oldest, once per answer and behind a slow one). The reader counts each
// call of the group it finishes; Call.Wait uncounts it.
type Group struct {
	wake  chan struct{}
	ready atomic.Int64 // calls finished and not yet waited for
	want  atomic.Int64
}

// NewGroup returns a Group to pass as Request.Group.
func NewGroup() *Group { return &Group{wake: make(chan struct{}, 1)} }

// Wait returns once at least n of the group's calls are finished and not
// yet waited for (their Finished is true), or ctx ends. It may return
// early; the caller rechecks.
func (g *Group) Wait(ctx context.Context, n int) error {
	drain(g.wake)
	g.want.Store(int64(n))
	if g.ready.Load() >= int64(n) {
		return nil
	}
	if done := ctx.Done(); done != nil {
		select {
		case <-g.wake:
		case <-done:
			return ctx.Err()
		}
		return nil
	}
	<-g.wake
	return nil
}

func (g *Group) finished() {
	if g != nil && g.ready.Add(1) >= g.want.Load() {
		signal(g.wake)
	}
}

func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

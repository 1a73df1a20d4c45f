package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Pipelining (Transport.Pipeline > 1).
//
// Why: with one request in flight per connection, every request costs a
// write and a read system call, and on loopback those two were about a third
// of the webhook path's CPU (notifyd bench webhook --cpuprofile). Requests
// that arrive together on one connection go out in one write and their
// answers come back in as few reads as the receiver's writes allow.
//
// How, without goroutines of the connection's own: a caller appends its
// request to the connection's write buffer; if nobody is writing it becomes
// the writer and writes until the buffer is empty (requests appended during
// a write go out with the next one). The oldest caller waiting for an answer
// is the reader: it reads answers in order, hands each one (body read into
// memory: webhook answers are small) to its caller, and once it has its own
// answer passes the reading to the next caller in line. A request costs at
// most one goroutine wake-up, none when its caller reads its own answer.
//
// When the connection fails, every request on it that has no answer fails
// with the error and answered false: it may or may not have been processed
// (in doubt), and goes back to the caller as a network error, which the
// worker pool retries under the same Idempotency-Key. A request whose
// context ends while in line cannot be taken back from a pipelined
// connection: the connection is closed, and the requests behind it fail as
// above.

// Head-of-line blocking. An HTTP/1.1 receiver answers one connection's
// requests one after another, so a request in line waits for the answers
// before it: free with a receiver that answers in microseconds, 2 ms per
// request ahead of it with one that takes 2 ms (the end-to-end drills:
// with 8 in line, 4 workers got a quarter of their throughput). The reader
// measures the receiver's time per answer on a line — the gap between two
// answers when the second request was already waiting — and while that
// exceeds slowAnswer, requests go to a connection with nothing in line, or
// a new one while MaxConnsPerHost allows, and join a line only when every
// connection is busy. (By its answers alone, a receiver slow per request
// cannot be told from a fast one whose CPU is saturated: there the gap is
// its connections over its rate, ~260 µs with 8 lines at 30k answers/s in
// notifyd bench webhook; hence 1 ms, which still catches the drills' 2 ms
// receiver.) The measure is dropped every reprobeEvery, so a
// receiver that was slow for a while gets pipelined again (a few requests
// wait behind a slow answer then, once per period).
const (
	slowAnswer   = time.Millisecond
	reprobeEvery = time.Second
)

// maxPipelinedBody is the most of an answer's body kept in memory; a longer
// body is cut there and its connection closed after it (the webhook sender
// reads at most 64 KiB of an answer).
const maxPipelinedBody = 64 << 10

type pconn struct {
	nc   net.Conn
	br   *bufio.Reader
	pool *hostPool

	mu       sync.Mutex
	wbuf     []byte // requests waiting for the writer
	spare    []byte // the other write buffer (swapped, not reallocated)
	writing  bool
	queue    []*call // written or waiting to be, oldest first, unanswered
	err      error   // set once: the connection takes no more requests
	served   int     // answers read
	reader   *call   // the caller reading for the line (nil when it is empty)
	lastUsed time.Time
}

type call struct {
	// method, not the request: a caller whose context ended returns (and
	// may reuse its request) while the line's reader still reads its answer.
	method   string
	deadline time.Time
	done     chan struct{} // one send: an answer, an error, or "read now"
	resp     *http.Response
	err      error
	answered bool // some byte of an answer arrived (the error came after)
	lead     bool // woken to read for the line
	reused   bool // the connection had answered before this request
	behind   bool // another request was unanswered when this one joined
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// errConnClosed fails requests in line on a connection that broke before
// their answers.
var errConnClosed = errors.New("h1: connection closed before the answer")

// pipelined sends req over a pipelined connection to p.
func (t *Transport) pipelined(ctx context.Context, req *http.Request, p *hostPool, addr, host string, head []byte, idem bool, body []byte, deadline, now time.Time) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c, err := t.pickConn(ctx, p, addr, deadline, now)
		if err != nil {
			return nil, err
		}
		resp, answered, reused, err := c.roundTrip(ctx, req, host, head, body, deadline)
		if err == nil {
			return resp, nil
		}
		// As RoundTrip: a reused connection that closed before any
		// answer to this request is tried once more on a fresh one.
		if reused && !answered && attempt == 0 && ctx.Err() == nil && replayable(req, idem) && !isDeadline(err) {
			continue
		}
		return nil, err
	}
}

func isDeadline(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// pickConn returns the open connection with the fewest requests in line if
// it has fewer than Pipeline, or if no other may be opened; else it dials.
// A connection with nothing in line that has been idle for peekAfterIdle is
// peeked first and dropped if the server sent something or closed meanwhile
// (see rawReader.unasked).
func (t *Transport) pickConn(ctx context.Context, p *hostPool, addr string, deadline, now time.Time) (*pconn, error) {
	depth := t.Pipeline
	if p.slowReceiver() {
		depth = 1
	}
	p.pmu.Lock()
	for {
		// Fill the busiest connection that has room: requests that meet
		// in one line leave in one write. With no room anywhere, open
		// another connection while the cap allows, else join the
		// shortest line, or wait for a connection being dialled.
		var fit, least *pconn
		fitN, leastN := -1, 0
		live := p.pconns[:0]
		for _, c := range p.pconns {
			c.mu.Lock()
			n, broken := len(c.queue), c.err != nil
			if !broken && n == 0 && now.Sub(c.lastUsed) >= peekAfterIdle && unaskedBytes(c.nc) {
				c.failLocked(errConnClosed)
				broken = true
			}
			c.mu.Unlock()
			if broken {
				continue
			}
			live = append(live, c)
			if n < depth && n > fitN {
				fit, fitN = c, n
			}
			if least == nil || n < leastN {
				least, leastN = c, n
			}
		}
		clear(p.pconns[len(live):])
		p.pconns = live
		if fit != nil {
			p.pmu.Unlock()
			t.picked(fitN)
			return fit, nil
		}
		if len(p.pconns)+p.dialing < cap(p.slots) {
			break
		}
		if least != nil {
			p.pmu.Unlock()
			t.picked(leastN)
			return least, nil
		}
		p.dialed.Wait() // bounded: a dial ends by its deadline
	}
	p.dialing++
	p.pmu.Unlock()

	dctx := ctx
	if _, ok := ctx.Deadline(); !ok && !deadline.IsZero() {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	nc, err := t.Dial(dctx, "tcp", addr)
	p.pmu.Lock()
	defer p.pmu.Unlock()
	p.dialing--
	p.dialed.Broadcast()
	if err != nil {
		return nil, err
	}
	c := &pconn{nc: nc, br: bufio.NewReaderSize(nc, 4<<10), pool: p, lastUsed: time.Now()}
	p.pconns = append(p.pconns, c)
	return c, nil
}

func (t *Transport) picked(waiting int) {
	if t.onPick != nil {
		t.onPick(waiting)
	}
}

// slowReceiver reports whether the receiver's time per answer makes
// waiting in line cost more than it saves (see slowAnswer).
func (p *hostPool) slowReceiver() bool {
	gap := p.answerGap.Load()
	if gap <= int64(slowAnswer) {
		return false
	}
	if since := p.gapSince.Load(); time.Now().UnixNano()-since > int64(reprobeEvery) {
		// Forget the measure (once, whoever wins): the next lines are
		// pipelined and measured afresh.
		if p.gapSince.CompareAndSwap(since, time.Now().UnixNano()) {
			p.answerGap.Store(0)
		}
		return false
	}
	return true
}

// sampleGap adds one time per answer to the smoothed measure. The first
// sample after a reset counts whole, so a slow receiver is found by its
// first two answers on a line.
func (p *hostPool) sampleGap(gap time.Duration) {
	old := p.answerGap.Load()
	g := int64(gap)
	if old != 0 {
		g = old + (g-old)/4
	} else {
		p.gapSince.Store(time.Now().UnixNano())
	}
	p.answerGap.Store(max(g, 1))
}

// sweepPipelined closes p's connections with nothing in line that were last
// used before olderThan (all of them when olderThan is far ahead), forgets
// broken ones, and reports whether p has no connection left.
func (p *hostPool) sweepPipelined(olderThan time.Time) bool {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	live := p.pconns[:0]
	for _, c := range p.pconns {
		if !c.closeIfIdle(olderThan) {
			live = append(live, c)
		}
	}
	clear(p.pconns[len(live):])
	p.pconns = live
	return len(p.pconns) == 0 && p.dialing == 0
}

// roundTrip puts req in c's line and waits for its answer.
func (c *pconn) roundTrip(ctx context.Context, req *http.Request, host string, head, body []byte, deadline time.Time) (*http.Response, bool, bool, error) {
	cl := callPool.Get().(*call)
	*cl = call{method: req.Method, deadline: deadline, done: cl.done}
	defer func() { *cl = call{done: cl.done}; callPool.Put(cl) }()

	c.mu.Lock()
	if c.err != nil {
		err, reused := c.err, c.served > 0
		c.mu.Unlock()
		return nil, false, reused, err
	}
	w, err := appendRequest(c.wbuf, req, host, head, body)
	if err != nil {
		c.wbuf = w[:len(c.wbuf)]
		c.mu.Unlock()
		return nil, false, false, err
	}
	c.wbuf = w
	cl.reused = c.served > 0
	cl.behind = len(c.queue) > 0
	c.queue = append(c.queue, cl)
	reader := len(c.queue) == 1
	if reader {
		c.reader = cl
	}
	if !c.writing {
		c.writing = true
		c.flush(deadline)
	}
	c.mu.Unlock()

	// A context that ends takes the connection with it: a request cannot
	// be taken back from the middle of a pipeline.
	stop := context.AfterFunc(ctx, func() { c.fail(context.Cause(ctx)) })
	if !reader {
		<-cl.done
		reader = cl.lead
	}
	if reader {
		c.read(cl)
	}
	stop()
	if cl.err != nil && ctx.Err() != nil {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			<-ctx.Done() // answer as the context will, as RoundTrip does
		}
		return nil, cl.answered, cl.reused, ctx.Err()
	}
	if cl.resp != nil {
		cl.resp.Request = req
	}
	return cl.resp, cl.answered, cl.reused, cl.err
}

// flush writes c.wbuf until it is empty. Called with c.mu held and
// c.writing set; it unlocks around each write.
func (c *pconn) flush(deadline time.Time) {
	for len(c.wbuf) > 0 && c.err == nil {
		out := c.wbuf
		c.wbuf = c.spare[:0]
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(deadline)
		_, err := c.nc.Write(out)
		c.mu.Lock()
		c.spare = out[:0]
		if err != nil {
			c.failLocked(err)
		}
	}
	c.wbuf = c.wbuf[:0]
	c.writing = false
}

// read is the line's reader: it reads answers in order, handing each to its
// caller, until own's (or the connection fails). own is c.reader.
func (c *pconn) read(own *call) {
	for {
		c.mu.Lock()
		if own.err != nil || c.err != nil {
			c.mu.Unlock()
			return // failLocked gave own its error
		}
		head := c.queue[0]
		c.mu.Unlock()
		_ = c.nc.SetReadDeadline(head.deadline)
		resp, answered, keep, err := c.readOne(head.method)

		c.mu.Lock()
		if err != nil {
			if c.err == nil {
				head.answered = answered
			}
			c.failLocked(err)
			c.mu.Unlock()
			return
		}
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.served++
		now := time.Now()
		if head.behind && !c.lastUsed.IsZero() {
			// head was waiting while the answer before it was produced:
			// the gap is the receiver's time for head alone.
			c.pool.sampleGap(now.Sub(c.lastUsed))
		}
		c.lastUsed = now
		head.resp = resp
		if !keep {
			c.failLocked(errConnClosed)
		}
		if head == own {
			c.reader = nil
			if len(c.queue) > 0 {
				next := c.queue[0]
				next.lead = true
				c.reader = next
				next.done <- struct{}{}
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		head.done <- struct{}{}
	}
}

// readOne reads one answer with its body. keep is false when the
// connection cannot carry another.
func (c *pconn) readOne(method string) (*http.Response, bool, bool, error) {
	if _, err := c.br.Peek(1); err != nil {
		return nil, false, false, err
	}
	if lr, n, ok := readHead(c.br, method); ok {
		resp := &lr.resp
		keep := !resp.Close
		switch {
		case n == 0:
			resp.Body = http.NoBody
		case n > 0 && n <= maxPipelinedBody:
			b := make([]byte, n)
			if _, err := io.ReadFull(c.br, b); err != nil {
				return nil, true, false, err
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
		default:
			b, err := io.ReadAll(io.LimitReader(c.br, min(n, maxPipelinedBody+1)))
			if err != nil {
				return nil, true, false, err
			}
			if n < 0 || len(b) > maxPipelinedBody {
				b, keep = b[:min(len(b), maxPipelinedBody)], false
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		return resp, true, keep, nil
	}
	req := &http.Request{Method: method}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return nil, true, false, err
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil, true, false, errors.New("h1: server switched protocols")
	}
	keep := !resp.Close
	if resp.Body != http.NoBody {
		var b []byte
		var err error
		if resp.ContentLength >= 0 && resp.ContentLength <= maxPipelinedBody {
			b = make([]byte, resp.ContentLength)
			_, err = io.ReadFull(resp.Body, b)
		} else {
			b, err = io.ReadAll(io.LimitReader(resp.Body, maxPipelinedBody+1))
			if len(b) > maxPipelinedBody {
				b, keep = b[:maxPipelinedBody], false
			}
		}
		if err != nil {
			return nil, true, false, err
		}
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, true, keep, nil
}

// fail closes c and fails every request in line.
func (c *pconn) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
}

// failLocked is fail with c.mu held. Every request in line gets the error;
// all but the reader are woken (the reader is running: its read fails on
// the closed connection, or it finds its error at its next look).
func (c *pconn) failLocked(err error) {
	if c.err == nil {
		c.err = err
		_ = c.nc.Close()
	}
	for i, q := range c.queue {
		q.err = c.err
		// Answers came on this connection and then it closed: most
		// likely the receiver's limit of requests per connection.
		q.reused = q.reused || c.served > 0
		c.queue[i] = nil
		if q != c.reader {
			q.done <- struct{}{}
		}
	}
	c.queue = c.queue[:0]
}

// closeIfIdle closes c if no request is in line.
func (c *pconn) closeIfIdle(olderThan time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return true
	}
	if len(c.queue) == 0 && !c.lastUsed.After(olderThan) {
		c.failLocked(errConnClosed)
		return true
	}
	return false
}

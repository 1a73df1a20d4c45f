// Package h1 is a lean HTTP/1.1 client transport for cleartext (http://)
// requests: the calling goroutine writes the request in one write and reads
// the response itself from a pool of keep-alive connections.
//
// net/http's Transport runs two goroutines per connection (a read loop and a
// write loop) and hands every request and response between them and the
// caller over channels: three goroutine wake-ups per request. Measured with
// `notifyd bench webhook` against a net/http receiver on loopback, those
// hand-offs and the loops' allocations were about half of the webhook path's
// CPU per request. This transport does only what the webhook sender needs of
// HTTP/1.1: keep-alive with a cap per host, Content-Length, chunked and
// close-delimited responses (through http.ReadResponse), request deadlines
// and cancellation from the context, and one retry of a replayable request on
// a fresh connection when a reused one turns out to have been closed by the
// server before it answered. TLS, HTTP/2 and proxies stay with net/http.
package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Transport is an http.RoundTripper for http:// URLs. The zero value is not
// usable: set Dial.
type Transport struct {
	// Dial opens connections (the destination guard lives there).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxConnsPerHost caps the connections open to one host:port (default 64).
	MaxConnsPerHost int
	// IdleConnTimeout closes connections idle for longer (default 90s).
	IdleConnTimeout time.Duration
	// MaxIdleConns caps the idle connections kept across all hosts
	// (default 4 × MaxConnsPerHost), as net/http's MaxIdleConns does.
	MaxIdleConns int
	// Timeout, when positive, bounds each request from RoundTrip to the
	// last byte of its response unless the request's context ends sooner.
	// It lives here, as the connection's deadline, so that the caller need
	// not derive a context with a timer for every request: that cost about
	// 1 µs per request (notifyd bench webhook). A request that times out
	// fails with an error whose Timeout() is true (os.ErrDeadlineExceeded).
	Timeout time.Duration
	// Pipeline, when above 1, lets up to this many requests be in line on
	// one connection (HTTP/1.1 pipelining, see pipeline.go) before another
	// connection is opened; MaxConnsPerHost still caps the connections.
	Pipeline int

	// onPick, in tests, sees how many requests wait on the line a
	// pipelined request joins.
	onPick func(waiting int)
	// rawSends and rawRests count, for tests, the requests written by the
	// read that waits for their answer (rawio.go), and those of them whose
	// end went through net.Conn's Write after a partial write.
	rawSends, rawRests atomic.Int64

	mu        sync.Mutex
	hosts     map[string]*hostPool
	lastSweep time.Time
	idleCount atomic.Int64
}

// hostPool holds one destination's connections: a token in slots for each
// open (or opening) connection, the idle ones in idle.
type hostPool struct {
	slots chan struct{}
	idle  chan *conn

	// Pipelined connections (Transport.Pipeline > 1); slots only gives
	// the cap there.
	// answerGap is the receiver's time per answer on a pipelined line
	// (ns, smoothed), gapSince when it was last reset (see slowAnswer).
	answerGap atomic.Int64
	gapSince  atomic.Int64

	pmu     sync.Mutex
	pconns  []*pconn
	dialing int
	dialed  *sync.Cond // on pmu: a dial ended
}

type conn struct {
	net.Conn
	br       *bufio.Reader // reads through rr
	rr       *rawReader
	wbuf     []byte
	lastUsed time.Time
	started  time.Time // of the request it carries
	pool     *hostPool

	// The context whose end interrupts the connection (see watch).
	watched     context.Context
	unwatch     func() bool
	interrupted atomic.Bool
}

var errPast = time.Unix(1, 0)

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleConnTimeout <= 0 {
		return 90 * time.Second
	}
	return t.IdleConnTimeout
}

// pool is addr's pool; now is the request's start (one clock read per
// request: time.Now was a few percent of the CPU per request on a VM).
func (t *Transport) pool(addr string, now time.Time) *hostPool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hosts == nil {
		t.hosts = map[string]*hostPool{}
	}
	if now.Sub(t.lastSweep) > t.idleTimeout()/2 {
		t.lastSweep = now
		t.sweep(now)
	}
	p := t.hosts[addr]
	if p == nil {
		n := t.MaxConnsPerHost
		if n <= 0 {
			n = 64
		}
		p = &hostPool{slots: make(chan struct{}, n), idle: make(chan *conn, n)}
		p.dialed = sync.NewCond(&p.pmu)
		t.hosts[addr] = p
	}
	return p
}

// sweep closes connections idle past IdleConnTimeout in every pool and
// forgets destinations with no connection left: per-message URLs may name
// many hosts, each used once. Called with t.mu held, at most twice per
// IdleConnTimeout. (A request that took a pool just before it was forgotten
// still completes on it; only the cap is shared less for that moment.)
func (t *Transport) sweep(now time.Time) {
	for addr, p := range t.hosts {
		for range len(p.idle) {
			select {
			case c := <-p.idle:
				if now.Sub(c.lastUsed) > t.idleTimeout() {
					t.idleCount.Add(-1)
					c.close()
				} else {
					p.idle <- c
				}
			default:
			}
		}
		if p.sweepPipelined(now.Add(-t.idleTimeout())) && len(p.slots) == 0 {
			delete(t.hosts, addr)
		}
	}
}

// CloseIdleConnections closes every idle connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	pools := make([]*hostPool, 0, len(t.hosts))
	for _, p := range t.hosts {
		pools = append(pools, p)
	}
	t.mu.Unlock()
	for _, p := range pools {
		p.sweepPipelined(time.Now().Add(time.Hour))
		for {
			select {
			case c := <-p.idle:
				t.idleCount.Add(-1)
				c.close()
				continue
			default:
			}
			break
		}
	}
}

func (c *conn) close() {
	if c.unwatch != nil {
		c.unwatch()
	}
	_ = c.Conn.Close()
	<-c.pool.slots
}

// errTimeout is a request that reached Timeout before a connection was
// free or dialled. It is a net.Error with Timeout() true, as a deadline on
// the wire gives, and errors.Is(err, os.ErrDeadlineExceeded).
var errTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string        { return "h1: request timeout waiting for a connection" }
func (timeoutError) Timeout() bool        { return true }
func (timeoutError) Temporary() bool      { return true }
func (timeoutError) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// get returns an idle connection (reused true) or dials one, waiting for a
// slot when MaxConnsPerHost are open, until ctx ends or deadline (if set).
func (t *Transport) get(ctx context.Context, p *hostPool, addr string, deadline, now time.Time) (*conn, bool, error) {
	idleTimeout := t.idleTimeout()
	for {
		var c *conn
		select {
		case c = <-p.idle:
		default:
			// The slow path: a timer only when the request may wait.
			var expired <-chan time.Time
			if !deadline.IsZero() {
				tm := time.NewTimer(time.Until(deadline))
				defer tm.Stop()
				expired = tm.C
			}
			select {
			case c = <-p.idle:
			case p.slots <- struct{}{}:
				dctx := ctx
				if _, ok := ctx.Deadline(); !ok && !deadline.IsZero() {
					var cancel context.CancelFunc
					dctx, cancel = context.WithDeadline(ctx, deadline)
					defer cancel()
				}
				nc, err := t.Dial(dctx, "tcp", addr)
				if err != nil {
					<-p.slots
					return nil, false, err
				}
				rr := newRawReader(nc)
				return &conn{Conn: nc, br: bufio.NewReaderSize(rr, 4<<10), rr: rr, pool: p}, false, nil
			case <-ctx.Done():
				return nil, false, ctx.Err()
			case <-expired:
				return nil, false, errTimeout
			}
		}
		t.idleCount.Add(-1)
		if idle := now.Sub(c.lastUsed); idle > idleTimeout || c.interrupted.Load() || idle >= peekAfterIdle && c.rr.unasked() {
			c.close()
			continue
		}
		return c, true, nil
	}
}

func (t *Transport) put(c *conn) {
	maxIdle := int64(t.MaxIdleConns)
	if maxIdle <= 0 {
		maxIdle = 4 * int64(cap(c.pool.slots))
	}
	if t.idleCount.Add(1) > maxIdle {
		t.idleCount.Add(-1)
		c.close()
		return
	}
	// The start of the request it carried: idle a little longer than it
	// looks, by one request's duration, which the idle timeout dwarfs.
	c.lastUsed = c.started
	select {
	case c.pool.idle <- c:
	default: // cannot happen: idle holds at most as many as slots
		t.idleCount.Add(-1)
		c.close()
	}
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var head []byte
	idem := false
	if hl, ok := req.Body.(HeaderLines); ok {
		head, idem = hl.HeaderLines()
	}
	body, err := readBody(req)
	if err != nil {
		return nil, err
	}
	if req.URL.Scheme != "http" {
		return nil, fmt.Errorf("h1: scheme %q: only http", req.URL.Scheme)
	}
	host := req.URL.Host
	if req.Host != "" {
		host = req.Host
	}
	addr := req.URL.Host // host:port, brackets and all, when it names a port
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	deadline, _ := ctx.Deadline()
	now := time.Now()
	if t.Timeout > 0 {
		if own := now.Add(t.Timeout); deadline.IsZero() || own.Before(deadline) {
			deadline = own
		}
	}
	p := t.pool(addr, now)
	if t.Pipeline > 1 {
		return t.pipelined(ctx, req, p, addr, host, head, idem, body, deadline, now)
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := t.get(ctx, p, addr, deadline, now)
		if err != nil {
			return nil, err
		}
		c.started = now
		if !c.watch(ctx) {
			// The end of the context this connection last served is
			// interrupting it right now: it cannot carry this request.
			c.close()
			attempt--
			continue
		}
		resp, answered, err := t.exchange(ctx, c, req, host, head, body, deadline)
		if err == nil {
			return resp, nil
		}
		// A keep-alive connection the server closed while it sat idle fails
		// before any answer: nothing was processed, so send once more on a
		// fresh connection, as net/http does, if the request may be replayed.
		if reused && !answered && attempt == 0 && ctx.Err() == nil && replayable(req, idem) {
			continue
		}
		return nil, err
	}
}

func replayable(req *http.Request, idempotent bool) bool {
	if idempotent {
		return true
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

// BytesBody is a request body whose bytes the transport may take without
// reading them: the webhook sender's replayable body. Bytes must return the
// whole body, whatever has been read; the transport never modifies it.
type BytesBody interface {
	io.ReadCloser
	Bytes() []byte
}

// HeaderLines is a BytesBody that carries its request's header lines as
// well, ready for the wire: "Name: value\r\n" each, valid names and values
// (the sender checked them), none of Host, Content-Length,
// Transfer-Encoding or Connection. The request's Header map can then stay
// empty: net/http's Client clones that map for every request (for
// redirects), so a webhook's four or five headers cost a map built, a map
// cloned and a map walked per request. idempotent says the lines hold an
// Idempotency-Key (the request may be replayed, see RoundTrip).
type HeaderLines interface {
	BytesBody
	HeaderLines() (lines []byte, idempotent bool)
}

// readBody reads the whole request body: webhook bodies are small and in
// memory, and one buffer lets the request go out in one write.
func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	if bb, ok := req.Body.(BytesBody); ok {
		return bb.Bytes(), nil
	}
	if req.ContentLength > 0 {
		b := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			return nil, fmt.Errorf("h1: read request body: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("h1: read request body: %w", err)
	}
	return b, nil
}

// exchange writes req on c and reads the response head. answered says
// whether any byte of a response arrived.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, host string, head, body []byte, deadline time.Time) (*http.Response, bool, error) {
	_ = c.SetDeadline(deadline) // zero: none
	fail := func(err error, answered bool) (*http.Response, bool, error) {
		c.close()
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// The socket's deadline is the context's: it may fire a moment
			// before the context's own timer. Answer as the context will,
			// so callers see DeadlineExceeded, as from net/http.
			<-ctx.Done()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return nil, answered, err
	}
	w, err := appendRequest(c.wbuf[:0], req, host, head, body)
	if err != nil {
		t.put(c)
		return nil, false, err
	}
	c.wbuf = w
	// Written by the read that waits for the answer (rawio.go). What a
	// server may have sent or closed while the connection sat idle was
	// looked for when it was taken from the pool (unasked), and a fresh
	// connection has heard nothing yet.
	raw := c.rr.canSend() && c.br.Buffered() == 0
	if raw {
		t.rawSends.Add(1)
		c.rr.send(w)
	} else if _, err := c.Write(w); err != nil {
		return fail(err, false)
	}
	_, err = c.br.Peek(1)
	if raw && c.rr.rested {
		t.rawRests.Add(1)
	}
	if err != nil {
		return fail(err, false)
	}
	if lr, n, ok := readHead(c.br, req.Method); ok {
		resp := &lr.resp
		resp.Request = req
		if n == 0 {
			resp.Body = http.NoBody
			t.finish(c, !resp.Close)
			return resp, true, nil
		}
		lr.body = respBody{t: t, c: c, n: n, keep: !resp.Close}
		resp.Body = &lr.body
		return resp, true, nil
	}
	var resp *http.Response
	for {
		if _, err := c.br.Peek(1); err != nil {
			return fail(err, true)
		}
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err, true)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("h1: server switched protocols"), true)
	}
	if resp.Body == http.NoBody {
		t.finish(c, !resp.Close)
		return resp, true, nil
	}
	resp.Body = &respBody{rc: resp.Body, t: t, c: c, keep: !resp.Close}
	return resp, true, nil
}

// finish ends c's exchange: back to the pool if it may carry another
// request, closed otherwise. It reports whether c went back.
func (t *Transport) finish(c *conn, reusable bool) bool {
	if reusable && !c.interrupted.Load() && c.br.Buffered() == 0 {
		t.put(c)
		return true
	}
	c.close()
	return false
}

// watch makes the end of ctx interrupt c (its deadline set in the past) for
// as long as c is open or until another context takes over. The worker
// pool sends every request of a worker under one long-lived context:
// registering context.AfterFunc per request cost a few percent of the CPU
// per request, mostly on the parent context's mutex that all workers share.
// It reports false when a previous context's end may be interrupting c.
func (c *conn) watch(ctx context.Context) bool {
	if c.interrupted.Load() {
		return false
	}
	if c.watched == ctx {
		return true
	}
	if c.unwatch != nil && !c.unwatch() {
		return false
	}
	c.watched, c.unwatch = ctx, nil
	if ctx.Done() == nil {
		return true // never ends
	}
	c.unwatch = context.AfterFunc(ctx, func() {
		c.interrupted.Store(true)
		_ = c.SetDeadline(errPast)
	})
	return true
}

// respBody returns its connection to the pool once the response has been
// read to its end, and closes it otherwise.
type respBody struct {
	rc   io.ReadCloser // from http.ReadResponse; nil on the lean path
	n    int64         // lean path: bytes left, or -1 until the connection ends
	t    *Transport
	c    *conn
	keep bool
	done bool
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.rc != nil {
		n, err := b.rc.Read(p)
		if err == io.EOF {
			b.finish(true)
		} else if err != nil {
			b.finish(false)
		}
		return n, err
	}
	if b.n == 0 {
		b.finish(true)
		return 0, io.EOF
	}
	if b.n > 0 && int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.c.br.Read(p)
	if b.n > 0 {
		b.n -= int64(n)
		if b.n == 0 {
			b.finish(true)
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == io.EOF {
		b.finish(true) // a close-delimited body ends here
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

// Close drains a few kilobytes so the connection can be reused; a longer
// unread answer costs its connection.
func (b *respBody) Close() error {
	if b.done {
		return nil
	}
	if b.rc == nil && b.n > 4<<10 || b.n < 0 {
		b.finish(false)
		return nil
	}
	src := io.Reader(b)
	if b.rc != nil {
		src = b.rc
	}
	n, err := io.Copy(io.Discard, io.LimitReader(src, 4<<10))
	b.finish(err == nil && n < 4<<10)
	return nil
}

func (b *respBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	b.t.finish(b.c, complete && b.keep)
}

// appendRequest writes the request head and body. Header names and values
// are checked as net/http checks them: a CR or LF would start a header (or a
// request) of the sender's choosing.
func appendRequest(w []byte, req *http.Request, host string, head, body []byte) ([]byte, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !httpguts.ValidHostHeader(host) {
		return w, errors.New("h1: invalid Host")
	}
	w = append(w, method...)
	w = append(w, ' ')
	w = append(w, req.URL.RequestURI()...)
	w = append(w, " HTTP/1.1\r\nHost: "...)
	w = append(w, host...)
	w = append(w, "\r\n"...)
	w = append(w, head...)
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return w, fmt.Errorf("h1: invalid header name %q", k)
		}
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection":
			continue // set here
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return w, fmt.Errorf("h1: invalid value for header %q", k)
			}
			w = append(w, k...)
			w = append(w, ": "...)
			w = append(w, v...)
			w = append(w, "\r\n"...)
		}
	}
	if body != nil || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		w = append(w, "Content-Length: "...)
		w = strconv.AppendInt(w, int64(len(body)), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, "\r\n"...)
	return append(w, body...), nil
}

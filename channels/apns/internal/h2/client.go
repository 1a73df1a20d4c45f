package h2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Client is one lazily (re)dialled connection: the first request dials,
// a request after the connection died or went away dials a new one, and
// never more than one dial runs at a time. A request the old connection
// certainly did not process (ErrUnprocessed) is sent once more on the new
// one.
type Client struct {
	cfg  Config
	conn atomic.Pointer[Conn]

	mu      sync.Mutex
	dialing *dialCall
	closed  bool
	// retired are replaced connections that may still be finishing
	// streams (after GOAWAY); Close closes them too.
	retired []*Conn
}

type dialCall struct {
	done chan struct{}
	conn *Conn
	err  error
}

var errClientClosed = errors.New("client closed")

// NewClient returns a Client that dials with cfg on first use.
func NewClient(cfg Config) *Client { return &Client{cfg: cfg.withDefaults()} }

// RoundTrip sends req on the current connection, dialling one if needed,
// and waits for the answer: Start then Wait.
func (cl *Client) RoundTrip(ctx context.Context, req *Request, resp *Response) error {
	call, err := cl.Start(ctx, req)
	if err != nil {
		return err
	}
	return cl.Wait(ctx, call, req, resp)
}

// Start starts req (see Conn.Start) on the current connection, dialling
// one if needed. When the connection refuses it unsent (ErrUnprocessed:
// it died, is going away or closing), it is started once more on a new
// connection.
func (cl *Client) Start(ctx context.Context, req *Request) (*Call, error) {
	call, err := cl.start(ctx, req)
	if err == nil || !errors.Is(err, ErrUnprocessed) || ctx.Err() != nil {
		return call, err
	}
	if call, err = cl.start(ctx, req); err == nil {
		call.retried = true
	}
	return call, err
}

// Wait waits for the answer to a call from Start. When the server did not
// process it (GOAWAY below its stream, REFUSED_STREAM) and it was not sent
// twice already, it is sent once more, on a new connection if the old one
// is done. req must be the one given to Start.
func (cl *Client) Wait(ctx context.Context, call *Call, req *Request, resp *Response) error {
	retried := call.retried
	err := call.Wait(ctx, resp)
	if err == nil || retried || !errors.Is(err, ErrUnprocessed) || ctx.Err() != nil {
		return err
	}
	if call, err = cl.start(ctx, req); err != nil {
		return err
	}
	return call.Wait(ctx, resp)
}

func (cl *Client) start(ctx context.Context, req *Request) (*Call, error) {
	c, err := cl.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Start(ctx, req)
}

func (cl *Client) get(ctx context.Context) (*Conn, error) {
	if c := cl.conn.Load(); c != nil && c.Usable() {
		return c, nil
	}
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, fmt.Errorf("send request: %w: %w", errClientClosed, ErrUnprocessed)
	}
	if c := cl.conn.Load(); c != nil && c.Usable() {
		cl.mu.Unlock()
		return c, nil
	}
	d := cl.dialing
	if d == nil {
		// A connection that is not usable closes itself once its streams
		// finish: it is dead, draining after GOAWAY, or out of stream ids.
		if old := cl.conn.Swap(nil); old != nil {
			cl.retired = slices.DeleteFunc(cl.retired, (*Conn).finished)
			cl.retired = append(cl.retired, old)
		}
		d = &dialCall{done: make(chan struct{})}
		cl.dialing = d
		go cl.dial(d)
	}
	cl.mu.Unlock()
	select {
	case <-d.done:
		return d.conn, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dial runs detached from any one caller's ctx (the others would lose the
// dial with it), bounded by Config.DialTimeout.
func (cl *Client) dial(d *dialCall) {
	c, err := Dial(context.Background(), cl.cfg)
	cl.mu.Lock()
	cl.dialing = nil
	closed := cl.closed
	switch {
	case err != nil:
		d.err = err
	case closed:
		d.err = fmt.Errorf("send request: %w: %w", errClientClosed, ErrUnprocessed)
	default:
		cl.conn.Store(c)
		d.conn = c
	}
	close(d.done)
	cl.mu.Unlock()
	if err == nil && closed {
		_ = c.Close()
	}
}

// Close stops dialling and closes the connection gracefully (see
// Conn.Close).
func (cl *Client) Close() error {
	cl.mu.Lock()
	cl.closed = true
	d := cl.dialing
	cl.mu.Unlock()
	if d != nil {
		<-d.done
	}
	cl.mu.Lock()
	conns := append(cl.retired, cl.conn.Swap(nil))
	cl.retired = nil
	cl.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
	return nil
}

// MaxStreams is the server's SETTINGS_MAX_CONCURRENT_STREAMS on the current
// connection (defaultMaxStreams until its SETTINGS arrive), 0 before the
// first dial. Requests beyond it wait for a stream slot in Start.
func (cl *Client) MaxStreams() int {
	if c := cl.conn.Load(); c != nil {
		return c.MaxStreams()
	}
	return 0
}

// MaxStreams is the server's SETTINGS_MAX_CONCURRENT_STREAMS (see Client.MaxStreams).
func (c *Conn) MaxStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.maxStreams)
}

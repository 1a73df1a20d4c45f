package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func newClient(max int) (*http.Client, *Transport) {
	t := &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: max}
	return &http.Client{Transport: t}, t
}

// server is an httptest (net/http) receiver counting its connections.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t *testing.T, c *http.Client, url, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp, string(b)
}

// TestResponsesAndReuse: answers of every framing net/http writes come back
// whole, and the connection is reused after each unless the server said
// close.
func TestResponsesAndReuse(t *testing.T) {
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		want      string
		wantConns int64
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Request-Id", "r1")
			_, _ = w.Write(b)
		}, "hello", 1},
		{"empty 204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }, "", 1},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
		}, "part one, part two", 1},
		{"connection close", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}, "bye", 5},
		{"100 continue first", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusContinue)
			_, _ = io.WriteString(w, "after")
		}, "after", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, conns := server(t, tc.handler)
			c, _ := newClient(4)
			for range 5 {
				resp, body := post(t, c, srv.URL+"/in?q=1", "hello", nil)
				if resp.StatusCode >= 300 || body != tc.want {
					t.Fatalf("status %d body %q, want %q", resp.StatusCode, body, tc.want)
				}
			}
			if n := conns.Load(); n != tc.wantConns {
				t.Errorf("connections %d, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestRequestOnTheWire: the request line, Host, headers and body as a raw
// server reads them.
func TestRequestOnTheWire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(req.Body)
		got <- req.Method + " " + req.RequestURI + " " + req.Host + " " + req.Header.Get("X-A") + " " + req.Header.Get("Content-Length") + " " + string(b)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	}()
	c, _ := newClient(1)
	post(t, c, "http://"+ln.Addr().String()+"/p/a%20th?x=1&y=2", `{"a":1}`, map[string]string{"X-A": "b"})
	want := "POST /p/a%20th?x=1&y=2 " + ln.Addr().String() + " b 7 {\"a\":1}"
	if g := <-got; g != want {
		t.Fatalf("server read %q, want %q", g, want)
	}
}

// TestStaleConnection: a keep-alive connection the server closed while idle
// costs a replayable request nothing (it is sent again on a new
// connection); a POST without an Idempotency-Key is not replayed.
func TestStaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var served atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				served.Add(1)
				// Answer keep-alive, then close as an idle timeout would.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				time.Sleep(20 * time.Millisecond)
			}()
		}
	}()
	c, _ := newClient(1)
	url := "http://" + ln.Addr().String() + "/"
	post(t, c, url, "a", nil)
	time.Sleep(100 * time.Millisecond) // the server has closed the kept connection
	if resp, body := post(t, c, url, "b", map[string]string{"Idempotency-Key": "k1"}); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("replayable request: %d %q", resp.StatusCode, body)
	}
	time.Sleep(100 * time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("c"))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a POST without an Idempotency-Key was replayed on a new connection")
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("server answered %d requests, want 2", n)
	}
}

// TestDeadlineAndCancel: a server that never answers fails the request at
// its context's deadline, or at once when it is cancelled, and the
// connection is not reused.
// postPastDeadline posts to a url that never answers with a 100 ms context
// deadline: the call must end with the context's error, promptly.
func postPastDeadline(t *testing.T, c *http.Client, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("x"))
	start := time.Now()
	if _, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-block
		}
	})
	c, _ := newClient(4)
	postPastDeadline(t, c, srv.URL+"/slow")
	ctx2, cancel2 := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx2, http.MethodPost, srv.URL+"/slow", strings.NewReader("x"))
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want cancelled", err)
	}
	post(t, c, srv.URL+"/fast", "x", nil)
	if n := conns.Load(); n != 3 {
		t.Fatalf("connections %d, want 3 (interrupted ones are not reused)", n)
	}
}

// TestContextWatchedPerConnection: requests under one long-lived context
// share a connection (and its one context.AfterFunc); when that context
// ends while the connection is idle, the connection is not used again, and
// requests under another context are not disturbed.
func TestContextWatchedPerConnection(t *testing.T) {
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {})
	c, _ := newClient(4)
	do := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/in", strings.NewReader("x"))
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		return err
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	for i := range 5 {
		if err := do(ctx1); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("connections after 5 requests under one context: %d, want 1", n)
	}
	cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	for i := range 5 {
		if err := do(ctx2); err != nil {
			t.Fatalf("request %d under a second context: %v", i, err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections %d, want 2 (the one interrupted while idle is closed, the next reused)", n)
	}
}

// TestConnectionCap: concurrent requests never open more than
// MaxConnsPerHost connections; they wait for one instead.
func TestConnectionCap(t *testing.T) {
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
	})
	c, _ := newClient(3)
	errs := make(chan error, 40)
	for range 40 {
		go func() {
			resp, err := c.Post(srv.URL, "text/plain", strings.NewReader("x"))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n > 3 {
		t.Fatalf("connections %d, want ≤ 3", n)
	}
}

// TestHeaderInjectionRefused: a CR or LF in a header value never reaches
// the wire.
func TestHeaderInjectionRefused(t *testing.T) {
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {})
	_, tr := newClient(1)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
	req.Header["X-Evil"] = []string{"a\r\nX-Injected: 1"}
	if _, err := tr.RoundTrip(req); err == nil {
		t.Fatal("a header value with CRLF was sent")
	}
}

// TestUnreadBodyClosesConnection: a response closed long before its end
// costs its connection rather than leaving unread bytes for the next one.
func TestUnreadBodyClosesConnection(t *testing.T) {
	big := strings.Repeat("z", 64<<10)
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
		}
	})
	c, _ := newClient(2)
	resp, err := c.Post(srv.URL+"/big", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	post(t, c, srv.URL+"/small", "x", nil)
	if n := conns.Load(); n != 2 {
		t.Fatalf("connections %d, want 2", n)
	}
}

// TestIdleConnectionsReaped: a destination used once does not keep its
// connection open past IdleConnTimeout, even if it is never asked again.
func TestIdleConnectionsReaped(t *testing.T) {
	var closed atomic.Int64
	once := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	once.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	once.Start()
	defer once.Close()
	other, _ := server(t, func(w http.ResponseWriter, r *http.Request) {})
	tr := &Transport{Dial: (&net.Dialer{}).DialContext, IdleConnTimeout: 50 * time.Millisecond}
	c := &http.Client{Transport: tr}
	post(t, c, once.URL, "x", nil)
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(30 * time.Millisecond)
		post(t, c, other.URL, "x", nil) // traffic elsewhere drives the sweep
	}
	if closed.Load() == 0 {
		t.Fatal("the idle connection to a destination used once was never closed")
	}
	tr.mu.Lock()
	_, kept := tr.hosts[strings.TrimPrefix(once.URL, "http://")]
	tr.mu.Unlock()
	if kept {
		t.Fatal("a destination with no connection left is still remembered")
	}
}

// TestMaxIdleConns: past the cap across hosts, a finished connection is
// closed instead of kept.
func TestMaxIdleConns(t *testing.T) {
	tr := &Transport{Dial: (&net.Dialer{}).DialContext, MaxIdleConns: 2}
	c := &http.Client{Transport: tr}
	var conns []*atomic.Int64
	for range 4 {
		srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {})
		post(t, c, srv.URL, "x", nil)
		post(t, c, srv.URL, "x", nil)
		conns = append(conns, n)
	}
	if n := tr.idleCount.Load(); n != 2 {
		t.Fatalf("%d idle connections kept, want 2", n)
	}
	// The first two hosts reused their connection; the last two could not
	// keep theirs and dialled again.
	for i, n := range conns {
		if want := int64(1 + i/2); n.Load() != want {
			t.Errorf("host %d: %d connections, want %d", i, n.Load(), want)
		}
	}
}

// TestTimeout: Transport.Timeout bounds a request whose context has no
// deadline, both on the wire (a receiver that never answers) and while it
// waits for a connection (the only one is busy), and a context deadline
// sooner than Timeout still wins with the context's own error.
func TestTimeout(t *testing.T) {
	block := make(chan struct{})
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-block
		case "/hold": // answers, then holds the body open
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-block
		}
	})
	t.Cleanup(func() { close(block) }) // before the server's Close, which waits for handlers
	tr := &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: 1, Timeout: 100 * time.Millisecond}
	c := &http.Client{Transport: tr}

	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		path    string
		busy    bool // another request holds the only connection
		wantErr func(error) bool
	}{
		{name: "no answer", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			path: "/slow", wantErr: func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
		{name: "no free connection", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			path: "/fast", busy: true, wantErr: func(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }},
		{name: "context deadline sooner", ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 30*time.Millisecond)
		}, path: "/slow", wantErr: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.busy {
				// Its connection stays taken until the body is closed.
				resp, err := c.Post(srv.URL+"/hold", "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+tc.path, strings.NewReader("x"))
			start := time.Now()
			_, err := c.Do(req)
			if !tc.wantErr(err) {
				t.Fatalf("err = %v", err)
			}
			var ne net.Error
			if tc.name != "context deadline sooner" && (!errors.As(err, &ne) || !ne.Timeout()) {
				t.Fatalf("err = %v: want a net.Error with Timeout() true", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("connections %d, want 3 (each timed-out one is closed, the waiting request opened none)", n)
	}
}

// linesBody is a body carrying its request's header lines (HeaderLines),
// as the webhook sender's is.
type linesBody struct {
	*strings.Reader
	b     string
	lines string
	idem  bool
}

func (l *linesBody) Close() error                { return nil }
func (l *linesBody) Bytes() []byte               { return []byte(l.b) }
func (l *linesBody) HeaderLines() ([]byte, bool) { return []byte(l.lines), l.idem }

// TestHeaderLinesOnTheWire: header lines that travel with the body arrive
// as headers beside the Header map's, and an Idempotency-Key among them
// makes the request replayable on a stale connection, as in the map.
func TestHeaderLinesOnTheWire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				b, _ := io.ReadAll(req.Body)
				got <- req.Header.Get("X-A") + "|" + req.Header.Get("X-Line") + "|" + req.Header.Get("Idempotency-Key") + "|" + string(b)
				// Answer keep-alive, then close as an idle timeout would.
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				time.Sleep(20 * time.Millisecond)
			}()
		}
	}()
	c, _ := newClient(1)
	url := "http://" + ln.Addr().String() + "/"
	send := func(body string, lines string, idem bool) error {
		req, err := http.NewRequest(http.MethodPost, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-A", "map")
		req.Body = &linesBody{Reader: strings.NewReader(body), b: body, lines: lines, idem: idem}
		req.ContentLength = int64(len(body))
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := send("one", "X-Line: 1\r\nIdempotency-Key: k1\r\n", true); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "map|1|k1|one" {
		t.Fatalf("server read %q", g)
	}
	time.Sleep(100 * time.Millisecond) // the server has closed the kept connection
	if err := send("two", "X-Line: 2\r\nIdempotency-Key: k2\r\n", true); err != nil {
		t.Fatalf("a request whose lines hold an Idempotency-Key was not replayed on a stale connection: %v", err)
	}
	if g := <-got; g != "map|2|k2|two" {
		t.Fatalf("server read %q", g)
	}
	time.Sleep(100 * time.Millisecond)
	if err := send("three", "X-Line: 3\r\n", false); err == nil {
		t.Fatal("a POST without an Idempotency-Key was replayed on a new connection")
	}
}

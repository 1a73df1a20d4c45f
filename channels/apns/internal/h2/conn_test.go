package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a real Go HTTP/2 server (net/http over TLS with ALPN h2).
type server struct {
	*httptest.Server
	conns atomic.Int64 // TCP connections accepted
}

func newServer(t *testing.T, h http.HandlerFunc, h2 *http.HTTP2Config) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.EnableHTTP2 = true
	s.Config.HTTP2 = h2
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// config dials the server with TLS and ALPN h2, the way the APNs Sender does.
func (s *server) config() Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	addr := s.Listener.Addr().String()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}}}
	return Config{
		Dial:      func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		Authority: addr,
		Logger:    slog.New(slog.DiscardHandler),
	}
}

func dial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func post(path string, body []byte, hdr ...Field) *Request {
	return &Request{Path: path, Header: hdr, Body: body}
}

// echo answers with the request's apns-id, its body's length and SHA-256,
// and a few request properties as headers, so a test can tell answers
// apart and check what arrived.
func echo(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	sum := sha256.Sum256(b)
	w.Header().Set("apns-id", r.Header.Get("apns-id"))
	w.Header().Set("x-method", r.Method)
	w.Header().Set("x-host", r.Host)
	w.Header().Set("x-auth", r.Header.Get("Authorization"))
	fmt.Fprintf(w, "%s %d %s %s", r.URL.Path, len(b), hex.EncodeToString(sum[:]), r.Header.Get("apns-topic"))
}

func want(path string, body []byte, topic string) string {
	sum := sha256.Sum256(body)
	return fmt.Sprintf("%s %d %s %s", path, len(body), hex.EncodeToString(sum[:]), topic)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling, not synchronising
	}
}

func TestRoundTripAgainstGoServer(t *testing.T) {
	srv := newServer(t, echo, nil)
	c := dial(t, srv.config())
	tests := []struct {
		name string
		req  *Request
	}{
		{"empty body", post("/3/device/aa", nil, Field{Name: "apns-topic", Value: "t1"})},
		{"small body", post("/3/device/bb", []byte(`{"aps":{}}`), Field{Name: "apns-topic", Value: "t2"}, Field{Name: "apns-id", Value: "id-1", Unique: true})},
		{"body over one frame", post("/3/device/cc", bytes.Repeat([]byte("x"), 40<<10), Field{Name: "apns-topic", Value: "t3"})},
		{"long unique value", post("/3/device/"+strings.Repeat("d", 300), []byte("b"), Field{Name: "apns-topic", Value: "t4"}, Field{Name: "apns-collapse-id", Value: strings.Repeat("e", 200), Unique: true})},
		{"path in two parts", &Request{Path: "/3/device/", PathSuffix: "ff00", Header: []Field{{Name: "apns-topic", Value: "t5"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp Response
			if err := c.RoundTrip(context.Background(), tc.req, &resp); err != nil {
				t.Fatal(err)
			}
			topic := tc.req.Header[0].Value
			if resp.Status != http.StatusOK || string(resp.Body) != want(tc.req.Path+tc.req.PathSuffix, tc.req.Body, topic) {
				t.Fatalf("status %d body %q", resp.Status, resp.Body)
			}
		})
	}
}

func TestManyConcurrentRequestsShareOneConnection(t *testing.T) {
	srv := newServer(t, echo, nil)
	cl := NewClient(srv.config())
	t.Cleanup(func() { _ = cl.Close() })
	const workers, each = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("%08d-0000-0000-0000-000000000000", w*each+i)
				body := []byte(strings.Repeat(strconv.Itoa(i), i+1))
				req := post("/3/device/"+strconv.Itoa(w), body,
					Field{Name: "authorization", Value: "bearer constant"},
					Field{Name: "apns-topic", Value: "com.example"},
					Field{Name: "apns-id", Value: id, Unique: true})
				var resp Response
				if err := cl.RoundTrip(context.Background(), req, &resp); err != nil {
					errs <- err
					return
				}
				if resp.ID != id || string(resp.Body) != want(req.Path, body, "com.example") {
					errs <- fmt.Errorf("request %s got id %s body %q", id, resp.ID, resp.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("server saw %d connections, want 1", n)
	}
}

func TestNeverMoreStreamsThanMaxConcurrentStreams(t *testing.T) {
	var cur, peak atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(5 * time.Millisecond) // a slow handler, so streams overlap
		echo(w, r)
	}, &http.HTTP2Config{MaxConcurrentStreams: 2})
	c := dial(t, srv.config())
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 20 {
		wg.Go(func() {
			var resp Response
			if err := c.RoundTrip(context.Background(), post("/x/"+strconv.Itoa(i), []byte("b")), &resp); err != nil || resp.Status != 200 {
				t.Errorf("request %d: %v (status %d)", i, err, resp.Status)
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 2 || p < 2 {
		t.Fatalf("server saw at most %d concurrent streams, want exactly 2", p)
	}
}

func TestSendWaitsForFlowControlWindow(t *testing.T) {
	// The server grants 1 KiB per stream and the minimum 64 KiB per
	// connection, and replenishes as its handlers read.
	srv := newServer(t, echo, &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 10, MaxReceiveBufferPerConnection: 65535})
	c := dial(t, srv.config())
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			body := bytes.Repeat([]byte{byte('a' + i)}, 200<<10+i)
			var resp Response
			if err := c.RoundTrip(context.Background(), post("/big", body), &resp); err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if string(resp.Body) != want("/big", body, "") {
				t.Errorf("request %d: server got %q", i, resp.Body)
			}
		})
	}
	wg.Wait()
}

func TestCancelResetsStreamAndFreesSlot(t *testing.T) {
	started := make(chan struct{}, 1)
	reset := make(chan struct{}, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-r.Context().Done() // the stream was reset (or the conn closed)
			reset <- struct{}{}
			return
		}
		echo(w, r)
	}, &http.HTTP2Config{MaxConcurrentStreams: 1})
	c := dial(t, srv.config())
	tests := []struct {
		name string
		body []byte
	}{
		{"waiting for the answer", []byte("b")},
		{"no body", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				var resp Response
				errc <- c.RoundTrip(ctx, post("/slow", tc.body), &resp)
			}()
			<-started
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			select {
			case <-reset:
			case <-time.After(10 * time.Second):
				t.Fatal("server never saw the stream end")
			}
			// The only slot is free again.
			var resp Response
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			if err := c.RoundTrip(ctx2, post("/after", nil), &resp); err != nil || resp.Status != 200 {
				t.Fatalf("next request: %v %d", err, resp.Status)
			}
		})
	}
}

func TestCancelWhileWaitingForSlotOrWindow(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = io.Copy(io.Discard, r.Body)
	}, &http.HTTP2Config{MaxConcurrentStreams: 1, MaxReceiveBufferPerStream: 1})
	c := dial(t, srv.config())
	holder := make(chan error, 1)
	go func() {
		var resp Response
		holder <- c.RoundTrip(context.Background(), post("/hold", nil), &resp)
	}()
	eventually(t, "the slot to be taken", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.active == 1
	})
	tests := []struct {
		name string
		body []byte
	}{
		{"waiting for a slot", []byte("x")},
		{"waiting for a slot with a large body", bytes.Repeat([]byte("y"), 100<<10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			var resp Response
			if err := c.RoundTrip(ctx, post("/wait", tc.body), &resp); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want DeadlineExceeded", err)
			}
		})
	}
	close(release)
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	// With a 1-byte stream window every DATA frame waits for the handler's
	// WINDOW_UPDATE; cancelling mid-body resets the stream.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		eventually(t, "a sender waiting for window", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.windowQ.head != nil
		})
		cancel()
	}()
	var resp Response
	if err := c.RoundTrip(ctx, post("/body", bytes.Repeat([]byte("z"), 100<<10)), &resp); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel mid-body: err = %v, want Canceled", err)
	}
	if err := c.RoundTrip(context.Background(), post("/after", nil), &resp); err != nil {
		t.Fatalf("request after: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != 0 || len(c.streams) != 0 || c.slotQ.head != nil || c.windowQ.head != nil {
		t.Fatalf("leftover state: active %d streams %d", c.active, len(c.streams))
	}
}

func TestServerGracefulShutdownMidTraffic(t *testing.T) {
	var served atomic.Int64
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		time.Sleep(2 * time.Millisecond) // keep streams in flight across the GOAWAY
		echo(w, r)
	}, nil)
	c := dial(t, srv.config())
	var ok, unprocessed, other atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 20 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var resp Response
				err := c.RoundTrip(context.Background(), post("/p", []byte("b")), &resp)
				switch {
				case err == nil && resp.Status == 200:
					ok.Add(1)
				case errors.Is(err, ErrUnprocessed):
					unprocessed.Add(1)
					return // the connection takes nothing new
				default:
					other.Add(1)
					t.Logf("request failed: %v", err)
					return
				}
			}
		})
	}
	eventually(t, "traffic", func() bool { return served.Load() > 50 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	close(stop)
	wg.Wait()
	if other.Load() != 0 {
		t.Fatalf("%d requests failed with something other than ErrUnprocessed (%d ok, %d unprocessed)", other.Load(), ok.Load(), unprocessed.Load())
	}
	if c.Usable() {
		t.Fatal("connection still usable after GOAWAY")
	}
	var resp Response
	if err := c.RoundTrip(context.Background(), post("/late", nil), &resp); !errors.Is(err, ErrUnprocessed) {
		t.Fatalf("request after GOAWAY: %v, want ErrUnprocessed", err)
	}
	t.Logf("%d answered, %d refused as unprocessed", ok.Load(), unprocessed.Load())
}

func TestServerDropsConnection(t *testing.T) {
	var inHandler atomic.Int64
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			inHandler.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		echo(w, r)
	}, nil)
	defer close(release)
	cl := NewClient(srv.config())
	t.Cleanup(func() { _ = cl.Close() })
	errc := make(chan error, 5)
	for range 5 {
		go func() {
			var resp Response
			errc <- cl.RoundTrip(context.Background(), post("/hang", nil), &resp)
		}()
	}
	eventually(t, "five requests in the handler", func() bool { return inHandler.Load() == 5 })
	srv.CloseClientConnections()
	for range 5 {
		err := <-errc
		if err == nil || errors.Is(err, ErrUnprocessed) || !strings.Contains(err.Error(), "connection lost") {
			t.Fatalf("pending request: %v, want a connection-lost error", err)
		}
	}
	var resp Response
	if err := cl.RoundTrip(context.Background(), post("/again", nil), &resp); err != nil || resp.Status != 200 {
		t.Fatalf("request after the drop: %v", err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Fatalf("server saw %d connections, want 2 (one redial)", n)
	}
}

func TestLargeResponseHeaders(t *testing.T) {
	big := strings.Repeat("v", 40<<10) // over two 16 KiB frames: HEADERS + CONTINUATIONs
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("apns-id", "big-one")
		w.Header().Set("x-big", big)
		if r.URL.Path == "/huge" {
			for i := range 10 {
				w.Header().Set("x-huge-"+strconv.Itoa(i), strings.Repeat("h", 10<<10))
			}
		}
		w.Header().Set("retry-after", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"reason":"TooManyRequests"}`))
	}, &http.HTTP2Config{MaxEncoderHeaderTableSize: 4096})
	cfg := srv.config()
	cfg.MaxResponseHeaderBytes = 1 << 20
	c := dial(t, cfg)
	var resp Response
	if err := c.RoundTrip(context.Background(), post("/big", nil), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Status != 429 || resp.ID != "big-one" || resp.RetryAfter != "7" || string(resp.Body) != `{"reason":"TooManyRequests"}` {
		t.Fatalf("got %+v", resp)
	}
	// A header list over our limit (in fields each under it): that stream
	// fails, the connection goes on.
	small := srv.config()
	small.MaxResponseHeaderBytes = 64 << 10
	c2 := dial(t, small)
	err := c2.RoundTrip(context.Background(), post("/huge", nil), &resp)
	if err == nil {
		t.Fatal("want an error for headers over the limit")
	}
	if err := c2.RoundTrip(context.Background(), post("/big", nil), &resp); err != nil || resp.ID != "big-one" {
		t.Fatalf("request after: %v %+v", err, resp.ID)
	}
}

func TestChangingConstantHeaderMidConnection(t *testing.T) {
	srv := newServer(t, echo, nil)
	c := dial(t, srv.config())
	// A JWT is refreshed about every 50 minutes: the new value must be
	// indexed afresh and the old one never reappear.
	for round, bearer := range []string{"bearer one." + strings.Repeat("a", 180), "bearer two." + strings.Repeat("b", 180), "bearer one." + strings.Repeat("a", 180)} {
		for i := range 5 {
			var resp Response
			err := c.RoundTrip(context.Background(), post("/3/device/x", nil,
				Field{Name: "authorization", Value: bearer},
				Field{Name: "apns-topic", Value: "com.example"},
				Field{Name: "apns-id", Value: strconv.Itoa(round*10 + i), Unique: true}), &resp)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ID != strconv.Itoa(round*10+i) {
				t.Fatalf("round %d: apns-id %q", round, resp.ID)
			}
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("server saw %d connections", n)
	}
}

func TestAuthorizationArrivesIntact(t *testing.T) {
	var got []string
	var mu sync.Mutex
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization")+"|"+r.Header.Get("Apns-Topic")+"|"+r.Host+"|"+r.Method)
		mu.Unlock()
	}, nil)
	c := dial(t, srv.config())
	values := []string{"bearer A", "bearer A", "bearer B", "bearer B", "bearer A"}
	for _, v := range values {
		var resp Response
		if err := c.RoundTrip(context.Background(), post("/p", nil, Field{Name: "authorization", Value: v}, Field{Name: "apns-topic", Value: "t"}), &resp); err != nil {
			t.Fatal(err)
		}
	}
	host := srv.Listener.Addr().String()
	for i, v := range values {
		if w := v + "|t|" + host + "|POST"; got[i] != w {
			t.Fatalf("request %d arrived as %q, want %q", i, got[i], w)
		}
	}
}

func TestReceiveWindowIsReplenished(t *testing.T) {
	payload := bytes.Repeat([]byte("r"), 3<<20)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(payload)
	}, nil)
	cfg := srv.config()
	cfg.StreamWindow, cfg.ConnWindow = initialWindow, initialWindow
	cfg.MaxResponseBody = 100
	c := dial(t, cfg)
	for i := range 3 {
		var resp Response
		// Without our WINDOW_UPDATEs the server would stall at 64 KiB.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.RoundTrip(ctx, post("/download", nil), &resp)
		cancel()
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		if len(resp.Body) != 100 {
			t.Fatalf("kept %d body bytes, want the first 100", len(resp.Body))
		}
	}
}

func TestHealthCheckPingsIdleConnection(t *testing.T) {
	srv := newServer(t, echo, nil)
	cfg := srv.config()
	cfg.ReadIdleTimeout = 20 * time.Millisecond
	c := dial(t, cfg)
	eventually(t, "a health-check PING and its ACK", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pingSeq >= 2 && !c.pingOut
	})
	if !c.Usable() {
		t.Fatal("a healthy connection was closed")
	}
}

func TestGracefulCloseLetsStreamsFinish(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		echo(w, r)
	}, nil)
	c, err := Dial(context.Background(), srv.config())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		var resp Response
		errc <- c.RoundTrip(context.Background(), post("/in-flight", nil), &resp)
	}()
	<-started
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	eventually(t, "Close to refuse new streams", func() bool { return !c.Usable() })
	var resp Response
	if err := c.RoundTrip(context.Background(), post("/new", nil), &resp); !errors.Is(err, ErrUnprocessed) {
		t.Fatalf("request during Close: %v, want ErrUnprocessed", err)
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	<-closed
}

func TestDialRequiresH2(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(echo)) // HTTP/1.1 only
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	addr := srv.Listener.Addr().String()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}}
	_, err := Dial(context.Background(), Config{Dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, Authority: addr})
	if err == nil || !strings.Contains(err.Error(), "want h2") {
		t.Fatalf("err = %v, want an ALPN error", err)
	}
}

func TestClientDialsOnceForConcurrentFirstRequests(t *testing.T) {
	srv := newServer(t, echo, nil)
	var dials atomic.Int64
	cfg := srv.config()
	inner := cfg.Dial
	cfg.Dial = func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return inner(ctx)
	}
	cl := NewClient(cfg)
	t.Cleanup(func() { _ = cl.Close() })
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			var resp Response
			if err := cl.RoundTrip(context.Background(), post("/p", nil), &resp); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
}

func TestErrorsDoNotEchoValues(t *testing.T) {
	srv := newServer(t, echo, nil)
	c := dial(t, srv.config())
	secret := "bearer s3cr3t\nx"
	tests := []struct {
		name string
		req  *Request
	}{
		{"constant value", post("/p", nil, Field{Name: "authorization", Value: secret})},
		{"unique value", post("/p", nil, Field{Name: "apns-id", Value: secret, Unique: true})},
		{"path", post("/3/device/s3cr3t\n", nil)},
		{"path suffix", &Request{Path: "/3/device/", PathSuffix: "s3cr3t\r"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp Response
			err := c.RoundTrip(context.Background(), tc.req, &resp)
			if err == nil {
				t.Fatal("want an error for a value with a newline")
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error echoes the value: %v", err)
			}
		})
	}
	var resp Response
	if err := c.RoundTrip(context.Background(), post("/p", nil, Field{Name: "Upper", Value: "x"}), &resp); err == nil {
		t.Fatal("an upper-case field name was accepted")
	}
	if err := c.RoundTrip(context.Background(), post("/ok", nil), &resp); err != nil {
		t.Fatalf("the connection broke: %v", err)
	}
}

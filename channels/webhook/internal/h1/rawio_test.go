package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWriteThenRead: the request is written by the read that waits for its
// answer (rawio.go), on a fresh connection, a busy one and one back from a
// pause alike. Every outcome the ordinary path has holds there too: answers
// of any delay, deadlines (a body larger than the socket's buffers and a
// server that closed the connection right after its last answer have tests
// of their own; a server that sent something while the connection sat
// idle, TestIdleConnectionWithUnaskedBytes).
func TestWriteThenRead(t *testing.T) {
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(50 * time.Millisecond)
		case "/never":
			// With the body read, the server watches the connection and
			// ends the context when the client gives up.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Len", strconv.FormatInt(n, 10))
		_, _ = io.WriteString(w, "ok")
	})
	c, tr := newClient(1)
	post(t, c, srv.URL+"/", "warm", nil)
	if n := tr.rawSends.Load(); n != 1 {
		t.Fatalf("a fresh connection's first request: %d written by the waiting read, want 1", n)
	}

	t.Run("answers on a busy connection", func(t *testing.T) {
		before := tr.rawSends.Load()
		for i := range 200 {
			body := strings.Repeat("x", i)
			resp, b := post(t, c, srv.URL+"/", body, nil)
			if b != "ok" || resp.Header.Get("X-Len") != strconv.Itoa(i) {
				t.Fatalf("request %d: %q, server read %s bytes", i, b, resp.Header.Get("X-Len"))
			}
		}
		if n := tr.rawSends.Load() - before; n != 200 {
			t.Fatalf("%d of 200 requests written by the waiting read", n)
		}
	})
	t.Run("a slow answer is waited for", func(t *testing.T) {
		before := tr.rawSends.Load()
		if _, b := post(t, c, srv.URL+"/slow", "x", nil); b != "ok" {
			t.Fatalf("answer %q", b)
		}
		if tr.rawSends.Load() != before+1 {
			t.Fatal("not written by the waiting read")
		}
	})
	t.Run("deadline while waiting", func(t *testing.T) {
		post(t, c, srv.URL+"/", "busy", nil)
		before := tr.rawSends.Load()
		postPastDeadline(t, c, srv.URL+"/never")
		if tr.rawSends.Load() != before+1 {
			t.Fatal("not written by the waiting read")
		}
	})
	t.Run("transport timeout while waiting", func(t *testing.T) {
		tc := &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: 1, Timeout: 100 * time.Millisecond}
		hc := &http.Client{Transport: tc}
		// On a fresh connection: its first request is the waiting read's too.
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/never", strings.NewReader("x"))
		_, err := hc.Do(req)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a timeout (net.Error, os.ErrDeadlineExceeded)", err)
		}
		if tc.rawSends.Load() != 1 {
			t.Fatalf("%d requests written by the waiting read, want 1", tc.rawSends.Load())
		}
	})
	t.Run("a connection back from a pause, peeked first", func(t *testing.T) {
		post(t, c, srv.URL+"/", "busy", nil)
		time.Sleep(peekAfterIdle + 100*time.Millisecond)
		before := tr.rawSends.Load()
		if _, b := post(t, c, srv.URL+"/", "x", nil); b != "ok" {
			t.Fatalf("answer %q", b)
		}
		if tr.rawSends.Load() != before+1 {
			t.Fatal("not written by the waiting read after an idle pause")
		}
	})
	if n := conns.Load(); n != 3 {
		// The first, the one after the deadline (interrupted, not reused),
		// and the timeout subtest's own client.
		t.Errorf("connections %d, want 3", n)
	}
}

// TestWriteThenReadPartialWrite: a request larger than the socket can take
// at once (the client's send buffer at 64 KiB, the server not reading yet)
// is written in part by the waiting read and the rest by net.Conn's Write,
// and arrives whole.
func TestWriteThenReadPartialWrite(t *testing.T) {
	srv := newRawServer(t, func(_ *rawServer, _ int, c net.Conn, next func() (*http.Request, error)) {
		for i := 0; ; i++ {
			if i == 1 {
				// The big request: let the client's buffers fill first.
				time.Sleep(300 * time.Millisecond)
			}
			if _, err := next(); err != nil {
				return
			}
			_, _ = io.WriteString(c, okAnswer)
		}
	})
	tr := &Transport{MaxConnsPerHost: 1, Timeout: 10 * time.Second, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			err = nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
		}
		return nc, err
	}}
	c := &http.Client{Transport: tr}
	post(t, c, srv.url(), "warm", nil)
	body := strings.Repeat("0123456789abcdef", 512<<10) // 8 MiB
	if _, b := post(t, c, srv.url(), body, nil); b != "ok" || srv.lastBody.Load() != int64(len(body)) {
		t.Fatalf("answer %q, server read %d of %d bytes", b, srv.lastBody.Load(), len(body))
	}
	if tr.rawSends.Load() != 2 || tr.rawRests.Load() != 1 {
		t.Fatalf("waiting-read writes %d, of them finished by Write %d; want 2 (warm-up, big) and 1", tr.rawSends.Load(), tr.rawRests.Load())
	}
}

// TestWriteThenReadServerClosedAfterAnswer: a server that closes the
// connection right after an answer without saying so: the next request,
// sent at once (the waiting read's path), fails before any answer and is
// replayed on a fresh connection when it carries an Idempotency-Key, and
// fails otherwise. The server sees each request it answers once.
func TestWriteThenReadServerClosedAfterAnswer(t *testing.T) {
	srv := newRawServer(t, func(_ *rawServer, _ int, c net.Conn, next func() (*http.Request, error)) {
		if _, err := next(); err == nil {
			_, _ = io.WriteString(c, okAnswer)
		}
	})
	c, tr := newClient(1)
	url := srv.url()
	post(t, c, url, "a", nil)
	if resp, body := post(t, c, url, "b", map[string]string{"Idempotency-Key": "k1"}); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("replayable request: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("c"))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a POST without an Idempotency-Key was replayed on a new connection")
	}
	if n := srv.requests.Load(); n != 2 {
		t.Fatalf("server answered %d requests, want 2", n)
	}
	if n := tr.rawSends.Load(); n != 4 {
		t.Fatalf("%d requests written by the waiting read, want 4 (two on fresh connections, two on closed ones)", n)
	}
}

// TestIdleConnectionWithUnaskedBytes: a server that sends a 408 on a kept
// connection after a while (as some do before an idle timeout's close) and
// closes it: the next request, after a pause, goes on a fresh connection
// and gets its own answer, not the 408 — even a POST without an
// Idempotency-Key, since the stale connection is dropped before anything is
// written on it. The same with pipelining on.
func TestIdleConnectionWithUnaskedBytes(t *testing.T) {
	for _, pipeline := range []int{1, 8} {
		t.Run("pipeline="+strconv.Itoa(pipeline), func(t *testing.T) { testIdleConnectionWithUnaskedBytes(t, pipeline) })
	}
}

// okAnswer is a raw server's keep-alive 200 with body "ok".
const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func testIdleConnectionWithUnaskedBytes(t *testing.T, pipeline int) {
	for _, tc := range []struct {
		name  string
		after string // what the server sends unasked before closing
		close bool
	}{
		{name: "408 then close", after: "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", close: true},
		{name: "close alone", close: true},
		{name: "408, connection left open", after: "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(_ *rawServer, conn int, c net.Conn, next func() (*http.Request, error)) {
				if _, err := next(); err != nil {
					return
				}
				_, _ = io.WriteString(c, okAnswer)
				if conn == 1 {
					time.Sleep(50 * time.Millisecond)
					_, _ = io.WriteString(c, tc.after)
					if tc.close {
						return
					}
				}
				_, _ = next() // until the client or the test's end closes it
			})
			c, tr := newClient(1)
			tr.Pipeline = pipeline
			url := srv.url()
			post(t, c, url, "a", nil)
			time.Sleep(peekAfterIdle + 100*time.Millisecond)
			if resp, body := post(t, c, url, "b", nil); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("after the pause: %d %q, want the server's own 200", resp.StatusCode, body)
			}
			if n, m := srv.requests.Load(), srv.conns.Load(); n != 2 || m != 2 {
				t.Fatalf("server answered %d requests on %d connections, want 2 on 2", n, m)
			}
		})
	}
}

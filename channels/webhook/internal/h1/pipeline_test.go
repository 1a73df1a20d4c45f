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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer accepts connections and hands each, with a reader, to serve;
// it counts connections and requests read through next.
type rawServer struct {
	ln       net.Listener
	mu       sync.Mutex
	open     []net.Conn
	conns    atomic.Int64
	requests atomic.Int64
	lastBody atomic.Int64 // bytes of the last request body read through next
}

func newRawServer(t *testing.T, serve func(s *rawServer, conn int, c net.Conn, next func() (*http.Request, error))) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			_ = c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.conns.Add(1))
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				serve(s, n, c, func() (*http.Request, error) {
					req, err := http.ReadRequest(br)
					if err != nil {
						return nil, err
					}
					n, _ := io.Copy(io.Discard, req.Body)
					s.lastBody.Store(n)
					s.requests.Add(1)
					return req, nil
				})
			})
		}
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() + "/in" }

func pipelinedClient(max, depth int) *http.Client {
	return &http.Client{Transport: &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: max, Pipeline: depth}}
}

func answer(c net.Conn, req *http.Request) error {
	body := req.Header.Get("X-Seq")
	_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return err
}

// TestPipelineSendsBeforeAnswers: a receiver that answers only once it holds
// 8 requests on one connection gets them all on one connection, and every
// caller gets its own answer. Without pipelining the callers would each
// wait for an answer that never comes.
func TestPipelineSendsBeforeAnswers(t *testing.T) {
	const n = 8
	srv := newRawServer(t, func(_ *rawServer, _ int, c net.Conn, next func() (*http.Request, error)) {
		for {
			var held []*http.Request
			for len(held) < n {
				req, err := next()
				if err != nil {
					return
				}
				held = append(held, req)
			}
			for _, req := range held {
				if answer(c, req) != nil {
					return
				}
			}
		}
	})
	client := pipelinedClient(1, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range 3 * n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url(), strings.NewReader("{}"))
			seq := fmt.Sprint(i)
			req.Header.Set("X-Seq", seq)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if string(b) != seq {
				errs <- fmt.Errorf("request %s got the answer for %q", seq, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := srv.conns.Load(); got != 1 {
		t.Errorf("connections = %d, want 1", got)
	}
	if got := srv.requests.Load(); got != 3*n {
		t.Errorf("requests = %d, want %d", got, 3*n)
	}
}

// TestPipelineConnectionDies: the receiver reads three pipelined requests,
// answers the first and closes. The two unanswered ones are in doubt: with
// an Idempotency-Key they go once more on a fresh connection (the
// connection answered before it closed, as a receiver's limit of requests
// per connection looks); without
// one they fail as network errors for the worker pool to judge.
// (A request that broke a fresh connection with no answer at all is not
// re-sent here: that is a receiver failing, for the pool's backoff.)
func TestPipelineConnectionDies(t *testing.T) {
	for _, tc := range []struct {
		name         string
		idempotent   bool
		wantOK       int
		wantRequests int64
		wantConns    int64
	}{
		{name: "idempotency key: re-sent on a fresh connection", idempotent: true, wantOK: 3, wantRequests: 5, wantConns: 2},
		{name: "no key: network errors", idempotent: false, wantOK: 1, wantRequests: 3, wantConns: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(_ *rawServer, conn int, c net.Conn, next func() (*http.Request, error)) {
				if conn > 1 {
					for {
						req, err := next()
						if err != nil || answer(c, req) != nil {
							return
						}
					}
				}
				var held []*http.Request
				for len(held) < 3 {
					req, err := next()
					if err != nil {
						return
					}
					held = append(held, req)
				}
				_ = answer(c, held[0])
			})
			// One connection: the three requests meet in its line.
			client := pipelinedClient(1, 8)
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			var firstErr atomic.Value
			for i := range 3 {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodPost, srv.url(), strings.NewReader("{}"))
					req.Header.Set("X-Seq", fmt.Sprint(i))
					if tc.idempotent {
						req.Header.Set("Idempotency-Key", fmt.Sprint("k", i))
					}
					resp, err := client.Do(req)
					if err != nil {
						failed.Add(1)
						firstErr.Store(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					ok.Add(1)
				})
			}
			wg.Wait()
			if int(ok.Load()) != tc.wantOK || int(failed.Load()) != 3-tc.wantOK {
				t.Fatalf("ok %d failed %d (%v), want ok %d", ok.Load(), failed.Load(), firstErr.Load(), tc.wantOK)
			}
			if got := srv.requests.Load(); got != tc.wantRequests {
				t.Errorf("requests received = %d, want %d", got, tc.wantRequests)
			}
			if got := srv.conns.Load(); got != tc.wantConns {
				t.Errorf("connections = %d, want %d", got, tc.wantConns)
			}
		})
	}
}

// TestPipelineTimeoutAndCancel: a receiver that never answers holds every
// request in line until Timeout (a net.Error with Timeout(), as on the
// one-request path), and a canceled context fails its request with the
// context's error, taking the line with it.
func TestPipelineTimeoutAndCancel(t *testing.T) {
	srv := newRawServer(t, func(_ *rawServer, _ int, c net.Conn, next func() (*http.Request, error)) {
		for {
			if _, err := next(); err != nil {
				return
			}
		}
	})
	t.Run("timeout", func(t *testing.T) {
		client := &http.Client{Transport: &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: 1, Pipeline: 4, Timeout: 200 * time.Millisecond}}
		var wg sync.WaitGroup
		var timeouts atomic.Int64
		for range 4 {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodPost, srv.url(), strings.NewReader("{}"))
				_, err := client.Do(req)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					timeouts.Add(1)
				} else {
					t.Errorf("err = %v, want a deadline", err)
				}
			})
		}
		wg.Wait()
		if timeouts.Load() != 4 {
			t.Errorf("timeouts = %d, want 4", timeouts.Load())
		}
	})
	t.Run("cancel", func(t *testing.T) {
		client := pipelinedClient(1, 4)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.url(), strings.NewReader("{}"))
			_, err := client.Do(req)
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a canceled request still waits")
		}
	})
}

// TestPipelineSlowReceiverGetsConnections: a receiver that takes 3 ms per
// answer (one connection's requests one after another) must not see requests
// wait in line behind each other while a connection could carry them: once
// its time per answer is measured, every request of 8 concurrent callers
// goes on a connection of its own (8 allowed) and none joins a line.
func TestPipelineSlowReceiverGetsConnections(t *testing.T) {
	srv := newRawServer(t, func(_ *rawServer, _ int, c net.Conn, next func() (*http.Request, error)) {
		for {
			req, err := next()
			if err != nil {
				return
			}
			time.Sleep(3 * time.Millisecond)
			if answer(c, req) != nil {
				return
			}
		}
	})
	tr := &Transport{Dial: (&net.Dialer{}).DialContext, MaxConnsPerHost: 8, Pipeline: 8}
	var measuring atomic.Bool
	var joined, picks atomic.Int64
	tr.onPick = func(waiting int) {
		if measuring.Load() {
			picks.Add(1)
			if waiting > 0 {
				joined.Add(1)
			}
		}
	}
	client := &http.Client{Transport: tr}
	run := func(perCaller int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range perCaller {
					resp, err := client.Post(srv.url(), "application/json", strings.NewReader("{}"))
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	run(4) // the first lines measure the receiver
	measuring.Store(true)
	took := run(20)
	if n := joined.Load(); n != 0 {
		t.Errorf("%d of %d requests waited in line behind a slow answer, want 0", n, picks.Load())
	}
	if n := srv.conns.Load(); n != 8 {
		t.Errorf("connections = %d, want 8", n)
	}
	if got := srv.requests.Load(); got != 8*24 {
		t.Errorf("requests = %d, want %d", got, 8*24)
	}
	t.Logf("20 requests per caller in %s (3 ms each: 60 ms when none waits)", took)
}

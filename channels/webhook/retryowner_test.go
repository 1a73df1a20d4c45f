package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/channels/webhook"
)

// TestPoolOwnsRetries is the measurement behind doc.go's "the pool is the
// one owner of retries" (issue 12, item 23). A receiver answers 503 to the
// first attempt of every message. Four workers deliver 40 messages with a
// 200 ms backoff, once with the pool retrying (the message is re-queued
// and the worker moves on) and once with retryablehttp retrying inside
// Client.Do (the worker sleeps through the backoff). The first takes about
// one backoff in all; the second about one backoff per message per worker.
func TestPoolOwnsRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("timing measurement")
	}
	const (
		workers  = 4
		messages = 40
		backoff  = 200 * time.Millisecond
	)
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		first := !seen[key]
		seen[key] = true
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	// The pool owns the retry.
	s := newSender(t, webhook.Config{})
	var accepted atomic.Int64
	pool, err := channels.NewWorkerPool(s, channels.PoolConfig{
		Workers: workers, BatchSize: 1, QueueSize: 1000, MaxAttempts: 3,
		BackoffBase: backoff, BackoffMax: backoff,
		Outcomes: channels.OutcomeFunc(func(_ context.Context, outs []channels.Outcome) {
			for _, o := range outs {
				if o.Status == channels.OutcomeAccepted {
					accepted.Add(1)
				}
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer pool.Close(context.Background())
	start := time.Now()
	for i := range messages {
		if _, err := pool.Submit(context.Background(), channels.LaneNormal, hookMsg(fmt.Sprintf("p%d", i), srv.URL+"/in", `{"a":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	channelstest.Eventually(t, 30*time.Second, func() bool { return accepted.Load() == messages }, "pool delivered %d of %d", accepted.Load(), messages)
	poolTook := time.Since(start)

	// retryablehttp owns the retry.
	rc := &retryablehttp.Client{
		HTTPClient: srv.Client(), RetryMax: 2, RetryWaitMin: backoff, RetryWaitMax: backoff,
		CheckRetry: retryablehttp.DefaultRetryPolicy, Backoff: retryablehttp.DefaultBackoff,
	}
	start = time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := w; i < messages; i += workers {
				req, _ := retryablehttp.NewRequest(http.MethodPost, srv.URL+"/in", []byte(`{"a":1}`))
				req.Header.Set("Idempotency-Key", fmt.Sprintf("r%d", i))
				resp, err := rc.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	inDo := time.Since(start)
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed under retryablehttp", failed.Load())
	}
	t.Logf("%d messages, %d workers, first attempt 503, backoff %v: pool-owned retry %v, retryablehttp-owned retry %v (%.1fx)",
		messages, workers, backoff, poolTook.Round(time.Millisecond), inDo.Round(time.Millisecond), float64(inDo)/float64(poolTook))
	if poolTook*2 > inDo {
		t.Fatalf("pool-owned retries took %v, retryablehttp-owned %v: the measurement behind doc.go no longer holds", poolTook, inDo)
	}
}

package campaigns_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/webhook"
	"github.com/notifyd/notifyd/store/memstate"
)

// TestBlockedDestinationIsItsOwnReason runs a webhook campaign whose URL
// points at loopback through a real worker pool and the real webhook sender:
// the destination guard refuses every message, nothing reaches the listener,
// and the refusals are counted blocked_destination, not provider_rejected
// (no provider ever saw them).
func TestBlockedDestinationIsItsOwnReason(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()

	hook, err := webhook.New(webhook.Config{}) // the default guard: no loopback
	if err != nil {
		t.Fatal(err)
	}
	pool, err := channels.NewWorkerPool(hook, channels.PoolConfig{
		Workers: 2, BatchSize: 20, QueueSize: 200, MaxAttempts: 3,
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond,
		Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes),
		Handoff:  channels.HandoffFunc(campaigns.HandOff),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pool.Close(ctx)
	})
	src := newSource(50)
	state := memstate.New()
	e := campaigns.NewEngine(state, state, src,
		campaigns.NewPoolDispatcher(map[string]*channels.Pool{channels.Webhook: pool}), campaigns.EngineConfig{BatchSize: 100})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	body := `{"id":"ssrf","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"` + srv.URL + `/in","body":{"u":"{{ profile.id }}"}}}}`
	st, _, err := e.Create(context.Background(), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, e, st.ID, campaigns.StatusCompleted)
	got := st.Counts[channels.Webhook]
	if got[campaigns.ReasonBlockedDestination] != int64(len(src.members)) || len(got) != 1 {
		t.Fatalf("webhook counts %v, want %s=%d only", got, campaigns.ReasonBlockedDestination, len(src.members))
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback listener got %d requests", n)
	}
}

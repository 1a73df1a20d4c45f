package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/memstate"
)

func TestCachedReady(t *testing.T) {
	now := time.Unix(1000, 0)
	calls := 0
	var answer error
	ready := cachedReady(func(context.Context) error { calls++; return answer }, 250*time.Millisecond, func() time.Time { return now })
	ctx := context.Background()
	steps := []struct {
		name      string
		advance   time.Duration
		set       error
		wantErr   bool
		wantCalls int
	}{
		{"first call checks", 0, nil, false, 1},
		{"within the ttl: cached", 100 * time.Millisecond, errors.New("redis down"), false, 1},
		{"ttl passed: checked again, sees the outage", 200 * time.Millisecond, errors.New("redis down"), true, 2},
		{"the error is cached too", 10 * time.Millisecond, nil, true, 2},
		{"recovers at the next check", 300 * time.Millisecond, nil, false, 3},
		{"a clock that went back checks", -time.Second, nil, false, 4},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		answer = s.set
		err := ready(ctx)
		if (err != nil) != s.wantErr || calls != s.wantCalls {
			t.Fatalf("%s: err %v after %d checks; want error %v after %d", s.name, err, calls, s.wantErr, s.wantCalls)
		}
	}
}

// ackCounter is an intake that records each Ack call's ids.
type ackCounter struct {
	campaigns.Intake
	mu   sync.Mutex
	acks [][]string
}

func (a *ackCounter) Ack(ctx context.Context, ids ...string) error {
	a.mu.Lock()
	a.acks = append(a.acks, append([]string(nil), ids...))
	a.mu.Unlock()
	return a.Intake.Ack(ctx, ids...)
}

// A read of many entries is acknowledged in one round trip, not one per
// entry; an entry that failed for a reason that may pass stays pending.
func TestIntakeAcksOncePerRead(t *testing.T) {
	ms := memstate.New()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 50 {
		if _, err := ms.Enqueue(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	in := &ackCounter{Intake: ms}
	var seen atomic.Int64
	create := func(_ context.Context, p []byte) error {
		seen.Add(1)
		if string(p) == "7" {
			return errors.New("state store away") // not permanent: stays pending
		}
		return nil
	}
	done := make(chan struct{})
	go func() {
		intakeLoop(ctx, in, create, IntakeConfig{Consumer: "c", Block: 10 * time.Millisecond, MinIdle: time.Hour}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for seen.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	in.mu.Lock()
	defer in.mu.Unlock()
	acked := 0
	for _, ids := range in.acks {
		acked += len(ids)
	}
	if seen.Load() != 50 || len(in.acks) != 1 || acked != 49 {
		t.Fatalf("%d entries processed, %d Ack calls acknowledging %d; want 50, 1, 49", seen.Load(), len(in.acks), acked)
	}
}

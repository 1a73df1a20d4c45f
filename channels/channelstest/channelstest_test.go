package channelstest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

func TestFakeClock(t *testing.T) {
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		timers  []time.Duration
		stop    int // index of a timer to stop, -1 none
		advance time.Duration
		want    []time.Duration // offsets seen by the callbacks, in firing order
	}{
		{name: "fires due timers in order at their own time", timers: []time.Duration{3 * time.Second, time.Second, 2 * time.Second}, stop: -1,
			advance: 5 * time.Second, want: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{name: "leaves future timers", timers: []time.Duration{time.Second, time.Minute}, stop: -1,
			advance: 30 * time.Second, want: []time.Duration{time.Second}},
		{name: "stopped timer never fires", timers: []time.Duration{time.Second, 2 * time.Second}, stop: 0,
			advance: time.Minute, want: []time.Duration{2 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := channelstest.NewFakeClock(start)
			var got []time.Duration
			var timers []channels.Timer
			for _, d := range tc.timers {
				timers = append(timers, c.AfterFunc(d, func() { got = append(got, c.Now().Sub(start)) }))
			}
			if tc.stop >= 0 {
				if !timers[tc.stop].Stop() {
					t.Fatal("Stop of a pending timer returned false")
				}
				if timers[tc.stop].Stop() {
					t.Fatal("second Stop returned true")
				}
			}
			c.Advance(tc.advance)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("fired at %v, want %v", got, tc.want)
			}
			if c.Now() != start.Add(tc.advance) {
				t.Fatalf("Now = %v", c.Now())
			}
			if len(c.Pending()) != len(tc.timers)-len(tc.want)-map[bool]int{true: 1}[tc.stop >= 0] {
				t.Fatalf("pending = %v", c.Pending())
			}
		})
	}
}

func TestFakeClockTimerArmedByCallback(t *testing.T) {
	c := channelstest.NewFakeClock(time.Time{})
	fired := 0
	var rearm func()
	rearm = func() {
		fired++
		c.AfterFunc(time.Second, rearm)
	}
	c.AfterFunc(time.Second, rearm)
	c.Advance(3500 * time.Millisecond)
	if fired != 3 {
		t.Fatalf("fired %d times in 3.5s of a 1s re-arming timer", fired)
	}
}

func TestScripted(t *testing.T) {
	boom := channels.Transient(channels.ReasonUnavailable, "503", time.Second, errors.New("unavailable"))
	s := channelstest.NewScripted("fake").Script("a", channelstest.Answer{Err: boom}, channelstest.Answer{ProviderID: "p2"})
	batch := []*channels.Message{{ID: "1", To: "a"}, {ID: "2", To: "b"}}
	tests := []struct {
		name    string
		wantA   channels.Result
		wantB   string
		attempt int
	}{
		{name: "first answer", wantA: channels.Result{Err: boom}, wantB: "id-2", attempt: 1},
		{name: "second answer", wantA: channels.Result{ProviderID: "p2"}, wantB: "id-2", attempt: 2},
		{name: "last answer repeats", wantA: channels.Result{ProviderID: "p2"}, wantB: "id-2", attempt: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := s.Send(context.Background(), batch)
			channelstest.RequireResults(t, batch, res)
			if res[0] != tc.wantA || res[1].ProviderID != tc.wantB || res[1].Err != nil {
				t.Fatalf("results = %+v", res)
			}
			if s.Attempts("a") != tc.attempt || s.SentCount() != 2*tc.attempt {
				t.Fatalf("attempts a=%d sent=%d", s.Attempts("a"), s.SentCount())
			}
		})
	}
	if got := s.Batches(); fmt.Sprint(got) != "[2 2 2]" {
		t.Fatalf("batches = %v", got)
	}
}

func TestScriptedBlockAnswersContextError(t *testing.T) {
	s := channelstest.NewScripted("fake").Script("hang", channelstest.Answer{Block: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []channels.Result)
	go func() { done <- s.Send(ctx, []*channels.Message{{ID: "1", To: "hang"}, {ID: "2", To: "ok"}}) }()
	channelstest.Eventually(t, 5*time.Second, func() bool { return s.Attempts("hang") == 1 }, "send started")
	cancel()
	res := <-done
	if !errors.Is(res[0].Err, context.Canceled) || res[1].Err != nil {
		t.Fatalf("results = %+v", res)
	}
}

func TestRequireRetryAfter(t *testing.T) {
	err := fmt.Errorf("send: %w", channels.Transient(channels.ReasonRateLimited, "429", 7*time.Second, errors.New("slow down")))
	ce := channelstest.RequireRetryAfter(t, err, channels.ReasonRateLimited, 7*time.Second)
	if ce.Code != "429" {
		t.Fatalf("code = %q", ce.Code)
	}
}

func TestNoop(t *testing.T) {
	n := channelstest.NewNoop("noop", 2)
	for _, size := range []int{1, 2, 5} {
		batch := make([]*channels.Message, size)
		res := n.Send(context.Background(), batch)
		channelstest.RequireResults(t, batch, res)
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("noop failed: %v", r.Err)
			}
		}
	}
}

func TestSendThroughPool(t *testing.T) {
	s := channelstest.NewScripted("fake").
		Script("dead", channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "410", errors.New("gone"))}).
		Script("slow", channelstest.Answer{Err: channels.Transient(channels.ReasonRateLimited, "429", time.Hour, errors.New("slow down"))}, channelstest.Answer{ProviderID: "late"})
	msgs := []*channels.Message{{ID: "1", To: "ok"}, {ID: "2", To: "dead", UserID: "u2"}, {ID: "3", To: "slow"}}
	outs, fb := channelstest.SendThroughPool(t, s, channels.PoolConfig{}, msgs...)
	want := []struct {
		status   channels.OutcomeStatus
		attempts int
	}{{channels.OutcomeAccepted, 1}, {channels.OutcomeDeadAddress, 1}, {channels.OutcomeAccepted, 2}}
	for i, w := range want {
		if outs[i].Message != msgs[i] || outs[i].Status != w.status || outs[i].Attempts != w.attempts {
			t.Fatalf("outcome %d = %+v, want %s after %d", i, outs[i], w.status, w.attempts)
		}
	}
	if len(fb) != 1 || fb[0].Address != "dead" || fb[0].UserID != "u2" || fb[0].Code != "410" {
		t.Fatalf("feedback = %+v", fb)
	}
}

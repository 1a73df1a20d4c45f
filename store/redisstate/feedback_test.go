package redisstate_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/redisstate"
)

func feedbackRecs(ids ...string) []channels.Feedback {
	out := make([]channels.Feedback, len(ids))
	for i, id := range ids {
		out[i] = channels.Feedback{Channel: channels.APNs, Address: "tok-" + id, UserID: id, UserKey: 0xabc, Campaign: "c1",
			MessageID: "m-" + id, Reason: channels.ReasonDeadAddress, Code: "Unregistered", At: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}
	}
	return out
}

func streamUsers(t *testing.T, c redis.UniversalClient, key string) []map[string]any {
	t.Helper()
	msgs, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		out[i] = m.Values
	}
	return out
}

func TestFeedbackStream(t *testing.T) { onEachBackend(t, testFeedbackStream) }

func testFeedbackStream(t *testing.T, c redis.UniversalClient) {
	s, prefix := newStore(t, c)
	sink := s.Feedback(0, 0)
	if err := sink.RecordFeedback(context.Background(), feedbackRecs("u1", "u2")); err != nil {
		t.Fatal(err)
	}
	got := streamUsers(t, c, prefix+"feedback")
	if len(got) != 2 {
		t.Fatalf("stream holds %d entries, want 2", len(got))
	}
	want := map[string]any{"channel": "apns", "address": "tok-u1", "user": "u1", "user_key": "0000000000000abc", "campaign": "c1",
		"message": "m-u1", "reason": "dead_address", "code": "Unregistered", "at": "2026-11-22T03:00:00Z", "at_ms": "1795316400000"}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("field %s = %v, want %v", k, got[0][k], v)
		}
	}
	if got[1]["user"] != "u2" {
		t.Errorf("second entry is %v, want u2's", got[1])
	}
}

// TestFeedbackKeptWhileRedisIsAway points a sink at a port where nothing
// listens yet, then opens a forwarder to the real Redis on that port.
func TestFeedbackKeptWhileRedisIsAway(t *testing.T) {
	real := newClient(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	opts := *real.Options()
	opts.Addr, opts.MaxRetries, opts.DialTimeout = addr, -1, time.Second
	away := redis.NewClient(&opts)
	t.Cleanup(func() { _ = away.Close() })
	_, prefix := newStore(t, real) // the prefix whose keys are cleaned up
	s, err := redisstate.New(away, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	sink := s.Feedback(0, 3)
	ctx := context.Background()
	if err := sink.RecordFeedback(ctx, feedbackRecs("u1", "u2")); err == nil {
		t.Fatal("RecordFeedback succeeded with Redis away")
	}
	if err := sink.RecordFeedback(ctx, feedbackRecs("u3", "u4")); err == nil {
		t.Fatal("RecordFeedback succeeded with Redis away")
	}
	if pending, dropped := sink.Pending(); pending != 3 || dropped != 1 {
		t.Fatalf("pending %d dropped %d, want 3 kept (the backlog) and the oldest dropped", pending, dropped)
	}

	// Redis comes back on the same address.
	fwd, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	t.Cleanup(func() { fwd.Close() })
	go func() {
		for {
			in, err := fwd.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", real.Options().Addr)
			if err != nil {
				in.Close()
				continue
			}
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	if err := sink.Flush(ctx); err != nil {
		t.Fatalf("Flush after Redis came back: %v", err)
	}
	got := streamUsers(t, real, prefix+"feedback")
	var users []any
	for _, v := range got {
		users = append(users, v["user"])
	}
	if len(users) != 3 || users[0] != "u2" || users[1] != "u3" || users[2] != "u4" {
		t.Fatalf("stream users %v, want [u2 u3 u4] in order", users)
	}
	if pending, _ := sink.Pending(); pending != 0 {
		t.Fatalf("%d still pending after a good flush", pending)
	}
}

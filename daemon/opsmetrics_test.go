package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

func TestRedisErrorReason(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{"no error", bg, nil, ""},
		{"missing key is an answer", bg, redis.Nil, ""},
		{"uncached script is retried in full by go-redis", bg, redisErr("NOSCRIPT No matching script"), ""},
		{"consumer group created on first use", bg, redisErr("NOGROUP No such key or consumer group"), ""},
		{"the caller gave up", canceled, fmt.Errorf("wrapped: %w", context.Canceled), ""},
		{"deadline passed", bg, fmt.Errorf("claim: %w", context.DeadlineExceeded), "timeout"},
		{"read timeout", bg, &net.OpError{Op: "read", Err: timeoutErr{}}, "timeout"},
		{"refused", bg, &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, "connection"},
		{"closed client", bg, redis.ErrClosed, "connection"},
		{"slot moved", bg, redisErr("MOVED 3999 127.0.0.1:7001"), "cluster"},
		{"cluster down", bg, redisErr("CLUSTERDOWN The cluster is down"), "cluster"},
		{"loading the AOF", bg, redisErr("LOADING Redis is loading the dataset in memory"), "loading"},
		{"a replica", bg, redisErr("READONLY You can't write against a read only replica."), "readonly"},
		{"script failed", bg, redisErr("ERR user_script:1: attempt to compare nil"), "script"},
		{"anything else", bg, redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redisErrorReason(tc.ctx, tc.err); got != tc.want {
				t.Fatalf("redisErrorReason(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// The intake's backlog: entries enqueued and not acknowledged, those a
// consumer holds, and the age of the oldest.
func TestIntakeBacklog(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	prefix := redisPrefix(t, url)
	rs, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if b, err := rs.Backlog(ctx); err != nil || b != (redisstate.Backlog{}) {
		t.Fatalf("empty stream: %+v, %v", b, err)
	}
	before := time.Now().Add(-time.Second)
	for i := range 3 {
		if _, err := rs.Enqueue(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got, err := rs.Read(ctx, "c1", 2, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("read: %d entries, %v", len(got), err)
	}
	if err := rs.Ack(ctx, got[0].ID); err != nil {
		t.Fatal(err)
	}
	b, err := rs.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.Entries != 2 || b.Pending != 1 || b.Oldest.Before(before) || b.Oldest.After(time.Now().Add(time.Second)) {
		t.Fatalf("backlog %+v, want 2 entries, 1 pending, oldest just now", b)
	}
}

// A daemon on Redis exports what an SRE needs beyond the send counters:
// what became of triggers, Redis round trips and failures, and the
// intake's backlog.
func TestOpsMetricsExported(t *testing.T) {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		t.Skip("REDIS_URL not set")
	}
	td := startDaemon(t, fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", url, redisPrefix(t, url)))
	flow := `{"id":"ops","trigger":{"segment":"new_7d"},"channels":["sms"],"reentry":"0s","content":{"sms":{"body":"hi"}}}`
	if status, body := td.do(t, "POST", "/v1/flows", testToken, "application/json", []byte(flow)); status != 201 {
		t.Fatalf("create flow: %d %v", status, body)
	}
	batch := []map[string]any{{"flow": "ops", "user_id": shardgen.ID(1)}, {"flow": "ops", "user_id": "nobody"}, {"flow": "ops", "user_id": "nobody-either"}}
	b, _ := json.Marshal(map[string]any{"triggers": batch})
	if status, body := td.do(t, "POST", "/v1/triggers", testToken, "application/json", b); status != 202 {
		t.Fatalf("fire: %d %v", status, body)
	}
	page := string(scrape(t, td))
	for _, want := range []string{
		`notifyd_triggers_total{source="api",status="accepted"} 1`,
		`notifyd_triggers_total{source="api",status="unknown_user"} 2`,
		`notifyd_intake_entries{stream="intake"} 0`,
		`notifyd_intake_pending_entries{stream="intake"} 0`,
		`notifyd_intake_oldest_entry_age_seconds{stream="intake"} 0`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(page) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	m := regexp.MustCompile(`(?m)^notifyd_redis_request_duration_seconds_count\{kind="command"\} (\d+)$`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("/metrics lacks Redis command timings:\n%s", page)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("no Redis command was timed")
	}
}

// redisErr is an error as Redis answers it (go-redis's redis.Error).
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels"
)

// deadChannel answers "dead address" for users whose id ends in 7.
type deadChannel struct{ recordingChannel }

func (c *deadChannel) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	res := c.recordingChannel.Send(ctx, batch)
	for i, m := range batch {
		if strings.HasSuffix(m.UserID, "7") {
			res[i].Err = channels.Permanent(channels.ReasonDeadAddress, "Unregistered", errors.New("apns answered 410 Unregistered"))
		}
	}
	return res
}

// TestDeadAddressFeedbackReachesTheRedisStream: with Redis configured and
// no sink injected, dead-address records land in <prefix>feedback, one per
// dead recipient, with the fields docs/redis-keys.md promises.
func TestDeadAddressFeedbackReachesTheRedisStream(t *testing.T) {
	raw := os.Getenv("REDIS_URL")
	if raw == "" {
		t.Skip("REDIS_URL not set (.ci/run starts Redis and sets it)")
	}
	const members = 300
	prefix := redisPrefix(t, raw)
	cfg, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: %s\nadmin:\n  token: %s\nredis:\n  url: %s\n  prefix: %q\n",
		writeTestShard(t, members), testToken, raw, prefix)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := &deadChannel{recordingChannel{name: channels.Webhook, users: map[string]int{}}}
	d, err := New(context.Background(), cfg, Deps{
		Channels: map[string]ChannelSpec{channels.Webhook: {Channel: ch, Pool: PoolConfig{Workers: 2, BatchSize: 20}}},
		Logger:   newTestLogger(&syncBuffer{}), Listener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	td := &testDaemon{base: "http://" + ln.Addr().String(), log: &syncBuffer{}}
	body := `{"id":"fb","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`
	if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, resp)
	}
	waitFor(t, 30*time.Second, func() bool {
		_, st := td.do(t, "GET", "/v1/campaigns/fb", testToken, "", nil)
		return st["status"] == "completed"
	}, "campaign never completed")

	dead := 0
	for u := range ch.users {
		if strings.HasSuffix(u, "7") {
			dead++
		}
	}
	if dead == 0 {
		t.Fatal("no user id ends in 7; the test proves nothing")
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	var msgs []redis.XMessage
	waitFor(t, 10*time.Second, func() bool {
		msgs, err = rdb.XRange(context.Background(), prefix+"feedback", "-", "+").Result()
		return err == nil && len(msgs) >= dead
	}, "feedback stream never held every dead address")
	if len(msgs) != dead {
		t.Fatalf("feedback stream holds %d records, want %d", len(msgs), dead)
	}
	for _, m := range msgs {
		v := m.Values
		if !strings.HasSuffix(fmt.Sprint(v["user"]), "7") || v["channel"] != channels.Webhook || v["reason"] != "dead_address" ||
			v["code"] != "Unregistered" || v["campaign"] != "fb" || v["address"] == "" {
			t.Fatalf("feedback record %v", v)
		}
	}
}

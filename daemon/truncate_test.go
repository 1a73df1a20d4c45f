package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// TestShardTruncatedUnderRunningCampaign is issue 12, item 5, end to end: the
// published shard is truncated in place (an operator's mistake, a full
// disk) while a campaign reads it. The daemon must not die of SIGBUS: the
// campaign completes from the generation it pinned, every member once, and
// the damaged publication is logged.
func TestShardTruncatedUnderRunningCampaign(t *testing.T) {
	const members = 3000
	path := writeTestShard(t, members)
	cfg, err := ParseConfig([]byte(fmt.Sprintf("shard:\n  path: %s\n  poll_interval: 50ms\nadmin:\n  token: %s\nengine:\n  batch_size: 100\n", path, testToken)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := &recordingChannel{name: channels.Webhook, users: map[string]int{}}
	log := &syncBuffer{}
	d, err := New(context.Background(), cfg, Deps{
		Channels: map[string]ChannelSpec{channels.Webhook: {Channel: hook, Pool: PoolConfig{Workers: 2, BatchSize: 20, RatePerSecond: 3000, Burst: 20}}},
		Logger:   newTestLogger(log), Listener: ln,
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
	td := &testDaemon{base: "http://" + ln.Addr().String(), log: log}
	body := `{"id":"trunc","segment":"all","channels":["webhook"],"content":{"webhook":{"url":"https://hooks.example.test/in","body":{"u":"{{ profile.id }}"}}}}`
	if status, resp := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(body)); status != 201 {
		t.Fatalf("create: %d %v", status, resp)
	}
	waitFor(t, 20*time.Second, func() bool { n, _ := hook.distinct(); return n >= members/10 }, "campaign never got going")
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	waitFor(t, 60*time.Second, func() bool {
		_, st = td.do(t, "GET", "/v1/campaigns/trunc", testToken, "", nil)
		return st["status"] == "completed"
	}, "campaign never completed after the truncation")
	if distinct, sends := hook.distinct(); distinct != members || sends != members {
		t.Fatalf("%d distinct members in %d sends, want %d once each", distinct, sends, members)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(log.String(), "refresh failed") }, "the damaged publication was not logged")
}

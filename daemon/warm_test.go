package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels/channelstest"
)

// TestShardWarmUpMetrics: the daemon warms its shard generation by default
// and says so on /metrics; with shard.lazy_verify it does not.
func TestShardWarmUpMetrics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shard string
		warm  bool
	}{
		{"default", "", true},
		{"lazy_verify", "  lazy_verify: true\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := startDaemonShard(t, tc.shard)
			scrape := func() string {
				_, m := td.do(t, "GET", "/metrics", testToken, "", nil)
				return m["raw"].(string)
			}
			if tc.warm {
				channelstest.Eventually(t, 10*time.Second, func() bool {
					return strings.Contains(scrape(), "notifyd_shard_warmup_seconds ")
				}, "no notifyd_shard_warmup_seconds on /metrics")
				if got := scrape(); !strings.Contains(got, "notifyd_shard_corrupt_blocks 0") {
					t.Fatalf("corrupt blocks of an intact shard: %s", grepLines(got, "notifyd_shard_"))
				}
				if !strings.Contains(td.log.String(), "shard generation warmed") {
					t.Fatal("no warm-up logged")
				}
				return
			}
			time.Sleep(200 * time.Millisecond)
			if got := scrape(); strings.Contains(got, "notifyd_shard_warmup_seconds") || strings.Contains(td.log.String(), "shard generation warmed") {
				t.Fatalf("lazy_verify: a warm-up ran: %s", grepLines(got, "notifyd_shard_"))
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

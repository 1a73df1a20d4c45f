package campaigns_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/redisstate/redisfault"
)

// TestFlowClaimRetriedAfterLostReply: a trigger's dedup claim ran in Redis
// but its reply was lost. The flow engine retries the claim under the same
// attempt and sends the SMS once, at once. Before attempts, the retry met
// its own lease as held, and the SMS went out as in doubt after the lease:
// skipped, lost.
func TestFlowClaimRetriedAfterLostReply(t *testing.T) {
	rdb, prefix := redisForTest(t)
	rs, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	// The reply of the next claim script call is lost (it ran in Redis).
	var lose atomic.Int64
	rdb.AddHook(&redisfault.Hook{LoseReply: func(cmd redis.Cmder) bool {
		return strings.HasPrefix(cmd.Name(), "eval") && lose.Add(-1) >= 0
	}})
	fr := newFlowRigOpts(t, flowRigOpts{dedup: rs.Dedup("daemon-a"),
		cfg: campaigns.FlowConfig{ClaimRetry: 10 * time.Millisecond, Lease: time.Minute}})
	ctx := context.Background()
	if _, _, err := fr.flows.CreateFlow(ctx, []byte(welcomeFlow)); err != nil {
		t.Fatal(err)
	}
	lose.Store(1)
	u := fr.src.members[3]
	if _, err := fr.flows.Fire(ctx, []campaigns.Trigger{{Segment: "new_signups", UserID: u.ID, IdempotencyKey: "k-lost"}}); err != nil {
		t.Fatal(err)
	}
	st := fr.waitCount(t, "welcome", channels.SMS, campaigns.ReasonSent, 1)
	if lose.Load() >= 0 {
		t.Fatal("no claim reply was lost: the test tested nothing")
	}
	if n := len(fr.sms()); n != 1 || st.Counts[channels.SMS][campaigns.ReasonInDoubt] != 0 {
		t.Fatalf("%d SMS sent, counts %v; want 1 sent, none in doubt", n, st.Counts[channels.SMS])
	}
}

package campaigns_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/redisstate"
)

const winnerBody = `{"id": "ab-win", "segment": "all", "channels": ["sms"], "holdout": 10,
  "content": {"sms": {"body": "A|{{ profile.id }}"}},
  "variants": [{"id": "A", "weight": 1}, {"id": "B", "weight": 1, "content": {"sms": {"body": "B|{{ profile.id }}"}}}],
  "winner": {"after": "1h", "metric": "failed_rate", "test_percent": 30}}`

func TestChooseWinnerByMetric(t *testing.T) {
	vs := []campaigns.Variant{{ID: "A", Weight: 1}, {ID: "B", Weight: 1}, {ID: "C", Weight: 1}}
	counts := map[string]map[string]map[string]int64{
		"A":       {"sms": {"sent": 80, "provider_rejected": 20, "no_address": 500}},
		"B":       {"sms": {"sent": 90, "dead_address": 10}, "email": {"sent": 100}},
		"C":       {"sms": {"no_address": 10}}, // nothing handed: cannot win
		"holdout": {"sms": {"holdout": 50}},
	}
	for _, tc := range []struct{ name, metric, want string }{
		{"sent rate, higher wins", "sent_rate", "B"},
		{"failed rate, lower wins", "failed_rate", "B"},
		{"dead address rate, lower wins", "dead_address_rate", "A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, scores := campaigns.ChooseWinner(tc.metric, vs, counts); got != tc.want {
				t.Fatalf("winner %s (scores %v), want %s", got, scores, tc.want)
			}
		})
	}
	t.Run("a tie goes to the variant listed first", func(t *testing.T) {
		tie := map[string]map[string]map[string]int64{"A": {"sms": {"sent": 5}}, "B": {"sms": {"sent": 7}}}
		if got, _ := campaigns.ChooseWinner("sent_rate", vs, tie); got != "A" {
			t.Fatalf("winner %s, want A", got)
		}
	})
	t.Run("no data: the first variant", func(t *testing.T) {
		if got, _ := campaigns.ChooseWinner("sent_rate", vs, nil); got != "A" {
			t.Fatalf("winner %s, want A", got)
		}
	})
}

// TestWinnerPhaseSendsTheBestVariantToTheRest: the test reaches only its
// test group, split over the variants; nothing more happens before the
// period ends; then the variant with the lower failed rate goes to the rest
// of the segment (the holdout kept out), once, and a restarted engine
// neither chooses again nor sends again.
func TestWinnerPhaseSendsTheBestVariantToTheRest(t *testing.T) {
	src := newSource(3000)
	state := memstate.New()
	r := newRig(t, state, src, campaigns.EngineConfig{})
	c, err := campaigns.DecodeCampaign([]byte(winnerBody))
	if err != nil {
		t.Fatal(err)
	}
	// Half of variant B's test members are rejected by the provider: B's
	// failed rate is about 0.5, A's 0.
	byPhone := map[string]campaigns.Member{}
	var test, rest, restHoldout int
	for i, m := range src.members {
		if m.Phone == "" {
			continue
		}
		byPhone[m.Phone] = m
		switch {
		case c.InTestGroup(m.Key) && c.AssignVariant(m.Key) == "B" && i%2 == 0:
			r.chans[channels.SMS].Script(m.Phone, channelsReject)
		}
	}
	for _, m := range src.members {
		if c.InTestGroup(m.Key) {
			test++
		} else {
			rest++
			if c.AssignVariant(m.Key) == campaigns.HoldoutVariant {
				restHoldout++
			}
		}
	}
	if test < 800 || test > 1000 {
		t.Fatalf("%d of 3000 members in the test group, want about 900", test)
	}
	var mu sync.Mutex
	got := map[string][]string{} // user → bodies received
	r.chans[channels.SMS].OnSend(func(batch []*channels.Message) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range batch {
			got[m.UserID] = append(got[m.UserID], m.Text.Body)
		}
	})
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	newEngine := func() *campaigns.Engine {
		e := campaigns.NewEngine(state, state, src, campaigns.NewPoolDispatcher(r.pools), campaigns.EngineConfig{BatchSize: 100}, campaigns.WithEngineClock(now))
		t.Cleanup(func() { _ = e.Close(context.Background()) })
		return e
	}
	ctx := context.Background()
	e := newEngine()
	if _, _, err := e.Create(ctx, []byte(winnerBody)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, e, "ab-win", campaigns.StatusCompleted)
	var positions int64
	for _, reasons := range st.Counts {
		for _, n := range reasons {
			positions += n
		}
	}
	if positions != int64(test) {
		t.Fatalf("the test counted %d members, its group has %d", positions, test)
	}
	if st.Winner == nil || st.Winner.Phase != "waiting" {
		t.Fatalf("winner %+v, want waiting", st.Winner)
	}
	mu.Lock()
	for user, bodies := range got {
		m := byPhone[src.members[userIndex(user)].Phone]
		if !c.InTestGroup(m.Key) {
			t.Errorf("%s is not in the test group but received %v during the test", user, bodies)
		}
	}
	mu.Unlock()

	// Before the period ends, nothing is chosen.
	if err := e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Get(ctx, "ab-win.winner"); !errors.Is(err, campaigns.ErrNotFound) {
		t.Fatalf("the winner was chosen before its time: %v", err)
	}
	clock.Add(int64(2 * time.Hour))
	if err := e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ws := waitStatus(t, e, "ab-win.winner", campaigns.StatusCompleted)
	st, err = e.Get(ctx, "ab-win")
	if err != nil {
		t.Fatal(err)
	}
	if st.Winner == nil || st.Winner.Phase != "sent" || st.Winner.Variant != "A" || st.Winner.Campaign != "ab-win.winner" {
		t.Fatalf("winner %+v, want A sent as ab-win.winner", st.Winner)
	}
	if st.Winner.Scores["B"] < 0.3 || st.Winner.Scores["A"] != 0 {
		t.Fatalf("scores %v", st.Winner.Scores)
	}
	var restPositions int64
	for _, reasons := range ws.Counts {
		for _, n := range reasons {
			restPositions += n
		}
	}
	if restPositions != int64(rest) || ws.Variants[campaigns.HoldoutVariant][channels.SMS][campaigns.ReasonHoldout] != int64(restHoldout) {
		t.Fatalf("the winner campaign counted %d members (%d held out), the rest is %d (%d held out): %v", restPositions, ws.Variants["holdout"]["sms"]["holdout"], rest, restHoldout, ws.Variants)
	}
	mu.Lock()
	for _, m := range src.members {
		bodies := got[m.ID]
		switch {
		case c.InTestGroup(m.Key):
			continue
		case m.Phone == "" || c.AssignVariant(m.Key) == campaigns.HoldoutVariant:
			if len(bodies) != 0 {
				t.Errorf("%s (holdout or no phone) received %v", m.ID, bodies)
			}
		case len(bodies) != 1 || bodies[0] != "A|"+m.ID:
			t.Errorf("%s of the rest received %v, want the winner A once", m.ID, bodies)
		}
	}
	sentBefore := len(got)
	mu.Unlock()

	// A restarted engine (another daemon) finds the choice made.
	e2 := newEngine()
	if err := e2.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	st2, err := e2.Get(ctx, "ab-win")
	if err != nil || st2.Winner == nil || st2.Winner.Variant != "A" {
		t.Fatalf("after a restart: %+v %v", st2.Winner, err)
	}
	mu.Lock()
	if len(got) != sentBefore {
		t.Errorf("the restart sent %d more", len(got)-sentBefore)
	}
	mu.Unlock()
}

var channelsReject = channelstest.Answer{Err: &channels.Error{Reason: channels.ReasonRejected, Permanent: true, Err: errors.New("rejected")}}

func userIndex(id string) int {
	n := 0
	for _, ch := range strings.TrimPrefix(id, "u-") {
		n = n*10 + int(ch-'0')
	}
	return n
}

// TestWinnerPhaseFleetOnRedis: two shards' daemons on one Redis run the
// test over their members, then both try to choose the winner at the same
// moment: one winner campaign exists, every daemon sends it over its own
// part of the rest, and each member of the rest gets the winner once.
func TestWinnerPhaseFleetOnRedis(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := redisForTest(t)
	st, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	all := newSource(2000)
	parts := partition(all, 2)
	c, err := campaigns.DecodeCampaign([]byte(winnerBody))
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var mu sync.Mutex
	got := map[string][]string{}
	var engines []*campaigns.Engine
	for k := range 2 {
		r := newRigOn(t, st, parts[k], campaigns.EngineConfig{Shard: k, Shards: 2})
		for _, m := range parts[k].members {
			if m.Phone != "" && c.InTestGroup(m.Key) && c.AssignVariant(m.Key) == "B" && m.Key%3 == 0 {
				r.chans[channels.SMS].Script(m.Phone, channelsReject)
			}
		}
		r.chans[channels.SMS].OnSend(func(batch []*channels.Message) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range batch {
				got[m.UserID] = append(got[m.UserID], m.Text.Body)
			}
		})
		e := campaigns.NewEngine(st, st, parts[k], campaigns.NewPoolDispatcher(r.pools),
			campaigns.EngineConfig{Owner: "node-" + strconv.Itoa(k), Shard: k, Shards: 2, BatchSize: 100}, campaigns.WithEngineClock(now))
		t.Cleanup(func() { _ = e.Close(context.Background()) })
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		engines = append(engines, e)
	}
	if _, _, err := engines[0].Create(ctx, []byte(winnerBody)); err != nil {
		t.Fatal(err)
	}
	tickAll := func() {
		var wg sync.WaitGroup
		for _, e := range engines {
			wg.Go(func() {
				if err := e.Tick(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	channelstest.Eventually(t, 30*time.Second, func() bool {
		tickAll()
		s, err := engines[0].Get(ctx, "ab-win")
		return err == nil && s.Status == campaigns.StatusCompleted
	}, "the test never completed over the fleet")
	clock.Add(int64(2 * time.Hour))
	channelstest.Eventually(t, 30*time.Second, func() bool {
		tickAll() // both daemons choose at once, then run their parts
		s, err := engines[1].Get(ctx, "ab-win.winner")
		return err == nil && s.Status == campaigns.StatusCompleted
	}, "the winner campaign never completed over the fleet")
	for _, e := range engines {
		s, err := e.Get(ctx, "ab-win")
		if err != nil || s.Winner == nil || s.Winner.Variant != "A" || s.Winner.Phase != "sent" {
			t.Fatalf("winner %+v %v, want A sent", s.Winner, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	rest := 0
	for _, m := range all.members {
		bodies := got[m.ID]
		v := c.AssignVariant(m.Key)
		switch {
		case m.Phone == "" || v == campaigns.HoldoutVariant:
			if len(bodies) != 0 {
				t.Errorf("%s (holdout or no phone) received %v", m.ID, bodies)
			}
		case c.InTestGroup(m.Key):
			if len(bodies) != 1 || bodies[0] != v+"|"+m.ID {
				t.Errorf("%s of the test (%s) received %v", m.ID, v, bodies)
			}
		default:
			rest++
			if len(bodies) != 1 || bodies[0] != "A|"+m.ID {
				t.Errorf("%s of the rest received %v, want the winner A once", m.ID, bodies)
			}
		}
	}
	if rest < 1000 {
		t.Fatalf("only %d members in the rest", rest)
	}
}

package campaigns_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
)

// fallbackBody is a push → email → sms fallback campaign (wait: 1h).
const fallbackBody = `{
  "id": "fb",
  "segment": "all",
  "channels": ["apns", "email", "sms"],
  "delivery": {"mode": "fallback", "wait": "1h"},
  "content": {
    "email": {"from": "shop@example.test", "subject": "Hi", "text": "Hello {{ profile.first_name }}"},
    "sms": {"body": "Hi"},
    "push": {"title": "Sale", "body": "Hi"}
  }
}`

var (
	deadToken = channels.Permanent(channels.ReasonDeadAddress, "BadDeviceToken", errors.New("bad device token"))
	deadMail  = channels.Permanent(channels.ReasonDeadAddress, "550", errors.New("user unknown"))
	deadPhone = channels.Permanent(channels.ReasonDeadAddress, "21211", errors.New("invalid number"))
	badCreds  = channels.Permanent(channels.ReasonAuth, "403", errors.New("credentials refused"))
	busy      = channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("busy"))
)

// oneMember is a source holding one member with a token, an email and a phone.
func oneMember(edit func(m *campaigns.Member)) *source {
	m := campaigns.Member{
		Key: 42, ID: "u-1", APNs: []string{"tok-1"}, Email: "u1@example.test", Phone: "+14155550001",
		Profile: &profile{id: "u-1", zone: "UTC", attrs: map[string]any{"first_name": "Ann"}},
	}
	if edit != nil {
		edit(&m)
	}
	return &source{members: []campaigns.Member{m}, corrupt: map[uint64]bool{}}
}

func TestFallbackOnEachCause(t *testing.T) {
	type counts = map[string]map[string]int64
	tests := []struct {
		name     string
		body     string
		member   func(m *campaigns.Member)
		script   func(r *rig)
		counts   counts
		fallback counts
		sent     map[string]int // sends per channel (attempts included)
	}{
		{
			name:     "push accepted: email and sms unused",
			counts:   counts{"apns": {"sent": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
			sent:     map[string]int{"apns": 1},
			fallback: nil,
		},
		{
			name:     "no push token: email",
			member:   func(m *campaigns.Member) { m.APNs = nil },
			counts:   counts{"apns": {"no_address": 1}, "email": {"sent": 1}, "sms": {"fallback_unused": 1}},
			sent:     map[string]int{"email": 1},
			fallback: counts{"push": {"no_address": 1}},
		},
		{
			name:     "no push consent: email",
			member:   func(m *campaigns.Member) { m.PushConsent = campaigns.ConsentDenied },
			counts:   counts{"apns": {"no_consent": 1}, "email": {"sent": 1}, "sms": {"fallback_unused": 1}},
			sent:     map[string]int{"email": 1},
			fallback: counts{"push": {"no_consent": 1}},
		},
		{
			name:     "no token, no email: sms",
			member:   func(m *campaigns.Member) { m.APNs, m.Email = nil, "" },
			counts:   counts{"apns": {"no_address": 1}, "email": {"no_address": 1}, "sms": {"sent": 1}},
			sent:     map[string]int{"sms": 1},
			fallback: counts{"push": {"no_address": 1}, "email": {"no_address": 1}},
		},
		{
			name:     "dead token: email",
			script:   func(r *rig) { r.chans["apns"].Script("tok-1", channelstest.Answer{Err: deadToken}) },
			counts:   counts{"apns": {"dead_address": 1}, "email": {"sent": 1}, "sms": {"fallback_unused": 1}},
			sent:     map[string]int{"apns": 1, "email": 1},
			fallback: counts{"push": {"dead_address": 1}},
		},
		{
			name:     "invalid email after no token: sms",
			member:   func(m *campaigns.Member) { m.APNs = nil },
			script:   func(r *rig) { r.chans["email"].Script("u1@example.test", channelstest.Answer{Err: deadMail}) },
			counts:   counts{"apns": {"no_address": 1}, "email": {"dead_address": 1}, "sms": {"sent": 1}},
			sent:     map[string]int{"email": 1, "sms": 1},
			fallback: counts{"push": {"no_address": 1}, "email": {"dead_address": 1}},
		},
		{
			name: "every step dead: three messages, each answered dead",
			script: func(r *rig) {
				r.chans["apns"].Script("tok-1", channelstest.Answer{Err: deadToken})
				r.chans["email"].Script("u1@example.test", channelstest.Answer{Err: deadMail})
				r.chans["sms"].Script("+14155550001", channelstest.Answer{Err: deadPhone})
			},
			counts:   counts{"apns": {"dead_address": 1}, "email": {"dead_address": 1}, "sms": {"dead_address": 1}},
			sent:     map[string]int{"apns": 1, "email": 1, "sms": 1},
			fallback: counts{"push": {"dead_address": 1}, "email": {"dead_address": 1}},
		},
		{
			name:   "two tokens, one dead: push reached, no fallback",
			member: func(m *campaigns.Member) { m.APNs = []string{"tok-1", "tok-2"} },
			script: func(r *rig) { r.chans["apns"].Script("tok-1", channelstest.Answer{Err: deadToken}) },
			counts: counts{"apns": {"dead_address": 1, "sent": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
			sent:   map[string]int{"apns": 2},
		},
		{
			name:   "two tokens, both dead: email",
			member: func(m *campaigns.Member) { m.APNs = []string{"tok-1", "tok-2"} },
			script: func(r *rig) {
				r.chans["apns"].Script("tok-1", channelstest.Answer{Err: deadToken})
				r.chans["apns"].Script("tok-2", channelstest.Answer{Err: deadToken})
			},
			counts:   counts{"apns": {"dead_address": 2}, "email": {"sent": 1}, "sms": {"fallback_unused": 1}},
			sent:     map[string]int{"apns": 2, "email": 1},
			fallback: counts{"push": {"dead_address": 1}},
		},
		{
			name:   "transient failure that recovers: no fallback",
			script: func(r *rig) { r.chans["apns"].Script("tok-1", channelstest.Answer{Err: busy}, channelstest.Answer{}) },
			counts: counts{"apns": {"sent": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
			sent:   map[string]int{"apns": 2},
		},
		{
			name:   "transient failures that run out: no fallback",
			script: func(r *rig) { r.chans["apns"].Script("tok-1", channelstest.Answer{Err: busy}) },
			counts: counts{"apns": {"retries_exhausted": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
			sent:   map[string]int{"apns": 2}, // MaxAttempts 2
		},
		{
			name:   "our credentials refused: no fallback",
			script: func(r *rig) { r.chans["apns"].Script("tok-1", channelstest.Answer{Err: badCreds}) },
			counts: counts{"apns": {"provider_rejected": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
			sent:   map[string]int{"apns": 1},
		},
		{
			name:   "mode all: every channel",
			body:   strings.Replace(fallbackBody, `"mode": "fallback", "wait": "1h"`, `"mode": "all"`, 1),
			counts: counts{"apns": {"sent": 1}, "email": {"sent": 1}, "sms": {"sent": 1}},
			sent:   map[string]int{"apns": 1, "email": 1, "sms": 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, memstate.New(), oneMember(tc.member), campaigns.EngineConfig{})
			if tc.script != nil {
				tc.script(r)
			}
			body := fallbackBody
			if tc.body != "" {
				body = tc.body
			}
			st, _, err := r.engine.Create(context.Background(), []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
			if !maps.EqualFunc(st.Counts, tc.counts, maps.Equal) {
				t.Errorf("counts = %v, want %v", st.Counts, tc.counts)
			}
			if !maps.EqualFunc(st.Fallback, tc.fallback, maps.Equal) {
				t.Errorf("fallback = %v, want %v", st.Fallback, tc.fallback)
			}
			got := map[string]int{}
			for _, ch := range []string{"apns", "email", "sms"} {
				if n := len(r.keys(ch)); n > 0 {
					got[ch] = n
				}
			}
			if !maps.Equal(got, tc.sent) {
				t.Errorf("sends = %v, want %v", got, tc.sent)
			}
		})
	}
}

// A permanent failure that comes back after the wait does not fall back:
// the engine's clock jumps past the wait while the push is on the wire.
func TestFallbackWaitExpires(t *testing.T) {
	src := oneMember(nil)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	engine := campaigns.NewEngine(r.state, r.state, src, campaigns.NewPoolDispatcher(r.pools), campaigns.EngineConfig{BatchSize: 100}, campaigns.WithEngineClock(clock))
	t.Cleanup(func() { _ = engine.Close(context.Background()) })
	r.chans["apns"].Script("tok-1", channelstest.Answer{Err: deadToken})
	r.chans["apns"].OnSend(func([]*channels.Message) { offset.Add(int64(61 * time.Minute)) })

	st, _, err := engine.Create(context.Background(), []byte(fallbackBody))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, engine, st.ID, campaigns.StatusCompleted)
	want := map[string]map[string]int64{"apns": {"dead_address": 1}, "email": {"fallback_late": 1}, "sms": {"fallback_late": 1}}
	if !maps.EqualFunc(st.Counts, want, maps.Equal) {
		t.Errorf("counts = %v, want %v", st.Counts, want)
	}
	if st.Fallback != nil || len(r.keys("email"))+len(r.keys("sms")) != 0 {
		t.Errorf("fell back after the wait: fallback %v, email %v, sms %v", st.Fallback, r.keys("email"), r.keys("sms"))
	}
}

// Over many members the counts of a fallback campaign add up: one message per
// member reached, on the expected channel, and no channel twice.
func TestFallbackCountsOverASegment(t *testing.T) {
	src := newSource(1000) // email unless i%10, phone unless i%7, apns when i%3==0, email consent "no" when i%11
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	// Every 6th member's token is dead (i%6==0 have tokens: i%3==0 and even).
	for i, m := range src.members {
		if i%6 == 0 {
			r.chans["apns"].Script(m.APNs[0], channelstest.Answer{Err: deadToken})
		}
	}
	st, _, err := r.engine.Create(context.Background(), []byte(fallbackBody))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
	want := map[string]map[string]int64{"apns": {}, "email": {}, "sms": {}}
	fb := map[string]map[string]int64{"push": {}, "email": {}}
	sends := map[string]int{}
	for i, m := range src.members {
		emailOK := m.Email != "" && i%11 != 0
		emailWhy := "no_address"
		if i%11 == 0 {
			emailWhy = "no_consent"
		}
		step := 0 // 0 apns, 1 email, 2 sms, 3 none
		switch {
		case len(m.APNs) > 0 && i%6 != 0:
			want["apns"]["sent"]++
			sends["apns"]++
		case len(m.APNs) > 0:
			want["apns"]["dead_address"]++
			sends["apns"]++
			step = 1
		default:
			want["apns"]["no_address"]++
			step = 1
		}
		if step == 1 {
			// Fell back from apns (dead or no token) when a later step is usable.
			if emailOK || m.Phone != "" {
				if len(m.APNs) > 0 {
					fb["push"]["dead_address"]++
				} else {
					fb["push"]["no_address"]++
				}
			}
			if !emailOK {
				step = 2
				if m.Phone != "" {
					fb["email"][emailWhy]++
				}
			}
		}
		switch {
		case step == 0:
			if emailOK {
				want["email"]["fallback_unused"]++
			} else {
				want["email"][emailWhy]++
			}
			if m.Phone != "" {
				want["sms"]["fallback_unused"]++
			} else {
				want["sms"]["no_address"]++
			}
		case step == 1:
			want["email"]["sent"]++
			sends["email"]++
			if m.Phone != "" {
				want["sms"]["fallback_unused"]++
			} else {
				want["sms"]["no_address"]++
			}
		default:
			want["email"][emailWhy]++
			if m.Phone != "" {
				want["sms"]["sent"]++
				sends["sms"]++
			} else {
				want["sms"]["no_address"]++
			}
		}
	}
	if !maps.EqualFunc(st.Counts, want, maps.Equal) {
		t.Errorf("counts =\n%v, want\n%v", st.Counts, want)
	}
	for ch, m := range fb {
		if len(m) == 0 {
			delete(fb, ch)
		}
	}
	if !maps.EqualFunc(st.Fallback, fb, maps.Equal) {
		t.Errorf("fallback = %v, want %v", st.Fallback, fb)
	}
	for ch, n := range sends {
		keys := r.keys(ch)
		if len(keys) != n {
			t.Errorf("%s: %d sends, want %d", ch, len(keys), n)
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("%s: %s sent twice", ch, k)
			}
			seen[k] = true
		}
	}
}

func TestDeliveryValidationNamesTheField(t *testing.T) {
	tests := []struct {
		name, delivery, channels, field string
	}{
		{"unknown mode", `{"mode": "cascade"}`, `["email"]`, "delivery.mode"},
		{"order without fallback", `{"order": ["email"]}`, `["email"]`, "delivery.order"},
		{"wait without fallback", `{"mode": "all", "wait": "1h"}`, `["email"]`, "delivery.wait"},
		{"negative wait", `{"mode": "fallback", "wait": "-1s"}`, `["email"]`, "delivery.wait"},
		{"wait over 31 days", `{"mode": "fallback", "wait": "745h"}`, `["email"]`, "delivery.wait"},
		{"step not in channels", `{"mode": "fallback", "order": ["email", "sms"]}`, `["email"]`, "delivery.order[1]"},
		{"unknown step", `{"mode": "fallback", "order": ["pigeon"]}`, `["email"]`, "delivery.order[0]"},
		{"push without push channels", `{"mode": "fallback", "order": ["push", "email"]}`, `["email"]`, "delivery.order[0]"},
		{"channel in two steps", `{"mode": "fallback", "order": ["push", "apns", "email"]}`, `["apns", "email"]`, "delivery.order[1]"},
		{"channel in no step", `{"mode": "fallback", "order": ["email"]}`, `["apns", "email"]`, "delivery.order"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"id": "x", "segment": "all", "channels": %s, "delivery": %s,
			  "content": {"email": {"from": "a@example.test", "subject": "s", "text": "t"}, "sms": {"body": "b"}, "push": {"title": "t", "body": "b"}}}`,
				tc.channels, tc.delivery)
			_, err := campaigns.DecodeCampaign([]byte(body))
			var fe *campaigns.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
	ok := `{"id": "x", "segment": "all", "channels": ["apns", "fcm", "email"], "delivery": {"mode": "fallback", "order": ["push", "email"], "wait": "10m"},
	  "content": {"email": {"from": "a@example.test", "subject": "s", "text": "t"}, "push": {"title": "t", "body": "b"}}}`
	if _, err := campaigns.DecodeCampaign([]byte(ok)); err != nil {
		t.Fatalf("valid fallback campaign refused: %v", err)
	}
}

// holeFor swallows one channel's messages (a daemon killed before they were
// answered) and sends the others through real pools.
type holeFor struct {
	*campaigns.PoolDispatcher
	ch   string
	hole *blackhole
}

func (d holeFor) Dispatch(ctx context.Context, ch string, lane channels.Lane, msgs []*channels.Message) (int, error) {
	if ch == d.ch {
		return d.hole.Dispatch(ctx, ch, lane, msgs)
	}
	return d.PoolDispatcher.Dispatch(ctx, ch, lane, msgs)
}

// Daemon A records every push as dead and decides the email fallbacks, then
// dies before any email is answered. Daemon B, resuming from the ledger, sends
// each fallback exactly once (never handed), or reports it in doubt (handed:
// email has no idempotency handle), and never sends push or sms again.
func TestFallbackSurvivesACrashBeforeTheFallbackSend(t *testing.T) {
	for _, hand := range []bool{false, true} {
		name := "decided, never handed: B sends it"
		if hand {
			name = "handed, unanswered: B reports it in doubt"
		}
		t.Run(name, func(t *testing.T) { testFallbackCrash(t, hand) })
	}
}

func testFallbackCrash(t *testing.T, hand bool) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	state := memstate.New(memstate.WithClock(clock))
	const n = 150
	src := &source{corrupt: map[uint64]bool{}}
	for i := range n {
		id := fmt.Sprintf("u-%03d", i)
		src.members = append(src.members, campaigns.Member{
			Key: uint64(i+1) * 10, ID: id, APNs: []string{"tok-" + id}, Email: id + "@example.test", Phone: fmt.Sprintf("+1415555%04d", i),
			Profile: &profile{id: id, zone: "UTC", attrs: map[string]any{"first_name": id}},
		})
	}
	pools := newRig(t, state, src, campaigns.EngineConfig{})
	for _, m := range src.members {
		pools.chans["apns"].Script(m.APNs[0], channelstest.Answer{Err: deadToken})
	}
	hole := &blackhole{hand: hand, keys: map[string][]string{}}
	aState := &severable{Store: state}
	a := campaigns.NewEngine(aState, aState, src, holeFor{campaigns.NewPoolDispatcher(pools.pools), channels.Email, hole}, campaigns.EngineConfig{
		Owner: "a", BatchSize: 100, MaxOpenBatches: 2, LeaseTTL: time.Hour, DrainTimeout: 50 * time.Millisecond,
	}, campaigns.WithEngineClock(clock))
	body := strings.Replace(fallbackBody, `, "wait": "1h"`, "", 1)
	if _, _, err := a.Create(context.Background(), []byte(body)); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 30*time.Second, func() bool {
		hole.mu.Lock()
		defer hole.mu.Unlock()
		return len(hole.keys[channels.Email]) == n
	}, "daemon A never dispatched the email fallbacks")
	// The crash falls after the failures are durable (the ledger's flush)
	// and before any fallback is answered.
	channelstest.Eventually(t, 30*time.Second, func() bool {
		st, err := a.Get(context.Background(), "fb")
		return err == nil && st.Counts["apns"]["dead_address"] == n
	}, "daemon A never recorded the dead tokens")
	aState.dead.Store(true) // killed: nothing it does lands any more
	clockMu.Lock()
	now = now.Add(2 * time.Hour) // its lease runs out
	clockMu.Unlock()
	pushByA := len(pools.keys("apns"))

	b := newRig(t, state, src, campaigns.EngineConfig{Owner: "b", BatchSize: 100})
	if err := b.engine.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, b.engine, "fb", campaigns.StatusCompleted)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.Close(closeCtx)

	email := map[string]int64{"sent": n}
	emailsByB := n
	if hand {
		email, emailsByB = map[string]int64{"in_doubt": n}, 0
	}
	want := map[string]map[string]int64{"apns": {"dead_address": n}, "email": email, "sms": {"fallback_unused": n}}
	if !maps.EqualFunc(st.Counts, want, maps.Equal) {
		t.Errorf("counts = %v, want %v", st.Counts, want)
	}
	if fb := map[string]map[string]int64{"push": {"dead_address": n}}; !maps.EqualFunc(st.Fallback, fb, maps.Equal) {
		t.Errorf("fallback = %v, want %v (counted once, by A)", st.Fallback, fb)
	}
	if pushByA != n || len(b.keys("apns")) != 0 || len(b.keys("sms")) != 0 {
		t.Errorf("push by A %d (want %d), push by B %d, sms by B %d (want 0, 0)", pushByA, n, len(b.keys("apns")), len(b.keys("sms")))
	}
	seen := map[string]bool{}
	for _, k := range b.keys("email") {
		if seen[k] {
			t.Errorf("B sent %s twice", k)
		}
		seen[k] = true
	}
	if len(seen) != emailsByB {
		t.Errorf("B sent %d emails, want %d", len(seen), emailsByB)
	}
	if !hand {
		for _, k := range hole.keys[channels.Email] {
			if !seen[k] {
				t.Errorf("fallback %s decided by A was not sent by B (same key)", k)
			}
		}
	}
}

// The dry run applies the fallback order: a member without a push token is
// counted under email, one without either under sms, and the real run (no
// provider failing) counts the same.
func TestDryRunAppliesFallback(t *testing.T) {
	src := newSource(600) // email unless i%10, phone unless i%7, apns when i%3==0, email consent "no" when i%11
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	ctx := context.Background()
	rep, err := r.engine.DryRun(ctx, []byte(fallbackBody), campaigns.DryRunOptions{Users: []string{"u-00003"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for i, m := range src.members {
		emailOK := m.Email != "" && i%11 != 0
		switch {
		case len(m.APNs) > 0:
			want["apns"]++
		case emailOK:
			want["email"]++
		case m.Phone != "":
			want["sms"]++
		}
	}
	for _, ch := range []string{"apns", "email", "sms"} {
		if got := rep.Audience[ch][campaigns.ReasonWouldSend]; got != want[ch] || got == 0 {
			t.Errorf("%s would_send = %d, want %d", ch, got, want[ch])
		}
	}
	// Member 3 has a token, an email and a phone: its email and sms are previewed as fallbacks.
	if pv := rep.Previews[0].Channels; len(pv) != 3 || pv[0].Fallback || !pv[1].Fallback || pv[1].Content == nil || !pv[2].Fallback {
		t.Errorf("preview = %+v, want apns to send and email, sms as rendered fallbacks", pv)
	}

	st, _, err := r.engine.Create(ctx, []byte(fallbackBody))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
	for _, ch := range []string{"apns", "email", "sms"} {
		dry := maps.Clone(rep.Audience[ch])
		if n, ok := dry[campaigns.ReasonWouldSend]; ok {
			delete(dry, campaigns.ReasonWouldSend)
			dry[campaigns.ReasonSent] = n
		}
		if !maps.Equal(dry, st.Counts[ch]) {
			t.Errorf("%s: dry run %v, real run %v", ch, dry, st.Counts[ch])
		}
		if int64(len(r.keys(ch))) != want[ch] {
			t.Errorf("%s: %d sent, want %d", ch, len(r.keys(ch)), want[ch])
		}
	}
	fb := map[string]map[string]int64{}
	for reason, n := range rep.Audience[campaigns.FallbackCounts] {
		step, cause, _ := strings.Cut(reason, ":")
		if fb[step] == nil {
			fb[step] = map[string]int64{}
		}
		fb[step][cause] = n
	}
	if len(fb) == 0 || !maps.EqualFunc(fb, st.Fallback, maps.Equal) {
		t.Errorf("dry run fallbacks %v, real run %v", fb, st.Fallback)
	}
}

// A capped step is the member's outcome: a cap protects the member from
// too many messages, so it does not move them to the next channel.
func TestFallbackCappedStepDoesNotFallBack(t *testing.T) {
	state := memstate.New()
	r := newRig(t, state, oneMember(nil), campaigns.EngineConfig{})
	e := capEngine(t, r, state, []campaigns.CapRule{{Channel: channels.APNs, Limit: 1, Window: campaigns.Duration(time.Hour)}})
	ctx := context.Background()
	var got []map[string]map[string]int64
	for _, id := range []string{"fb-1", "fb-2"} {
		st, _, err := e.Create(ctx, []byte(strings.Replace(fallbackBody, `"id": "fb"`, `"id": "`+id+`"`, 1)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, waitStatus(t, e, st.ID, campaigns.StatusCompleted).Counts)
	}
	want := []map[string]map[string]int64{
		{"apns": {"sent": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
		{"apns": {"capped": 1}, "email": {"fallback_unused": 1}, "sms": {"fallback_unused": 1}},
	}
	for i := range want {
		if !maps.EqualFunc(got[i], want[i], maps.Equal) {
			t.Errorf("campaign %d: counts %v, want %v", i+1, got[i], want[i])
		}
	}
	if n := len(r.keys("apns")) + len(r.keys("email")) + len(r.keys("sms")); n != 1 {
		t.Errorf("%d messages sent, want 1 (the first campaign's push)", n)
	}
}

// The example in examples/ (docs/policies.md points to it) is a valid
// fallback campaign whose steps are push, email, sms.
func TestFallbackExampleDecodes(t *testing.T) {
	b, err := os.ReadFile("../examples/campaign-fallback.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := campaigns.DecodeCampaign(b)
	if err != nil {
		t.Fatalf("examples/campaign-fallback.json: %v", err)
	}
	if c.Delivery == nil || c.Delivery.Mode != campaigns.DeliveryFallback || fmt.Sprint(c.Delivery.Order) != "[push email sms]" {
		t.Fatalf("delivery = %+v, want fallback over push, email, sms", c.Delivery)
	}
}

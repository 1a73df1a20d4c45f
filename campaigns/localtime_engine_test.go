package campaigns_test

import (
	"context"
	"fmt"
	"slices"
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

// The fake days lie in the future: the worker pools expire messages by the
// real clock, so a deadline in the past would expire them.
func at2036(s string) time.Time {
	t, err := time.Parse(time.RFC3339, "2036-12-"+s)
	if err != nil {
		panic(err)
	}
	return t
}

// fakeClock is a settable clock shared by the engine and memstate.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// zonedSource makes members with a phone each, n[i] of them in zones[i],
// interleaved in key order (a batch mixes zones, as a real shard does).
func zonedSource(zones []string, n []int) (*source, map[uint64]string) {
	s := &source{corrupt: map[uint64]bool{}}
	zoneOf := map[uint64]string{}
	left := slices.Clone(n)
	for k := 0; ; k++ {
		placed := false
		for i, z := range zones {
			if left[i] == 0 {
				continue
			}
			left[i]--
			placed = true
			key := uint64(len(s.members)+1) * 1000
			id := fmt.Sprintf("u-%05d", len(s.members))
			s.members = append(s.members, campaigns.Member{
				Key: key, ID: id, Phone: fmt.Sprintf("+1415555%04d", len(s.members)),
				Profile: &profile{id: id, zone: z},
			})
			zoneOf[key] = z
		}
		if !placed {
			return s, zoneOf
		}
	}
}

// clockRig is a rig whose engine runs on the fake clock.
func clockRig(t *testing.T, state stateStore, src *source, clock *fakeClock, owner string) *rig {
	t.Helper()
	return clockRigCfg(t, state, src, clock, campaigns.EngineConfig{Owner: owner})
}

func clockRigCfg(t *testing.T, state stateStore, src *source, clock *fakeClock, cfg campaigns.EngineConfig) *rig {
	t.Helper()
	cfg.BatchSize, cfg.MaxOpenBatches = 100, 2
	r := newRigOn(t, state, src, cfg)
	r.engine = campaigns.NewEngine(state, state, src, campaigns.NewPoolDispatcher(r.pools), cfg, campaigns.WithEngineClock(clock.Now))
	return r
}

// sentByZone counts the texts each zone's members got, failing on a text sent twice.
func sentByZone(t *testing.T, rigs []*rig, zoneOf map[uint64]string) map[string]int {
	t.Helper()
	seen := map[string]bool{}
	out := map[string]int{}
	for _, r := range rigs {
		for _, k := range r.keys(channels.SMS) {
			if seen[k] {
				t.Fatalf("%s sent twice", k)
			}
			seen[k] = true
			parts := strings.Split(k, ":")
			key, err := strconv.ParseUint(parts[1], 16, 64)
			if err != nil {
				t.Fatalf("idempotency key %q: %v", k, err)
			}
			out[zoneOf[key]]++
		}
	}
	return out
}

// settle waits until the engine runs nothing (the due pass is done and
// the campaign waits, or it completed).
func settle(t *testing.T, e *campaigns.Engine) {
	t.Helper()
	channelstest.Eventually(t, 30*time.Second, func() bool { return len(e.Running()) == 0 }, "the campaign run never ended")
}

// localTimeStores are the state stores the local-time tests run on; each
// takes its subtest's t, so the Redis one skips (not fails) without Redis.
func localTimeStores() map[string]func(t *testing.T, clock *fakeClock) stateStore {
	return map[string]func(t *testing.T, clock *fakeClock) stateStore{
		"memstate": func(_ *testing.T, clock *fakeClock) stateStore { return memstate.New(memstate.WithClock(clock.Now)) },
		"redis": func(t *testing.T, _ *fakeClock) stateStore {
			rdb, prefix := redisForTest(t)
			st, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
}

// TestLocalTimeRollsAcrossTheDay: a 09:00 local-time campaign over members
// in six zones (one without a zone, which takes local_time_zone) sends to
// each zone exactly when it is 09:00 there, and to nobody else, as a fake
// clock moves across the day; the status shows who waits and until when.
func TestLocalTimeRollsAcrossTheDay(t *testing.T) {
	for name, mk := range localTimeStores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			zones := []string{"", "UTC", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata"}
			per := []int{31, 57, 143, 12, 88, 120}
			src, zoneOf := zonedSource(zones, per)
			clock := &fakeClock{now: at2036("05T07:00:00Z")}
			r := clockRig(t, mk(t, clock), src, clock, "a")
			body := `{"id":"morning","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",
				"local_time":"09:00","local_time_zone":"Europe/Paris","content":{"sms":{"body":"Good morning"}}}`
			if _, _, err := r.engine.Create(ctx, []byte(body)); err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, n := range per {
				total += n
			}
			steps := []struct {
				now  string
				sent map[string]int // every send so far, by zone
				next string         // the next pass ("" once completed)
			}{
				// 07:00Z: 08:00 in Paris, 02:00 in New York, 23:00 (the 4th) in Los Angeles,
				// 16:00 in Tokyo and 12:30 in Kolkata: Tokyo's and Kolkata's 09:00 has passed.
				{now: "05T07:00:00Z", sent: map[string]int{}, next: "05T08:00:00Z"},
				{now: "05T07:59:59Z", sent: map[string]int{}, next: "05T08:00:00Z"},
				{now: "05T08:00:00Z", sent: map[string]int{"": 31}, next: "05T09:00:00Z"},
				{now: "05T09:00:00Z", sent: map[string]int{"": 31, "UTC": 57}, next: "05T14:00:00Z"},
				{now: "05T13:59:00Z", sent: map[string]int{"": 31, "UTC": 57}, next: "05T14:00:00Z"},
				{now: "05T14:00:00Z", sent: map[string]int{"": 31, "UTC": 57, "America/New_York": 143}, next: "05T17:00:00Z"},
				{now: "05T17:00:00Z", sent: map[string]int{"": 31, "UTC": 57, "America/New_York": 143, "America/Los_Angeles": 12}, next: "06T00:00:00Z"},
				{now: "06T00:00:00Z", sent: map[string]int{"": 31, "UTC": 57, "America/New_York": 143, "America/Los_Angeles": 12, "Asia/Tokyo": 88}, next: "06T03:30:00Z"},
				{now: "06T03:30:00Z", sent: map[string]int{"": 31, "UTC": 57, "America/New_York": 143, "America/Los_Angeles": 12, "Asia/Tokyo": 88, "Asia/Kolkata": 120}},
			}
			for _, s := range steps {
				clock.Set(at2036(s.now))
				if err := r.engine.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				settle(t, r.engine)
				got := sentByZone(t, []*rig{r}, zoneOf)
				if !mapsEqual(got, s.sent) {
					t.Fatalf("at %s sent by zone %v, want %v", s.now, got, s.sent)
				}
				st, err := r.engine.Get(ctx, "morning")
				if err != nil {
					t.Fatal(err)
				}
				sent := 0
				for _, n := range s.sent {
					sent += n
				}
				if st.Counts[channels.SMS]["sent"] != int64(sent) {
					t.Fatalf("at %s counted %v, want %d sent", s.now, st.Counts, sent)
				}
				if s.next == "" {
					if st.Status != campaigns.StatusCompleted || st.Waiting == nil || st.Waiting.LocalTime != 0 || st.Waiting.NextDue != nil {
						t.Fatalf("at %s: %+v, want completed with nothing waiting", s.now, st)
					}
					continue
				}
				if st.Status != campaigns.StatusRunning || st.Waiting == nil || st.Waiting.LocalTime != int64(total-sent) ||
					st.Waiting.QuietHours != 0 || st.Waiting.NextDue == nil || !st.Waiting.NextDue.Equal(at2036(s.next)) {
					t.Fatalf("at %s: status %s waiting %+v, want running with %d waiting until %s", s.now, st.Status, st.Waiting, total-sent, s.next)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestQuietHoursDelaySurvivesARestart: members inside quiet hours wait for
// the window's end in their zone; the daemon is stopped while they wait and
// a new one (same state store) sends each of them once, when their window
// ends, and nobody twice.
func TestQuietHoursDelaySurvivesARestart(t *testing.T) {
	for name, mk := range localTimeStores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns"}
			per := []int{40, 70, 25, 33, 9}
			src, zoneOf := zonedSource(zones, per)
			clock := &fakeClock{now: at2036("05T07:00:00Z")}
			state := mk(t, clock)
			a := clockRig(t, state, src, clock, "a")
			// At 07:00Z it is 07:00 in UTC, 02:00 in New York and 03:30 in St John's
			// (quiet until 08:00 there), 16:00 in Tokyo and 12:30 in Kolkata.
			body := `{"id":"quiet","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",
				"quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"},"content":{"sms":{"body":"Hello"}}}`
			if _, _, err := a.engine.Create(ctx, []byte(body)); err != nil {
				t.Fatal(err)
			}
			settle(t, a.engine)
			if got, want := sentByZone(t, []*rig{a}, zoneOf), map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33}; !mapsEqual(got, want) {
				t.Fatalf("before the windows end: sent %v, want %v", got, want)
			}
			st, err := a.engine.Get(ctx, "quiet")
			if err != nil {
				t.Fatal(err)
			}
			if st.Waiting == nil || st.Waiting.QuietHours != 40+70+9 || !st.Waiting.NextDue.Equal(at2036("05T08:00:00Z")) {
				t.Fatalf("waiting %+v, want 119 in quiet hours until 08:00Z", st.Waiting)
			}
			closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := a.engine.Close(closeCtx); err != nil {
				t.Fatal(err)
			}

			// A new daemon on the same state store.
			b := clockRig(t, state, src, clock, "b")
			if err := b.engine.Start(ctx); err != nil {
				t.Fatal(err)
			}
			settle(t, b.engine)
			if n := len(b.keys(channels.SMS)); n != 0 {
				t.Fatalf("the new daemon sent %d before any window ended", n)
			}
			steps := []struct {
				now  string
				want map[string]int
			}{
				{now: "05T08:00:00Z", want: map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 40}},
				{now: "05T11:29:00Z", want: map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 40}},
				{now: "05T11:30:00Z", want: map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 40, "America/St_Johns": 9}},
				{now: "05T13:00:00Z", want: map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 40, "America/St_Johns": 9, "America/New_York": 70}},
			}
			for _, s := range steps {
				clock.Set(at2036(s.now))
				if err := b.engine.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				settle(t, b.engine)
				if got := sentByZone(t, []*rig{a, b}, zoneOf); !mapsEqual(got, s.want) {
					t.Fatalf("at %s sent %v, want %v", s.now, got, s.want)
				}
			}
			st = waitStatus(t, b.engine, "quiet", campaigns.StatusCompleted)
			if st.Counts[channels.SMS]["sent"] != 177 || len(st.Counts[channels.SMS]) != 1 {
				t.Fatalf("counts %v, want 177 sent and nothing else", st.Counts)
			}
		})
	}
}

// switchable sends through a real dispatcher until hole is set, then
// swallows messages as a daemon killed right after taking them would.
type switchable struct {
	campaigns.Dispatcher
	hole *blackhole
	on   atomic.Bool
}

func (s *switchable) Dispatch(ctx context.Context, ch string, l channels.Lane, msgs []*channels.Message) (int, error) {
	if s.on.Load() {
		return s.hole.Dispatch(ctx, ch, l, msgs)
	}
	return s.Dispatcher.Dispatch(ctx, ch, l, msgs)
}

// TestDelayedPassKilledMidwayResumesOnce: the daemon is killed (kill -9:
// none of its writes land any more) in the middle of a quiet-hours pass;
// another daemon resumes that pass from its ledger and runs the later
// ones: every member gets one text, at its window's end or later.
func TestDelayedPassKilledMidwayResumesOnce(t *testing.T) {
	ctx := context.Background()
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns"}
	per := []int{340, 70, 25, 33, 9}
	src, zoneOf := zonedSource(zones, per)
	clock := &fakeClock{now: at2036("05T07:00:00Z")}
	state := memstate.New(memstate.WithClock(clock.Now))
	aState := &severable{Store: state}
	a := clockRig(t, state, src, clock, "a")
	sw := &switchable{Dispatcher: campaigns.NewPoolDispatcher(a.pools), hole: &blackhole{keys: map[string][]string{}}}
	cfg := campaigns.EngineConfig{Owner: "a", BatchSize: 100, MaxOpenBatches: 2, LeaseTTL: time.Hour, DrainTimeout: 50 * time.Millisecond}
	a.engine = campaigns.NewEngine(aState, aState, src, sw, cfg, campaigns.WithEngineClock(clock.Now))
	body := `{"id":"quiet","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",
		"quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"},"content":{"sms":{"body":"Hello"}}}`
	if _, _, err := a.engine.Create(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	settle(t, a.engine)
	if got, want := sentByZone(t, []*rig{a}, zoneOf), map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33}; !mapsEqual(got, want) {
		t.Fatalf("first pass: sent %v, want %v", got, want)
	}

	// 08:00Z: UTC's window ends; A takes the first batches of that pass and dies.
	sw.on.Store(true)
	clock.Set(at2036("05T08:00:00Z"))
	if err := a.engine.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 30*time.Second, func() bool {
		sw.hole.mu.Lock()
		defer sw.hole.mu.Unlock()
		return len(sw.hole.keys[channels.SMS]) >= 100
	}, "A never dispatched in the 08:00 pass")
	aState.dead.Store(true)
	sw.hole.mu.Lock()
	swallowed := slices.Clone(sw.hole.keys[channels.SMS])
	sw.hole.mu.Unlock()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = a.engine.Close(cctx)
	})

	// 09:30Z: A's leases ran out; B starts.
	clock.Set(at2036("05T09:30:00Z"))
	b := clockRig(t, state, src, clock, "b")
	if err := b.engine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	settle(t, b.engine)
	if got, want := sentByZone(t, []*rig{a, b}, zoneOf), map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 340}; !mapsEqual(got, want) {
		t.Fatalf("after B resumed: sent %v, want %v", got, want)
	}
	fromB := map[string]bool{}
	for _, k := range b.keys(channels.SMS) {
		fromB[k] = true
	}
	for _, k := range swallowed {
		if !fromB[k] {
			t.Fatalf("%s, taken by A and never sent, was not sent by B", k)
		}
	}
	for _, now := range []string{"05T11:30:00Z", "05T13:00:00Z"} {
		clock.Set(at2036(now))
		if err := b.engine.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		settle(t, b.engine)
	}
	want := map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 340, "America/St_Johns": 9, "America/New_York": 70}
	if got := sentByZone(t, []*rig{a, b}, zoneOf); !mapsEqual(got, want) {
		t.Fatalf("at the end: sent %v, want %v", got, want)
	}
	st := waitStatus(t, b.engine, "quiet", campaigns.StatusCompleted)
	if st.Counts[channels.SMS]["sent"] != 477 || len(st.Counts[channels.SMS]) != 1 {
		t.Fatalf("counts %v, want 477 sent and nothing else", st.Counts)
	}
}

// TestDryRunCountsWaitingMembers: a dry run of deferred campaigns says how
// many members wait for their local time or for quiet hours to end, and
// counts each member as its own pass will (a delay past the TTL: expired),
// which is what the real run then counts.
func TestDryRunCountsWaitingMembers(t *testing.T) {
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns"}
	per := []int{40, 70, 25, 33, 9}
	tests := []struct {
		name  string
		extra string
		steps []string
		want  campaigns.Waiting
		sms   map[string]int64
	}{
		{
			name: "local time", extra: `"local_time":"09:00"`,
			steps: []string{"05T09:00:00Z", "05T12:30:00Z", "05T14:00:00Z", "06T00:00:00Z", "06T03:30:00Z"},
			want:  campaigns.Waiting{LocalTime: 177, NextDue: ptr(at2036("05T09:00:00Z"))},
			sms:   map[string]int64{campaigns.ReasonWouldSend: 177},
		},
		{
			// A 5h TTL: New York's window ends at 13:00Z, past 12:00Z.
			name: "quiet hours delay within a ttl", extra: `"ttl":"5h","quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"}`,
			steps: []string{"05T08:00:00Z", "05T11:30:00Z"},
			want:  campaigns.Waiting{QuietHours: 49, NextDue: ptr(at2036("05T08:00:00Z"))},
			sms:   map[string]int64{campaigns.ReasonWouldSend: 107, campaigns.ReasonExpired: 70},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			src, _ := zonedSource(zones, per)
			clock := &fakeClock{now: at2036("05T07:00:00Z")}
			r := clockRig(t, memstate.New(memstate.WithClock(clock.Now)), src, clock, "a")
			body := `{"id":"dry","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",` + tc.extra + `,"content":{"sms":{"body":"Hi"}}}`
			rep, err := r.engine.DryRun(ctx, []byte(body), campaigns.DryRunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Waiting == nil || rep.Waiting.LocalTime != tc.want.LocalTime || rep.Waiting.QuietHours != tc.want.QuietHours ||
				rep.Waiting.NextDue == nil || !rep.Waiting.NextDue.Equal(*tc.want.NextDue) {
				t.Fatalf("waiting %+v, want %+v", rep.Waiting, tc.want)
			}
			if rep.Members != 177 || fmt.Sprint(rep.Audience[channels.SMS]) != fmt.Sprint(tc.sms) {
				t.Fatalf("members %d audience %v, want 177 and %v", rep.Members, rep.Audience, tc.sms)
			}
			if n := len(r.keys(channels.SMS)); n != 0 {
				t.Fatalf("the dry run sent %d", n)
			}
			if _, _, err := r.engine.Create(ctx, []byte(body)); err != nil {
				t.Fatal(err)
			}
			settle(t, r.engine)
			for _, s := range tc.steps {
				clock.Set(at2036(s))
				if err := r.engine.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				settle(t, r.engine)
			}
			st := waitStatus(t, r.engine, "dry", campaigns.StatusCompleted)
			want := map[string]int64{}
			for reason, n := range tc.sms {
				if reason == campaigns.ReasonWouldSend {
					reason = campaigns.ReasonSent
				}
				want[reason] = n
			}
			if fmt.Sprint(st.Counts[channels.SMS]) != fmt.Sprint(want) {
				t.Fatalf("real run %v, dry run %v", st.Counts[channels.SMS], want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestLocalTimeFleet: in a two-shard fleet each daemon runs the passes of
// its own part; the status, read through either daemon, adds up what every
// shard sent and holds back.
func TestLocalTimeFleet(t *testing.T) {
	ctx := context.Background()
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns"}
	per := []int{40, 70, 25, 33, 9}
	all, zoneOf := zonedSource(zones, per)
	parts := partition(all, 2)
	clock := &fakeClock{now: at2036("05T07:00:00Z")}
	state := memstate.New(memstate.WithClock(clock.Now))
	rigs := make([]*rig, 2)
	for k := range rigs {
		rigs[k] = clockRigCfg(t, state, parts[k], clock, campaigns.EngineConfig{Owner: "node-" + strconv.Itoa(k), Shard: k, Shards: 2})
		if err := rigs[k].engine.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	body := `{"id":"fleet-morning","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z","local_time":"09:00","content":{"sms":{"body":"Hi"}}}`
	if _, _, err := rigs[0].engine.Create(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		now     string
		sent    map[string]int
		waiting int64
	}{
		{now: "05T07:00:00Z", sent: map[string]int{}, waiting: 177},
		{now: "05T09:00:00Z", sent: map[string]int{"UTC": 40}, waiting: 137},
		{now: "05T12:30:00Z", sent: map[string]int{"UTC": 40, "America/St_Johns": 9}, waiting: 128},
		{now: "05T14:00:00Z", sent: map[string]int{"UTC": 40, "America/St_Johns": 9, "America/New_York": 70}, waiting: 58},
		{now: "06T00:00:00Z", sent: map[string]int{"UTC": 40, "America/St_Johns": 9, "America/New_York": 70, "Asia/Tokyo": 25}, waiting: 33},
		{now: "06T03:30:00Z", sent: map[string]int{"UTC": 40, "America/St_Johns": 9, "America/New_York": 70, "Asia/Tokyo": 25, "Asia/Kolkata": 33}},
	}
	for _, s := range steps {
		clock.Set(at2036(s.now))
		for _, r := range rigs {
			if err := r.engine.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range rigs {
			settle(t, r.engine)
		}
		if got := sentByZone(t, rigs, zoneOf); !mapsEqual(got, s.sent) {
			t.Fatalf("at %s sent %v, want %v", s.now, got, s.sent)
		}
		for _, r := range rigs {
			st, err := r.engine.Get(ctx, "fleet-morning")
			if err != nil {
				t.Fatal(err)
			}
			if st.Waiting == nil || st.Waiting.LocalTime != s.waiting || st.Counts[channels.SMS]["sent"] != 177-s.waiting {
				t.Fatalf("at %s: waiting %+v counts %v, want %d waiting and %d sent", s.now, st.Waiting, st.Counts, s.waiting, 177-s.waiting)
			}
		}
	}
	waitStatus(t, rigs[1].engine, "fleet-morning", campaigns.StatusCompleted)
}

// TestWaitingCampaignPausesResumesAndCancels: a paused campaign does not
// run its pass when it comes; resumed, it runs every pass that is due; a
// cancelled one sends nothing more.
func TestWaitingCampaignPausesResumesAndCancels(t *testing.T) {
	ctx := context.Background()
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo"}
	per := []int{40, 70, 25}
	src, zoneOf := zonedSource(zones, per)
	clock := &fakeClock{now: at2036("05T07:00:00Z")}
	r := clockRig(t, memstate.New(memstate.WithClock(clock.Now)), src, clock, "a")
	body := `{"id":"pausy","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z","local_time":"09:00","content":{"sms":{"body":"Hi"}}}`
	if _, _, err := r.engine.Create(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	settle(t, r.engine)
	step := func(now string, want map[string]int) {
		t.Helper()
		clock.Set(at2036(now))
		if err := r.engine.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		settle(t, r.engine)
		if got := sentByZone(t, []*rig{r}, zoneOf); !mapsEqual(got, want) {
			t.Fatalf("at %s sent %v, want %v", now, got, want)
		}
	}
	if st, err := r.engine.Pause(ctx, "pausy"); err != nil || st.Status != campaigns.StatusPaused {
		t.Fatalf("pause: %+v %v", st, err)
	}
	step("05T14:00:00Z", map[string]int{}) // UTC's and New York's passes are due, the campaign is paused
	if _, err := r.engine.Resume(ctx, "pausy"); err != nil {
		t.Fatal(err)
	}
	settle(t, r.engine)
	if got, want := sentByZone(t, []*rig{r}, zoneOf), map[string]int{"UTC": 40, "America/New_York": 70}; !mapsEqual(got, want) {
		t.Fatalf("after resume: sent %v, want %v", got, want)
	}
	st, err := r.engine.Get(ctx, "pausy")
	if err != nil || st.Status != campaigns.StatusRunning || st.Waiting.LocalTime != 25 || !st.Waiting.NextDue.Equal(at2036("06T00:00:00Z")) {
		t.Fatalf("after resume: %+v %v, want running, 25 waiting until Tokyo's 09:00", st, err)
	}
	if _, err := r.engine.Cancel(ctx, "pausy"); err != nil {
		t.Fatal(err)
	}
	step("06T00:00:00Z", map[string]int{"UTC": 40, "America/New_York": 70})
	if st, _ := r.engine.Get(ctx, "pausy"); st.Status != campaigns.StatusCancelled {
		t.Fatalf("status %s, want cancelled", st.Status)
	}
}

// budget forwards the first n messages to a real dispatcher and swallows
// the rest, as a daemon killed mid-pass after some sends would.
type budget struct {
	campaigns.Dispatcher
	mu   sync.Mutex
	left int
	hole *blackhole
}

func (b *budget) Dispatch(ctx context.Context, ch string, l channels.Lane, msgs []*channels.Message) (int, error) {
	b.mu.Lock()
	fwd := min(b.left, len(msgs))
	b.left -= fwd
	b.mu.Unlock()
	if fwd > 0 {
		n, err := b.Dispatcher.Dispatch(ctx, ch, l, msgs[:fwd])
		if err != nil || n < fwd {
			return n, err
		}
	}
	if fwd < len(msgs) {
		if _, err := b.hole.Dispatch(ctx, ch, l, msgs[fwd:]); err != nil {
			return fwd, err
		}
	}
	return len(msgs), nil
}

// TestCrashLoopInAPass: daemons that die in a delayed pass without sending
// anything get the campaign quarantined (failed, crash_loop) as a campaign
// without passes would; daemons that die after sending part of the pass
// do not, however many die, and the campaign completes with each member
// sent once.
func TestCrashLoopInAPass(t *testing.T) {
	for _, tc := range []struct {
		name     string
		progress int // messages each doomed daemon sends before it dies
	}{
		{name: "no progress: quarantined", progress: 0},
		{name: "progress each time: not quarantined", progress: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			src, _ := zonedSource([]string{"UTC"}, []int{1000})
			clock := &fakeClock{now: at2036("05T07:00:00Z")}
			state := memstate.New(memstate.WithClock(clock.Now))
			body := `{"id":"loop","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",
				"quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"},"content":{"sms":{"body":"Hello"}}}`
			var sent []*rig
			for i := range 4 {
				clock.Set(at2036("05T08:00:00Z").Add(time.Duration(i) * 2 * time.Hour)) // the dead daemon's leases ran out
				doomed := clockRig(t, state, src, clock, "doomed-"+strconv.Itoa(i))
				sent = append(sent, doomed)
				dState := &severable{Store: state}
				b := &budget{Dispatcher: campaigns.NewPoolDispatcher(doomed.pools), left: tc.progress, hole: &blackhole{keys: map[string][]string{}}}
				doomed.engine = campaigns.NewEngine(dState, dState, src, b, campaigns.EngineConfig{
					Owner: "doomed-" + strconv.Itoa(i), BatchSize: 100, MaxOpenBatches: 2, LeaseTTL: time.Hour, DrainTimeout: 50 * time.Millisecond,
				}, campaigns.WithEngineClock(clock.Now))
				if i == 0 {
					clock.Set(at2036("05T07:00:00Z"))
					if _, _, err := doomed.engine.Create(ctx, []byte(body)); err != nil {
						t.Fatal(err)
					}
					settle(t, doomed.engine) // nothing due before 08:00
					clock.Set(at2036("05T08:00:00Z"))
				}
				if err := doomed.engine.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				if i == 3 && tc.progress == 0 {
					settle(t, doomed.engine)
					st, err := doomed.engine.Get(ctx, "loop")
					if err != nil || st.Status != campaigns.StatusFailed || st.Reason != campaigns.ReasonCrashLoop {
						t.Fatalf("after three deaths without progress: %+v %v, want failed crash_loop", st, err)
					}
					if n := len(doomed.keys(channels.SMS)); n != 0 {
						t.Fatalf("sent %d", n)
					}
					return
				}
				channelstest.Eventually(t, 30*time.Second, func() bool {
					b.hole.mu.Lock()
					defer b.hole.mu.Unlock()
					p, err := state.Progress(ctx, "loop/t"+strconv.FormatInt(at2036("05T08:00:00Z").Unix(), 10))
					var acc int64
					for _, c := range p.Counts {
						acc += c.N
					}
					return err == nil && len(b.hole.keys[channels.SMS]) > 0 && acc >= int64(tc.progress*(i+1))
				}, "daemon %d never reached the pass", i)
				dState.dead.Store(true)
				t.Cleanup(func() {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					_ = doomed.engine.Close(cctx)
				})
			}
			clock.Set(at2036("05T16:00:00Z"))
			last := clockRig(t, state, src, clock, "survivor")
			if err := last.engine.Start(ctx); err != nil {
				t.Fatal(err)
			}
			st := waitStatus(t, last.engine, "loop", campaigns.StatusCompleted)
			got := sentByZone(t, append(sent, last), map[uint64]string{})
			if got[""] != 1000 || st.Counts[channels.SMS]["sent"] != 1000 {
				t.Fatalf("sent %v, counted %v; want 1000 each once", got, st.Counts)
			}
		})
	}
}

// TestWaitingCampaignSurvivesStoreLoss: Redis loses everything while a
// campaign waits for its next pass (no run holds it). The daemon notices
// the lost epoch and writes the waiting part back; the later passes run
// when due, nobody gets two texts, and the counts of the passes before the
// loss are kept.
func TestWaitingCampaignSurvivesStoreLoss(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := redisForTest(t)
	st, err := redisstate.New(rdb, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "America/St_Johns"}
	per := []int{40, 70, 25, 33, 9}
	src, zoneOf := zonedSource(zones, per)
	clock := &fakeClock{now: at2036("05T07:00:00Z")}
	r := clockRig(t, st, src, clock, "a")
	if err := r.engine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.engine.CheckState(ctx); err != nil { // notes the epoch, as the daemon does at start
		t.Fatal(err)
	}
	body := `{"id":"quiet","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z",
		"quiet_hours":{"start":"21:00","end":"08:00","mode":"delay"},"content":{"sms":{"body":"Hello"}}}`
	if _, _, err := r.engine.Create(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	settle(t, r.engine)
	if n := deleteKeys(ctx, t, rdb, prefix+"*"); n == 0 {
		t.Fatal("no key to lose")
	}
	if reset, err := r.engine.CheckState(ctx); err != nil || !reset {
		t.Fatalf("CheckState = %v, %v; want the loss noticed", reset, err)
	}
	s, err := r.engine.Get(ctx, "quiet")
	if err != nil || s.Status != campaigns.StatusRunning || s.Counts[channels.SMS]["sent"] != 58 || s.Waiting == nil || s.Waiting.QuietHours != 119 {
		t.Fatalf("after the loss: %+v %v; want running, 58 sent, 119 waiting", s, err)
	}
	for _, now := range []string{"05T08:00:00Z", "05T11:30:00Z", "05T13:00:00Z"} {
		clock.Set(at2036(now))
		if err := r.engine.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		settle(t, r.engine)
	}
	want := map[string]int{"Asia/Tokyo": 25, "Asia/Kolkata": 33, "UTC": 40, "America/St_Johns": 9, "America/New_York": 70}
	if got := sentByZone(t, []*rig{r}, zoneOf); !mapsEqual(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	s = waitStatus(t, r.engine, "quiet", campaigns.StatusCompleted)
	if s.Counts[channels.SMS]["sent"] != 177 {
		t.Fatalf("counts %v, want 177 sent", s.Counts)
	}
}

// TestPauseMidPassResumesThePass: a pause in the middle of a pass stops it
// after its in-flight batches settle; resume finishes that pass from its
// ledger (each member once) and the campaign then waits for its next one.
func TestPauseMidPassResumesThePass(t *testing.T) {
	ctx := context.Background()
	src, zoneOf := zonedSource([]string{"UTC", "America/New_York"}, []int{3000, 100})
	clock := &fakeClock{now: at2036("05T07:00:00Z")}
	r := clockRig(t, memstate.New(memstate.WithClock(clock.Now)), src, clock, "a")
	gate := make(chan struct{})
	var once sync.Once
	r.chans[channels.SMS].OnSend(func(batch []*channels.Message) {
		r.mu.Lock()
		for _, m := range batch {
			r.sent[channels.SMS] = append(r.sent[channels.SMS], m.IdempotencyKey)
		}
		n := len(r.sent[channels.SMS])
		r.mu.Unlock()
		if n > 500 {
			once.Do(func() { close(gate) })
		}
	})
	body := `{"id":"pass-pause","segment":"all","channels":["sms"],"send_at":"2036-12-05T07:00:00Z","local_time":"09:00","content":{"sms":{"body":"Hi"}}}`
	if _, _, err := r.engine.Create(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	settle(t, r.engine)
	clock.Set(at2036("05T09:00:00Z"))
	if err := r.engine.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	<-gate
	if st, err := r.engine.Pause(ctx, "pass-pause"); err != nil || st.Status != campaigns.StatusPaused {
		t.Fatalf("pause: %+v %v", st, err)
	}
	if n := len(r.keys(channels.SMS)); n >= 3000 {
		t.Fatalf("the pause did not stop the pass early (%d sent)", n)
	}
	if _, err := r.engine.Resume(ctx, "pass-pause"); err != nil {
		t.Fatal(err)
	}
	settle(t, r.engine)
	if got, want := sentByZone(t, []*rig{r}, zoneOf), map[string]int{"UTC": 3000}; !mapsEqual(got, want) {
		t.Fatalf("after resume: sent %v, want %v", got, want)
	}
	st, err := r.engine.Get(ctx, "pass-pause")
	if err != nil || st.Status != campaigns.StatusRunning || st.Waiting.LocalTime != 100 || st.Counts[channels.SMS]["sent"] != 3000 {
		t.Fatalf("after resume: %+v %v; want running, 3000 sent, 100 waiting", st, err)
	}
	clock.Set(at2036("05T14:00:00Z"))
	if err := r.engine.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, "pass-pause", campaigns.StatusCompleted)
	if got, want := sentByZone(t, []*rig{r}, zoneOf), map[string]int{"UTC": 3000, "America/New_York": 100}; !mapsEqual(got, want) || st.Counts[channels.SMS]["sent"] != 3100 {
		t.Fatalf("sent %v counted %v", got, st.Counts)
	}
}

package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// Impl is one fresh, empty state-layer instance under test. Its parts share
// state (and, for memory, one clock).
type Impl struct {
	// Dedup returns the DedupLog of one owner; different owners share records.
	Dedup     func(owner string) campaigns.DedupLog
	Progress  campaigns.ProgressStore
	Campaigns campaigns.CampaignStore
	Intake    campaigns.Intake
	Delays    campaigns.DelayQueue
	// Caps is the frequency-cap store (the Caps part is skipped when nil).
	Caps campaigns.CapStore
	// Engagement counts engagement events (the part is skipped when nil).
	Engagement campaigns.EngagementLog
	// Now is the implementation's clock (time.Now when nil), for due times.
	Now func() time.Time
	// Advance moves the implementation's clock. Leave it nil for an
	// implementation on real server time (Redis): the suite then waits for
	// time-dependent outcomes by polling with a deadline.
	Advance func(d time.Duration)
	// Lease is the lease, window and idle time the suite uses where time
	// matters. With Advance nil the suite waits it out, so keep it short
	// (a few hundred ms) but well above one round trip.
	Lease time.Duration
}

// Run runs the whole contract against fresh instances from newImpl.
func Run(t *testing.T, newImpl func(t *testing.T) Impl) {
	t.Run("Dedup", func(t *testing.T) { runDedup(t, newImpl) })
	t.Run("Progress", func(t *testing.T) { runProgress(t, newImpl) })
	t.Run("Ledger", func(t *testing.T) { runLedger(t, newImpl) })
	t.Run("Campaigns", func(t *testing.T) { runCampaigns(t, newImpl) })
	t.Run("Intake", func(t *testing.T) { runIntake(t, newImpl) })
	t.Run("Delays", func(t *testing.T) { runDelays(t, newImpl) })
	t.Run("Caps", func(t *testing.T) { runCaps(t, newImpl) })
	t.Run("Engagement", func(t *testing.T) { runEngagement(t, newImpl) })
}

func runEngagement(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()
	impl := newImpl(t)
	if impl.Engagement == nil {
		t.Skip("no engagement store")
	}
	e := impl.Engagement
	ev := func(ch, event, msg string) campaigns.Engagement {
		return campaigns.Engagement{Channel: ch, Event: event, MessageID: msg}
	}
	// A reloaded pixel and a second click are events, not messages; the
	// same message's open and click are one of each; a repeat in a later
	// call is still a repeat.
	must(t, e.CountEngagement(ctx, "eng-a", []campaigns.Engagement{
		ev("email", "opened", "eng-a:1:email:0"), ev("email", "opened", "eng-a:1:email:0"), ev("email", "opened", "eng-a:2:email:0"),
		ev("email", "clicked", "eng-a:1:email:0"), ev("sms", "delivered", "eng-a:1:sms:0"),
	}))
	must(t, e.CountEngagement(ctx, "eng-a", []campaigns.Engagement{ev("email", "clicked", "eng-a:1:email:0"), ev("email", "unsubscribed", "eng-a:2:email:0")}))
	must(t, e.CountEngagement(ctx, "eng-b", []campaigns.Engagement{ev("email", "opened", "eng-a:1:email:0")}))
	must(t, e.CountEngagement(ctx, "eng-b", nil))
	tests := []struct {
		name     string
		campaign string
		want     map[string]int64
	}{
		{"unique messages and every event", "eng-a", map[string]int64{
			"email:opened": 2, "email:opened_total": 3, "email:clicked": 1, "email:clicked_total": 2,
			"email:unsubscribed": 1, "email:unsubscribed_total": 1, "sms:delivered": 1, "sms:delivered_total": 1}},
		{"campaigns are counted apart", "eng-b", map[string]int64{"email:opened": 1, "email:opened_total": 1}},
		{"none yet", "eng-c", map[string]int64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			counts, err := e.EngagementCounts(ctx, tc.campaign)
			must(t, err)
			got := map[string]int64{}
			for _, c := range counts {
				got[c.Channel+":"+c.Reason] += c.N
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("counts %v, want %v", got, tc.want)
			}
		})
	}
}

// eventually lets time pass and then returns op's first settled answer.
// With a fake clock the clock is moved past d and op must settle at once;
// on real time op is polled until it settles, failing after a deadline. op
// must not change state while it has not settled.
func eventually[T any](t *testing.T, impl Impl, d time.Duration, op func() (T, bool)) T {
	t.Helper()
	if impl.Advance != nil {
		impl.Advance(d + time.Millisecond)
		v, ok := op()
		if !ok {
			t.Fatalf("not settled after the clock moved %v: %v", d, v)
		}
		return v
	}
	deadline := time.Now().Add(10*d + 5*time.Second)
	tick := time.NewTicker(max(d/20, 5*time.Millisecond))
	defer tick.Stop()
	for {
		if v, ok := op(); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled within %v", 10*d+5*time.Second)
		}
		<-tick.C
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}

// ---- dedup ----

const hour = time.Hour

type dedupStep struct {
	op    string // claim, confirm, release
	owner string // "" is owner a
	keys  []int  // indexes into the case's keys
	want  []campaigns.ClaimState
}

func runDedup(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()
	C, D, H := campaigns.Claimed, campaigns.Duplicate, campaigns.Held
	keys := []campaigns.DedupKey{
		{Scope: "f:welcome", User: 1, Channel: "email"},
		{Scope: "f:welcome", User: 2, Channel: "email"},
		{Scope: "f:welcome", User: 3, Channel: "email"},
		{Scope: "f:welcome", User: 1, Channel: "sms"},
		{Scope: "k:order-9", User: 1, Channel: "email"},
		{Scope: "f:welcome", User: 1<<64 - 1, Channel: "email"},
	}
	cases := []struct {
		name  string
		steps []dedupStep
	}{
		{"new key is claimed", []dedupStep{{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}}}},
		{"live lease is held", []dedupStep{
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}},
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{H}},
			{op: "claim", owner: "b", keys: []int{0}, want: []campaigns.ClaimState{H}},
		}},
		{"confirmed is duplicate", []dedupStep{
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}},
			{op: "confirm", keys: []int{0}},
			{op: "claim", owner: "b", keys: []int{0}, want: []campaigns.ClaimState{D}},
		}},
		{"confirm without claim is duplicate", []dedupStep{
			{op: "confirm", keys: []int{1}},
			{op: "claim", keys: []int{1}, want: []campaigns.ClaimState{D}},
		}},
		{"released lease can be claimed again", []dedupStep{
			{op: "claim", keys: []int{0, 1}, want: []campaigns.ClaimState{C, C}},
			{op: "release", keys: []int{0, 1}},
			{op: "claim", owner: "b", keys: []int{0, 1}, want: []campaigns.ClaimState{C, C}},
		}},
		{"release keeps confirmed records", []dedupStep{
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}},
			{op: "confirm", keys: []int{0}},
			{op: "release", keys: []int{0}},
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{D}},
		}},
		{"another owner cannot release a lease", []dedupStep{
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}},
			{op: "release", owner: "b", keys: []int{0}},
			{op: "claim", owner: "b", keys: []int{0}, want: []campaigns.ClaimState{H}},
		}},
		{"mixed batch answers in order", []dedupStep{
			{op: "claim", keys: []int{0, 1}, want: []campaigns.ClaimState{C, C}},
			{op: "confirm", keys: []int{0}},
			{op: "claim", keys: []int{0, 1, 2}, want: []campaigns.ClaimState{D, H, C}},
		}},
		{"same key twice in one batch", []dedupStep{
			{op: "claim", keys: []int{2, 2}, want: []campaigns.ClaimState{C, H}},
		}},
		{"channel, scope and user are separate records", []dedupStep{
			{op: "claim", keys: []int{0}, want: []campaigns.ClaimState{C}},
			{op: "confirm", keys: []int{0}},
			{op: "claim", keys: []int{3, 4, 1, 5}, want: []campaigns.ClaimState{C, C, C, C}},
		}},
		{"empty batch", []dedupStep{{op: "claim", keys: []int{}, want: []campaigns.ClaimState{}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			impl := newImpl(t)
			owners := map[string]campaigns.DedupLog{"": impl.Dedup("a"), "b": impl.Dedup("b")}
			for i, st := range tc.steps {
				var ks []campaigns.DedupKey
				for _, k := range st.keys {
					ks = append(ks, keys[k])
				}
				d := owners[st.owner]
				switch st.op {
				case "claim":
					got, err := d.Claim(ctx, ks, hour, 2*hour)
					must(t, err)
					if len(got) != len(st.want) || !slices.Equal(got, st.want) {
						t.Fatalf("step %d: claim = %v, want %v", i, got, st.want)
					}
				case "confirm":
					must(t, d.Confirm(ctx, ks, 2*hour))
				case "release":
					must(t, d.Release(ctx, ks))
				}
			}
		})
	}

	t.Run("expired lease is in doubt", func(t *testing.T) {
		impl := newImpl(t)
		a, b := impl.Dedup("a"), impl.Dedup("b")
		k := keys[:1]
		got, err := a.Claim(ctx, k, impl.Lease, hour)
		must(t, err)
		if got[0] != campaigns.Claimed {
			t.Fatalf("first claim = %v", got[0])
		}
		st := eventually(t, impl, impl.Lease, func() (campaigns.ClaimState, bool) {
			got, err := b.Claim(ctx, k, hour, 2*hour)
			must(t, err)
			return got[0], got[0] != campaigns.Held
		})
		if st != campaigns.InDoubt {
			t.Fatalf("claim after the lease ran out = %v, want in_doubt", st)
		}
		// The in-doubt claimer now holds a fresh lease of its own.
		got, err = a.Claim(ctx, k, hour, 2*hour)
		must(t, err)
		if got[0] != campaigns.Held {
			t.Fatalf("claim during the in-doubt re-send = %v, want held", got[0])
		}
		must(t, b.Confirm(ctx, k, hour))
		got, err = a.Claim(ctx, k, hour, 2*hour)
		must(t, err)
		if got[0] != campaigns.Duplicate {
			t.Fatalf("claim after the confirm = %v, want duplicate", got[0])
		}
	})

	t.Run("confirmed record expires with its window", func(t *testing.T) {
		impl := newImpl(t)
		d := impl.Dedup("a")
		k := keys[1:2]
		_, err := d.Claim(ctx, k, impl.Lease, impl.Lease)
		must(t, err)
		must(t, d.Confirm(ctx, k, impl.Lease))
		st := eventually(t, impl, impl.Lease, func() (campaigns.ClaimState, bool) {
			got, err := d.Claim(ctx, k, hour, 2*hour)
			must(t, err)
			return got[0], got[0] != campaigns.Duplicate
		})
		if st != campaigns.Claimed {
			t.Fatalf("claim after the window = %v, want claimed", st)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		impl := newImpl(t)
		d := impl.Dedup("a")
		for _, tc := range []struct {
			name          string
			lease, window time.Duration
		}{
			{"zero lease", 0, hour},
			{"negative lease", -time.Second, hour},
			{"window shorter than lease", hour, time.Minute},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := d.Claim(ctx, keys[:1], tc.lease, tc.window); err == nil {
					t.Fatal("no error")
				}
			})
		}
		if err := d.Confirm(ctx, keys[:1], 0); err == nil {
			t.Fatal("confirm with zero window: no error")
		}
		// Nothing was written by the rejected calls.
		got, err := d.Claim(ctx, keys[:1], hour, hour)
		must(t, err)
		if got[0] != campaigns.Claimed {
			t.Fatalf("claim after rejected calls = %v", got[0])
		}
	})

	t.Run("large batch", func(t *testing.T) {
		impl := newImpl(t)
		d := impl.Dedup("a")
		ks := make([]campaigns.DedupKey, 2500)
		for i := range ks {
			ks[i] = campaigns.DedupKey{Scope: "f:big", User: uint64(i) * 7919, Channel: "fcm"}
		}
		got, err := d.Claim(ctx, ks, hour, hour)
		must(t, err)
		for i, s := range got {
			if s != campaigns.Claimed {
				t.Fatalf("key %d = %v", i, s)
			}
		}
		must(t, d.Confirm(ctx, ks, hour))
		got, err = d.Claim(ctx, ks, hour, hour)
		must(t, err)
		for i, s := range got {
			if s != campaigns.Duplicate {
				t.Fatalf("key %d after confirm = %v", i, s)
			}
		}
	})

	t.Run("concurrent claimers get each key once", func(t *testing.T) {
		impl := newImpl(t)
		ks := make([]campaigns.DedupKey, 300)
		for i := range ks {
			ks[i] = campaigns.DedupKey{Scope: "t:race", User: uint64(i), Channel: "apns"}
		}
		const owners = 4
		results := make([][]campaigns.ClaimState, owners)
		errs := make([]error, owners)
		var wg sync.WaitGroup
		for o := range owners {
			wg.Go(func() {
				d := impl.Dedup(fmt.Sprintf("owner-%d", o))
				// Each owner claims in small batches so the calls interleave.
				for start := 0; start < len(ks); start += 25 {
					got, err := d.Claim(ctx, ks[start:start+25], hour, hour)
					if err != nil {
						errs[o] = err
						return
					}
					results[o] = append(results[o], got...)
				}
			})
		}
		wg.Wait()
		for i := range ks {
			claimed := 0
			for o := range owners {
				must(t, errs[o])
				if results[o][i] == campaigns.Claimed {
					claimed++
				}
			}
			if claimed != 1 {
				t.Fatalf("key %d claimed %d times", i, claimed)
			}
		}
	})
}

// ---- campaign progress ----

func bitmapOf(n int, positions ...int) campaigns.Bitmap {
	b := campaigns.NewBitmap(n)
	for _, p := range positions {
		b.Set(p)
	}
	return b
}

func runProgress(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()

	t.Run("fresh acquire", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "daemon-a", hour)
		must(t, err)
		if r.Lease.Token <= 0 || r.Lease.Owner != "daemon-a" || r.Lease.Campaign != "c1" {
			t.Fatalf("lease = %+v", r.Lease)
		}
		if r.Checkpoint.Valid || r.HasClaimed || len(r.Open) != 0 {
			t.Fatalf("fresh resume = %+v", r)
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		if p.Owner != "daemon-a" {
			t.Fatalf("progress owner = %q", p.Owner)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		impl := newImpl(t)
		for _, tc := range []struct {
			name, campaign, owner string
			ttl                   time.Duration
		}{
			{"no campaign", "", "a", hour},
			{"no owner", "c", "", hour},
			{"no ttl", "c", "a", 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := impl.Progress.Acquire(ctx, tc.campaign, tc.owner, tc.ttl); err == nil {
					t.Fatal("no error")
				}
			})
		}
	})

	t.Run("one owner at a time", func(t *testing.T) {
		impl := newImpl(t)
		a, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		_, err = impl.Progress.Acquire(ctx, "c1", "b", hour)
		wantErr(t, err, campaigns.ErrHeld)
		// Another campaign is independent.
		_, err = impl.Progress.Acquire(ctx, "c2", "b", hour)
		must(t, err)
		must(t, impl.Progress.Renew(ctx, a.Lease, hour))
		must(t, impl.Progress.Release(ctx, a.Lease))
		b, err := impl.Progress.Acquire(ctx, "c1", "b", hour)
		must(t, err)
		if b.Lease.Token <= a.Lease.Token {
			t.Fatalf("token did not grow: %d then %d", a.Lease.Token, b.Lease.Token)
		}
		_, err = impl.Progress.ClaimBatch(ctx, a.Lease, 1, 10, 10)
		wantErr(t, err, campaigns.ErrLeaseLost)
		wantErr(t, impl.Progress.Renew(ctx, a.Lease, hour), campaigns.ErrLeaseLost)
		// Releasing a lease already lost is harmless and does not free b's.
		must(t, impl.Progress.Release(ctx, a.Lease))
		_, err = impl.Progress.Acquire(ctx, "c1", "c", hour)
		wantErr(t, err, campaigns.ErrHeld)
	})

	t.Run("a lease that ran out with nobody taking over is renewed", func(t *testing.T) {
		impl := newImpl(t)
		a, err := impl.Progress.Acquire(ctx, "c1", "a", impl.Lease)
		must(t, err)
		// The state store was away for longer than the lease: it ran out.
		eventually(t, impl, impl.Lease, func() (string, bool) {
			p, err := impl.Progress.Progress(ctx, "c1")
			must(t, err)
			return p.Owner, p.Owner == ""
		})
		must(t, impl.Progress.Renew(ctx, a.Lease, hour))
		_, err = impl.Progress.ClaimBatch(ctx, a.Lease, 1, 10, 10)
		must(t, err)
		// A released lease is not taken back.
		must(t, impl.Progress.Release(ctx, a.Lease))
		wantErr(t, impl.Progress.Renew(ctx, a.Lease, hour), campaigns.ErrLeaseLost)
	})

	t.Run("expired lease is taken over and fenced", func(t *testing.T) {
		impl := newImpl(t)
		a, err := impl.Progress.Acquire(ctx, "c1", "a", impl.Lease)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, a.Lease, 1, 10, 10)
		must(t, err)
		b := eventually(t, impl, impl.Lease, func() (campaigns.Resume, bool) {
			r, err := impl.Progress.Acquire(ctx, "c1", "b", hour)
			if errors.Is(err, campaigns.ErrHeld) {
				return r, false
			}
			must(t, err)
			return r, true
		})
		if b.Lease.Token <= a.Lease.Token {
			t.Fatalf("token did not grow: %d then %d", a.Lease.Token, b.Lease.Token)
		}
		_, err = impl.Progress.ReportBatch(ctx, a.Lease, campaigns.BatchReport{Seq: seq, Final: true})
		wantErr(t, err, campaigns.ErrLeaseLost)
		wantErr(t, impl.Progress.Renew(ctx, a.Lease, hour), campaigns.ErrLeaseLost)
		wantErr(t, impl.Progress.MarkRetried(ctx, a.Lease, campaigns.RetryReport{}), campaigns.ErrLeaseLost)
		if len(b.Open) != 1 || b.Open[0].Seq != seq || b.Open[0].Token != a.Lease.Token {
			t.Fatalf("open batches = %+v", b.Open)
		}
	})

	t.Run("same owner re-acquiring fences its earlier incarnation", func(t *testing.T) {
		impl := newImpl(t)
		old, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		cur, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		_, err = impl.Progress.ClaimBatch(ctx, old.Lease, 1, 2, 2)
		wantErr(t, err, campaigns.ErrLeaseLost)
		_, err = impl.Progress.ClaimBatch(ctx, cur.Lease, 1, 2, 2)
		must(t, err)
	})

	t.Run("checkpoint advances over out-of-order completion", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		l := r.Lease
		ranges := [][2]uint64{{5, 100}, {101, 200}, {201, 1<<64 - 1}}
		seqs := make([]int64, len(ranges))
		for i, rg := range ranges {
			seqs[i], err = impl.Progress.ClaimBatch(ctx, l, rg[0], rg[1], 4)
			must(t, err)
		}
		steps := []struct {
			name string
			seq  int64
			want campaigns.Checkpoint
		}{
			{"last batch first: nothing before it is final", seqs[2], campaigns.Checkpoint{}},
			{"first batch: cursor covers it alone", seqs[0], campaigns.Checkpoint{Seq: seqs[0], Key: 100, Valid: true}},
			{"middle batch: cursor jumps over the already final last", seqs[1], campaigns.Checkpoint{Seq: seqs[2], Key: 1<<64 - 1, Valid: true}},
		}
		for _, st := range steps {
			cp, err := impl.Progress.ReportBatch(ctx, l, campaigns.BatchReport{Seq: st.seq, Done: bitmapOf(4, 0, 1, 2, 3), Final: true})
			must(t, err)
			if cp != st.want {
				t.Fatalf("%s: checkpoint = %+v, want %+v", st.name, cp, st.want)
			}
		}
		// Batches at or below the cursor are gone: memory is O(open batches).
		r2, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		if len(r2.Open) != 0 || r2.Checkpoint != steps[2].want || !r2.HasClaimed || r2.LastClaimed != 1<<64-1 {
			t.Fatalf("resume after completion = %+v", r2)
		}
		_, err = impl.Progress.ReportBatch(ctx, r2.Lease, campaigns.BatchReport{Seq: seqs[0], Final: true})
		wantErr(t, err, campaigns.ErrBatchFinal)
	})

	t.Run("batch ranges must ascend", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		_, err = impl.Progress.ClaimBatch(ctx, r.Lease, 100, 200, 10)
		must(t, err)
		for _, tc := range []struct {
			name        string
			first, last uint64
			target      error
		}{
			{"overlapping", 200, 300, campaigns.ErrBatchOrder},
			{"before", 1, 50, campaigns.ErrBatchOrder},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := impl.Progress.ClaimBatch(ctx, r.Lease, tc.first, tc.last, 10)
				wantErr(t, err, tc.target)
			})
		}
		if _, err := impl.Progress.ClaimBatch(ctx, r.Lease, 300, 250, 10); err == nil {
			t.Fatal("inverted range: no error")
		}
		if _, err := impl.Progress.ClaimBatch(ctx, r.Lease, 201, 201, 1); err != nil {
			t.Fatalf("adjacent range: %v", err)
		}
	})

	t.Run("crash and resume", func(t *testing.T) {
		impl := newImpl(t)
		a, err := impl.Progress.Acquire(ctx, "c1", "a", impl.Lease)
		must(t, err)
		l := a.Lease
		s1, err := impl.Progress.ClaimBatch(ctx, l, 10, 19, 12)
		must(t, err)
		s2, err := impl.Progress.ClaimBatch(ctx, l, 20, 29, 8)
		must(t, err)
		s3, err := impl.Progress.ClaimBatch(ctx, l, 30, 39, 4)
		must(t, err)
		// Batch 1: everything dispatched, some confirmed, one skipped with a
		// reason; reported in two parts as the pipeline would.
		_, err = impl.Progress.ReportBatch(ctx, l, campaigns.BatchReport{Seq: s1, Dispatched: bitmapOf(12, 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11)})
		must(t, err)
		_, err = impl.Progress.ReportBatch(ctx, l, campaigns.BatchReport{
			Seq: s1, Confirmed: bitmapOf(12, 0, 1, 2), Done: bitmapOf(12, 0, 1, 2, 5),
			Counts: []campaigns.Count{{Channel: "email", Reason: "sent", N: 3}, {Channel: "email", Reason: "no_consent", N: 1}},
		})
		must(t, err)
		_, err = impl.Progress.ReportBatch(ctx, l, campaigns.BatchReport{Seq: s2, Dispatched: bitmapOf(8, 0), Confirmed: bitmapOf(8, 0), Done: bitmapOf(8, 0, 1, 2, 3, 4, 5, 6, 7), Final: true,
			Counts: []campaigns.Count{{Channel: "email", Reason: "sent", N: 1}}})
		must(t, err)
		// "kill -9": no release. Another daemon waits the lease out.
		b := eventually(t, impl, impl.Lease, func() (campaigns.Resume, bool) {
			r, err := impl.Progress.Acquire(ctx, "c1", "b", hour)
			if errors.Is(err, campaigns.ErrHeld) {
				return r, false
			}
			must(t, err)
			return r, true
		})
		if b.Checkpoint.Valid || !b.HasClaimed || b.LastClaimed != 39 || len(b.Open) != 3 {
			t.Fatalf("resume = %+v", b)
		}
		o1, o2, o3 := b.Open[0], b.Open[1], b.Open[2]
		if o1.Seq != s1 || o1.First != 10 || o1.Last != 19 || o1.Slots != 12 || o1.Final || o1.Token != l.Token {
			t.Fatalf("batch 1 = %+v", o1)
		}
		if o2.Seq != s2 || !o2.Final || o3.Seq != s3 || o3.Final {
			t.Fatalf("batches 2, 3 = %+v, %+v", o2, o3)
		}
		var inDoubt, confirmed []int
		for i := range o1.Slots {
			if o1.InDoubt(i) {
				inDoubt = append(inDoubt, i)
			}
			if o1.Confirmed.Has(i) {
				confirmed = append(confirmed, i)
			}
		}
		if want := []int{3, 4, 6, 7, 8, 9, 10, 11}; !slices.Equal(inDoubt, want) {
			t.Fatalf("batch 1 in doubt = %v, want %v", inDoubt, want)
		}
		if want := []int{0, 1, 2}; !slices.Equal(confirmed, want) {
			t.Fatalf("batch 1 confirmed = %v, want %v", confirmed, want)
		}
		for i := range o3.Slots {
			if o3.InDoubt(i) || o3.Done.Has(i) {
				t.Fatalf("batch 3 position %d: never dispatched, so neither in doubt nor done", i)
			}
		}
		// The new owner finishes batch 1: the cursor passes batches 1 and 2.
		cp, err := impl.Progress.ReportBatch(ctx, b.Lease, campaigns.BatchReport{Seq: s1, Done: bitmapOf(12, 3, 4, 6, 7, 8, 9, 10, 11), Final: true,
			Counts: []campaigns.Count{{Channel: "email", Reason: "in_doubt", N: 8}}})
		must(t, err)
		if want := (campaigns.Checkpoint{Seq: s2, Key: 29, Valid: true}); cp != want {
			t.Fatalf("checkpoint = %+v, want %+v", cp, want)
		}
		s4, err := impl.Progress.ClaimBatch(ctx, b.Lease, 40, 49, 2)
		must(t, err)
		for _, s := range []int64{s4, s3} {
			cp, err = impl.Progress.ReportBatch(ctx, b.Lease, campaigns.BatchReport{Seq: s, Final: true})
			must(t, err)
		}
		if want := (campaigns.Checkpoint{Seq: s4, Key: 49, Valid: true}); cp != want {
			t.Fatalf("final checkpoint = %+v, want %+v", cp, want)
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		wantCounts := []campaigns.Count{{Channel: "email", Reason: "in_doubt", N: 8}, {Channel: "email", Reason: "no_consent", N: 1}, {Channel: "email", Reason: "sent", N: 4}}
		if !slices.Equal(p.Counts, wantCounts) || p.Checkpoint != cp || p.Owner != "b" {
			t.Fatalf("progress = %+v, want counts %v", p, wantCounts)
		}
	})

	t.Run("report errors", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 9)
		must(t, err)
		count := []campaigns.Count{{Channel: "sms", Reason: "sent", N: 5}}
		_, err = impl.Progress.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Counts: count, Final: true})
		must(t, err)
		open, err := impl.Progress.ClaimBatch(ctx, r.Lease, 11, 20, 9)
		must(t, err)
		for _, tc := range []struct {
			name   string
			report campaigns.BatchReport
			target error
		}{
			{"unknown batch", campaigns.BatchReport{Seq: open + 5, Counts: count}, campaigns.ErrUnknownBatch},
			{"final batch reported again", campaigns.BatchReport{Seq: seq, Counts: count, Final: true}, campaigns.ErrBatchFinal},
			{"bitmap longer than the batch", campaigns.BatchReport{Seq: open, Done: campaigns.NewBitmap(17), Counts: count}, nil},
			{"channel with a colon", campaigns.BatchReport{Seq: open, Counts: []campaigns.Count{{Channel: "a:b", Reason: "sent", N: 1}}}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := impl.Progress.ReportBatch(ctx, r.Lease, tc.report)
				if err == nil {
					t.Fatal("no error")
				}
				if tc.target != nil {
					wantErr(t, err, tc.target)
				}
			})
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		if !slices.Equal(p.Counts, count) {
			t.Fatalf("rejected reports changed counts: %v", p.Counts)
		}
	})

	t.Run("retry failed", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 1<<64-1, 6)
		must(t, err)
		failures := []campaigns.Failure{
			{User: 5, Channel: "sms", Reason: "rate_limited"},
			{User: 1, Channel: "email", Reason: "unavailable"},
			{User: 1<<64 - 1, Channel: "webhook", Reason: "network"},
			{User: 1, Channel: "apns", Reason: "unavailable"},
			{User: 3, Channel: "fcm", Reason: "unavailable"},
		}
		_, err = impl.Progress.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Failures: failures, Final: true,
			Counts: []campaigns.Count{{Channel: "email", Reason: "unavailable", N: 1}}})
		must(t, err)
		list := func() []campaigns.Failure {
			var all []campaigns.Failure
			cursor := ""
			for range 10 {
				page, next, err := impl.Progress.Failures(ctx, "c1", cursor, 2)
				must(t, err)
				if len(page) > 2 {
					t.Fatalf("page of %d with limit 2", len(page))
				}
				all = append(all, page...)
				if next == "" {
					return all
				}
				cursor = next
			}
			t.Fatal("paging did not end")
			return nil
		}
		want := []campaigns.Failure{failures[3], failures[1], failures[4], failures[0], failures[2]}
		if got := list(); !slices.Equal(got, want) {
			t.Fatalf("failures = %v, want %v", got, want)
		}
		// Retry two: one is sent, one fails again with another reason.
		must(t, impl.Progress.MarkRetried(ctx, r.Lease, campaigns.RetryReport{
			Retried:  []campaigns.Failure{failures[1], failures[4]},
			Failures: []campaigns.Failure{{User: 3, Channel: "fcm", Reason: "rate_limited"}},
			Counts:   []campaigns.Count{{Channel: "email", Reason: "unavailable", N: -1}, {Channel: "email", Reason: "sent", N: 1}},
		}))
		want = []campaigns.Failure{failures[3], {User: 3, Channel: "fcm", Reason: "rate_limited"}, failures[0], failures[2]}
		if got := list(); !slices.Equal(got, want) {
			t.Fatalf("failures after retry = %v, want %v", got, want)
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		wantCounts := []campaigns.Count{{Channel: "email", Reason: "sent", N: 1}, {Channel: "email", Reason: "unavailable", N: 0}}
		if p.Failures != 4 || !slices.Equal(p.Counts, wantCounts) {
			t.Fatalf("progress = %+v", p)
		}
		if _, _, err := impl.Progress.Failures(ctx, "c1", "", 0); err == nil {
			t.Fatal("zero limit: no error")
		}
		page, next, err := impl.Progress.Failures(ctx, "unknown", "", 10)
		if err != nil || len(page) != 0 || next != "" {
			t.Fatalf("unknown campaign: %v %q %v", page, next, err)
		}
	})
}

// runLedger pins down Record (the delivery ledger's flush), the idempotent
// claim, per-address failures and the crash counter.
func runLedger(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()

	t.Run("a flush replaces the bytes from its base and lands once", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 40) // 5 bytes
		must(t, err)
		sent := []campaigns.Count{{Channel: "sms", Reason: "sent", N: 3}}
		f1 := campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Base: 2,
			Dispatched: campaigns.Bitmap{0xf0, 0x01}, Confirmed: campaigns.Bitmap{0xe0, 0x00}, Done: campaigns.Bitmap{0xe0, 0x00},
			Counts: sent, Failures: []campaigns.Failure{{User: 4, Channel: "apns", Address: 1, Reason: "retries_exhausted"}}}}}
		for range 3 { // the first lands; the replays (a lost reply) change nothing
			if _, err := impl.Progress.Record(ctx, r.Lease, f1); err != nil {
				t.Fatal(err)
			}
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		if !slices.Equal(p.Counts, sent) || p.Failures != 1 {
			t.Fatalf("after a replayed flush: %+v", p)
		}
		// The next flush sends the merged bytes of its range: it replaces them.
		f2 := campaigns.Flush{ID: 2, Reports: []campaigns.BatchReport{{Seq: seq, Base: 3,
			Dispatched: campaigns.Bitmap{0x03}, Confirmed: campaigns.Bitmap{0x00}, Done: campaigns.Bitmap{0x02}}}}
		_, err = impl.Progress.Record(ctx, r.Lease, f2)
		must(t, err)
		// A new owner sees exactly what the flushes left.
		res := eventually(t, impl, 0, func() (campaigns.Resume, bool) {
			res, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
			return res, err == nil
		})
		if len(res.Open) != 1 {
			t.Fatalf("open = %+v", res.Open)
		}
		b := res.Open[0]
		if !bytes.Equal(b.Dispatched, campaigns.Bitmap{0, 0, 0xf0, 0x03, 0}) || !bytes.Equal(b.Confirmed, campaigns.Bitmap{0, 0, 0xe0, 0, 0}) ||
			!bytes.Equal(b.Done, campaigns.Bitmap{0, 0, 0xe0, 0x02, 0}) {
			t.Fatalf("bitmaps d=%x c=%x f=%x", b.Dispatched, b.Confirmed, b.Done)
		}
		if !b.InDoubt(19) || b.InDoubt(16) || !b.InDoubt(31) || b.InDoubt(30) || b.InDoubt(20) {
			t.Fatalf("in doubt wrong: d=%x f=%x", b.Dispatched, b.Done)
		}
		// A flush ID from the earlier lease is not a replay under the new one.
		_, err = impl.Progress.Record(ctx, res.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Counts: sent, Final: true}}})
		must(t, err)
		p, err = impl.Progress.Progress(ctx, "c1")
		must(t, err)
		if !slices.Equal(p.Counts, []campaigns.Count{{Channel: "sms", Reason: "sent", N: 6}}) || !p.Checkpoint.Valid || p.Checkpoint.Key != 10 {
			t.Fatalf("after the final flush of the new lease: %+v", p)
		}
	})

	t.Run("counts are kept per A/B variant", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "ab", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq,
			Counts: []campaigns.Count{
				{Channel: "sms", Reason: "sent", Variant: "A", N: 3}, {Channel: "sms", Reason: "sent", Variant: "B", N: 2},
				{Channel: "sms", Reason: "holdout", Variant: "holdout", N: 1}, {Channel: "sms", Reason: "sent", N: 7},
				{Channel: "sms", Reason: "retries_exhausted", Variant: "B", N: 1},
			},
			Failures: []campaigns.Failure{{User: 4, Channel: "sms", Reason: "retries_exhausted"}}, Final: true}}})
		must(t, err)
		must(t, impl.Progress.MarkRetried(ctx, r.Lease, campaigns.RetryReport{
			Retried: []campaigns.Failure{{User: 4, Channel: "sms", Reason: "retries_exhausted"}},
			Counts:  []campaigns.Count{{Channel: "sms", Reason: "retries_exhausted", Variant: "B", N: -1}, {Channel: "sms", Reason: "sent", Variant: "B", N: 1}},
		}))
		p, err := impl.Progress.Progress(ctx, "ab")
		must(t, err)
		want := []campaigns.Count{
			{Channel: "sms", Reason: "holdout", Variant: "holdout", N: 1},
			{Channel: "sms", Reason: "retries_exhausted", Variant: "B", N: 0},
			{Channel: "sms", Reason: "sent", N: 7},
			{Channel: "sms", Reason: "sent", Variant: "A", N: 3},
			{Channel: "sms", Reason: "sent", Variant: "B", N: 3},
		}
		if !slices.Equal(p.Counts, want) {
			t.Fatalf("counts %+v, want %+v", p.Counts, want)
		}
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 2, Reports: []campaigns.BatchReport{{Seq: seq,
			Counts: []campaigns.Count{{Channel: "sms", Reason: "sent", Variant: "A:1", N: 1}}}}})
		if err == nil {
			t.Fatal("a variant with the field separator ':' was accepted")
		}
	})

	t.Run("a refused flush changes nothing", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		a, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		count := []campaigns.Count{{Channel: "sms", Reason: "sent", N: 1}}
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{
			{Seq: a, Done: campaigns.Bitmap{0xff}, Counts: count},
			{Seq: a + 7, Counts: count},
		}})
		wantErr(t, err, campaigns.ErrUnknownBatch)
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 2, Reports: []campaigns.BatchReport{{Seq: a, Base: 1, Done: campaigns.Bitmap{0xff}}}})
		if err == nil {
			t.Fatal("bitmap past the batch's slots: no error")
		}
		p, err := impl.Progress.Progress(ctx, "c1")
		must(t, err)
		if len(p.Counts) != 0 {
			t.Fatalf("refused flushes changed counts: %v", p.Counts)
		}
		// Growing the batch (a redriven batch laid out again) makes room.
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 3, Reports: []campaigns.BatchReport{{Seq: a, Slots: 16, Base: 1, Done: campaigns.Bitmap{0xff}}}})
		must(t, err)
	})

	t.Run("a lost lease is refused", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		r2, err := impl.Progress.Acquire(ctx, "c1", "a", hour) // a restart with the same owner
		must(t, err)
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 9, Reports: []campaigns.BatchReport{{Seq: seq, Done: campaigns.Bitmap{1}}}})
		wantErr(t, err, campaigns.ErrLeaseLost)
		_, err = impl.Progress.Record(ctx, r2.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Done: campaigns.Bitmap{1}}}})
		must(t, err)
	})

	t.Run("a claim retried after a lost reply gets the same batch", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		s1, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		s2, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		if s1 != s2 {
			t.Fatalf("retried claim: seq %d, then %d", s1, s2)
		}
		_, err = impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 9) // not the same batch
		wantErr(t, err, campaigns.ErrBatchOrder)
		s3, err := impl.Progress.ClaimBatch(ctx, r.Lease, 11, 20, 8)
		must(t, err)
		if s3 != s1+1 {
			t.Fatalf("next claim: seq %d, want %d", s3, s1+1)
		}
	})

	t.Run("failures are kept per address", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1", "a", hour)
		must(t, err)
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		fs := []campaigns.Failure{
			{User: 7, Channel: "apns", Address: 1, Reason: "retries_exhausted"},
			{User: 7, Channel: "apns", Address: 0, Reason: "retries_exhausted"},
			{User: 7, Channel: "apns", Address: 1, Reason: "unavailable"}, // replaces the first
		}
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Failures: fs}}})
		must(t, err)
		page, _, err := impl.Progress.Failures(ctx, "c1", "", 10)
		must(t, err)
		want := []campaigns.Failure{fs[1], fs[2]}
		if !slices.Equal(page, want) {
			t.Fatalf("failures = %v, want %v", page, want)
		}
		page, next, err := impl.Progress.Failures(ctx, "c1", "", 1)
		must(t, err)
		rest, _, err := impl.Progress.Failures(ctx, "c1", next, 1)
		must(t, err)
		if !slices.Equal(append(page, rest...), want) {
			t.Fatalf("paged failures = %v %v, want %v", page, rest, want)
		}
		must(t, impl.Progress.MarkRetried(ctx, r.Lease, campaigns.RetryReport{Retried: []campaigns.Failure{fs[2]}}))
		page, _, err = impl.Progress.Failures(ctx, "c1", "", 10)
		must(t, err)
		if !slices.Equal(page, []campaigns.Failure{fs[1]}) {
			t.Fatalf("after retrying address 1: %v", page)
		}
	})

	t.Run("a completed part is reopened for a retry pass", func(t *testing.T) {
		impl := newImpl(t)
		r, err := impl.Progress.Acquire(ctx, "c1/s1", "a", hour)
		must(t, err)
		must(t, impl.Progress.Complete(ctx, r.Lease))
		p, err := impl.Progress.Progress(ctx, "c1/s1")
		must(t, err)
		if !p.Completed || p.Retry || p.Owner != "" {
			t.Fatalf("after Complete: %+v", p)
		}
		must(t, impl.Progress.Reopen(ctx, "c1/s1"))
		if p, _ = impl.Progress.Progress(ctx, "c1/s1"); p.Completed || !p.Retry {
			t.Fatalf("after Reopen: %+v", p)
		}
		r, err = impl.Progress.Acquire(ctx, "c1/s1", "b", hour)
		must(t, err)
		must(t, impl.Progress.Complete(ctx, r.Lease))
		if p, _ = impl.Progress.Progress(ctx, "c1/s1"); !p.Completed || p.Retry {
			t.Fatalf("after the retry pass: %+v", p)
		}
		wantErr(t, impl.Progress.Complete(ctx, r.Lease), campaigns.ErrLeaseLost)
	})

	t.Run("runs that die holding the lease are counted until progress", func(t *testing.T) {
		impl := newImpl(t)
		acquire := func() campaigns.Resume {
			t.Helper()
			r, err := impl.Progress.Acquire(ctx, "c1", "a", hour) // same owner: no wait
			must(t, err)
			return r
		}
		if r := acquire(); r.Crashes != 0 {
			t.Fatalf("first run: crashes %d", r.Crashes)
		}
		r := acquire() // the first died
		r = acquire()  // so did the second
		if r.Crashes != 2 {
			t.Fatalf("third run: crashes %d, want 2", r.Crashes)
		}
		must(t, impl.Progress.Release(ctx, r.Lease)) // a clean stop is not a crash
		if r = acquire(); r.Crashes != 2 {
			t.Fatalf("after a clean stop: crashes %d, want 2", r.Crashes)
		}
		seq, err := impl.Progress.ClaimBatch(ctx, r.Lease, 1, 10, 8)
		must(t, err)
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Final: true}}})
		must(t, err)
		// Only the deaths since the run that moved the checkpoint count.
		if r = acquire(); r.Crashes != 1 {
			t.Fatalf("after the checkpoint moved and a crash: crashes %d, want 1", r.Crashes)
		}
		r = acquire()
		if r.Crashes != 2 {
			t.Fatalf("crashes %d, want 2", r.Crashes)
		}
		must(t, impl.Progress.Renew(ctx, r.Lease, hour)) // alive, but wedged: still counts
		seq, err = impl.Progress.ClaimBatch(ctx, r.Lease, 11, 20, 8)
		must(t, err)
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: seq, Dispatched: campaigns.Bitmap{1}}}})
		must(t, err)
		if r = acquire(); r.Crashes != 3 {
			t.Fatalf("after a renewal, a flush without progress and a crash: crashes %d, want 3", r.Crashes)
		}
		_, err = impl.Progress.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Progress: true, Reports: []campaigns.BatchReport{{Seq: seq, Confirmed: campaigns.Bitmap{1}}}})
		must(t, err)
		if r = acquire(); r.Crashes != 1 {
			t.Fatalf("after a flush with progress and a crash: crashes %d, want 1", r.Crashes)
		}
	})
}

// ---- campaign records ----

func runCampaigns(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()

	t.Run("create is idempotent on id", func(t *testing.T) {
		impl := newImpl(t)
		first, created, err := impl.Campaigns.Create(ctx, "spring", []byte(`{"segment": "all", "channels": ["email"]}`))
		must(t, err)
		if !created || first.Status != campaigns.StatusScheduled || first.Created.IsZero() || !first.Updated.Equal(first.Created) {
			t.Fatalf("created record = %+v, created=%v", first, created)
		}
		if want := `{"segment":"all","channels":["email"]}`; string(first.Definition) != want {
			t.Fatalf("definition = %s, want %s", first.Definition, want)
		}
		for _, tc := range []struct {
			name        string
			id, def     string
			wantCreated bool
			target      error // nil: success; errAny: some error
		}{
			{"same definition", "spring", `{"segment": "all", "channels": ["email"]}`, false, nil},
			{"same definition, other whitespace", "spring", "{\n\"segment\":\"all\",\"channels\":[\"email\"]}", false, nil},
			{"different definition", "spring", `{"segment":"vip","channels":["email"]}`, false, campaigns.ErrConflict},
			{"another id", "summer", `{"segment":"vip"}`, true, nil},
			{"malformed json", "autumn", `{"segment":`, false, errAny},
			{"empty id", "", `{}`, false, errAny},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rec, created, err := impl.Campaigns.Create(ctx, tc.id, []byte(tc.def))
				switch {
				case tc.target == errAny:
					if err == nil {
						t.Fatal("no error")
					}
					return
				case tc.target != nil:
					wantErr(t, err, tc.target)
					return
				}
				must(t, err)
				if created != tc.wantCreated || rec.ID != tc.id {
					t.Fatalf("record %+v created=%v", rec, created)
				}
				if !created && (!rec.Created.Equal(first.Created) || !bytes.Equal(rec.Definition, first.Definition)) {
					t.Fatalf("existing record changed: %+v", rec)
				}
			})
		}
		_, err = impl.Campaigns.Get(ctx, "autumn")
		wantErr(t, err, campaigns.ErrNotFound)
		got, err := impl.Campaigns.Get(ctx, "spring")
		must(t, err)
		if got.ID != "spring" || !bytes.Equal(got.Definition, first.Definition) || got.Status != campaigns.StatusScheduled || !got.Created.Equal(first.Created) {
			t.Fatalf("get = %+v", got)
		}
	})

	t.Run("status transitions", func(t *testing.T) {
		impl := newImpl(t)
		_, _, err := impl.Campaigns.Create(ctx, "c", []byte(`{}`))
		must(t, err)
		S, R, P, Co, Ca, F := campaigns.StatusScheduled, campaigns.StatusRunning, campaigns.StatusPaused, campaigns.StatusCompleted, campaigns.StatusCancelled, campaigns.StatusFailed
		for _, tc := range []struct {
			name     string
			from, to campaigns.Status
			target   error
		}{
			{"scheduled to running", S, R, nil},
			{"running to scheduled is invalid", R, S, campaigns.ErrInvalidTransition},
			{"running to paused", R, P, nil},
			{"stale from loses the compare-and-set", R, P, campaigns.ErrStatusChanged},
			{"paused to running", P, R, nil},
			{"running to completed", R, Co, nil},
			{"completed to paused is invalid", Co, P, campaigns.ErrInvalidTransition},
			{"completed to running (retry failed)", Co, R, nil},
			{"running to failed", R, F, nil},
			{"failed to running", F, R, nil},
			{"running to cancelled", R, Ca, nil},
			{"cancelled is final", Ca, R, campaigns.ErrInvalidTransition},
			{"unknown status is invalid", Ca, "exploded", campaigns.ErrInvalidTransition},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before, err := impl.Campaigns.Get(ctx, "c")
				must(t, err)
				rec, err := impl.Campaigns.Transition(ctx, "c", tc.from, tc.to)
				if tc.target != nil {
					wantErr(t, err, tc.target)
					after, err := impl.Campaigns.Get(ctx, "c")
					must(t, err)
					if after.Status != before.Status {
						t.Fatalf("failed transition changed status %q → %q", before.Status, after.Status)
					}
					return
				}
				must(t, err)
				if rec.Status != tc.to || rec.Updated.Before(before.Updated) || string(rec.Definition) != "{}" {
					t.Fatalf("record = %+v", rec)
				}
				after, err := impl.Campaigns.Get(ctx, "c")
				must(t, err)
				if after.Status != tc.to {
					t.Fatalf("stored status = %q", after.Status)
				}
			})
		}
		_, err = impl.Campaigns.Transition(ctx, "missing", S, R)
		wantErr(t, err, campaigns.ErrNotFound)
	})

	t.Run("the ring is pinned once", func(t *testing.T) {
		impl := newImpl(t)
		_, err := impl.Campaigns.PinRing(ctx, "c", "1:3")
		wantErr(t, err, campaigns.ErrNotFound)
		_, _, err = impl.Campaigns.Create(ctx, "c", []byte(`{}`))
		must(t, err)
		for _, try := range []string{"1:3", "2:4"} {
			got, err := impl.Campaigns.PinRing(ctx, "c", try)
			must(t, err)
			if got != "1:3" {
				t.Fatalf("pin %q: got %q, want the first pin 1:3", try, got)
			}
		}
		rec, err := impl.Campaigns.Get(ctx, "c")
		must(t, err)
		if rec.Ring != "1:3" {
			t.Fatalf("record ring %q", rec.Ring)
		}
	})

	t.Run("a transition keeps its reason until the next one", func(t *testing.T) {
		impl := newImpl(t)
		_, _, err := impl.Campaigns.Create(ctx, "c", []byte(`{}`))
		must(t, err)
		_, err = impl.Campaigns.Transition(ctx, "c", campaigns.StatusScheduled, campaigns.StatusRunning)
		must(t, err)
		rec, err := impl.Campaigns.TransitionBecause(ctx, "c", campaigns.StatusRunning, campaigns.StatusFailed, "crash_loop")
		must(t, err)
		if rec.Reason != "crash_loop" {
			t.Fatalf("returned record reason %q", rec.Reason)
		}
		got, err := impl.Campaigns.Get(ctx, "c")
		must(t, err)
		if got.Status != campaigns.StatusFailed || got.Reason != "crash_loop" {
			t.Fatalf("stored %q / %q", got.Status, got.Reason)
		}
		list, err := impl.Campaigns.List(ctx, "", 10)
		must(t, err)
		if len(list) != 1 || list[0].Reason != "crash_loop" {
			t.Fatalf("listed %+v", list)
		}
		_, err = impl.Campaigns.Transition(ctx, "c", campaigns.StatusFailed, campaigns.StatusRunning)
		must(t, err)
		if got, _ = impl.Campaigns.Get(ctx, "c"); got.Reason != "" {
			t.Fatalf("reason %q kept after resuming", got.Reason)
		}
	})

	t.Run("list pages in id order", func(t *testing.T) {
		impl := newImpl(t)
		ids := []string{"d", "a", "c", "e", "b"}
		for _, id := range ids {
			_, _, err := impl.Campaigns.Create(ctx, id, []byte(`{"id":"`+id+`"}`))
			must(t, err)
		}
		var got []string
		after := ""
		for range 10 {
			page, err := impl.Campaigns.List(ctx, after, 2)
			must(t, err)
			for _, r := range page {
				if string(r.Definition) != `{"id":"`+r.ID+`"}` || r.Status != campaigns.StatusScheduled {
					t.Fatalf("listed record %+v", r)
				}
				got = append(got, r.ID)
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].ID
		}
		if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
			t.Fatalf("listed %v, want %v", got, want)
		}
		if _, err := impl.Campaigns.List(ctx, "", 0); err == nil {
			t.Fatal("zero limit: no error")
		}
	})
}

// errAny marks a case that must fail without a specific StateError.
const errAny = campaigns.StateError("any error")

// ---- intake ----

func payloads(es []campaigns.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Payload)
	}
	return out
}

func runIntake(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()

	t.Run("each entry is delivered once, in order", func(t *testing.T) {
		impl := newImpl(t)
		in := []string{"one", "two", "\x00binary\xff"}
		for _, p := range in {
			_, err := impl.Intake.Enqueue(ctx, []byte(p))
			must(t, err)
		}
		first, err := impl.Intake.Read(ctx, "d1", 2, 0)
		must(t, err)
		second, err := impl.Intake.Read(ctx, "d2", 10, 0)
		must(t, err)
		if got := append(payloads(first), payloads(second)...); !slices.Equal(got, in) {
			t.Fatalf("read %q, want %q", got, in)
		}
		empty, err := impl.Intake.Read(ctx, "d1", 10, 0)
		must(t, err)
		if len(empty) != 0 {
			t.Fatalf("read again: %q", payloads(empty))
		}
	})

	t.Run("unacked entries are reclaimed after the idle time", func(t *testing.T) {
		impl := newImpl(t)
		for _, p := range []string{"a", "b", "c"} {
			_, err := impl.Intake.Enqueue(ctx, []byte(p))
			must(t, err)
		}
		got, err := impl.Intake.Read(ctx, "dead", 3, 0)
		must(t, err)
		must(t, impl.Intake.Ack(ctx, got[1].ID)) // "b" was handled before the crash
		fresh, err := impl.Intake.Reclaim(ctx, "alive", hour, 10)
		must(t, err)
		if len(fresh) != 0 {
			t.Fatalf("reclaimed entries that are not idle: %q", payloads(fresh))
		}
		back := eventually(t, impl, impl.Lease, func() ([]campaigns.Entry, bool) {
			es, err := impl.Intake.Reclaim(ctx, "alive", impl.Lease, 10)
			must(t, err)
			return es, len(es) > 0
		})
		if want := []string{"a", "c"}; !slices.Equal(payloads(back), want) || back[0].ID != got[0].ID {
			t.Fatalf("reclaimed %q, want %q", payloads(back), want)
		}
		must(t, impl.Intake.Ack(ctx, back[0].ID, back[1].ID))
		// Everything is acknowledged: nothing is left to reclaim, ever.
		left := eventually(t, impl, impl.Lease, func() ([]campaigns.Entry, bool) {
			es, err := impl.Intake.Reclaim(ctx, "alive", 0, 10)
			must(t, err)
			return es, true
		})
		if len(left) != 0 {
			t.Fatalf("acknowledged entries came back: %q", payloads(left))
		}
	})

	t.Run("blocked read wakes on enqueue", func(t *testing.T) {
		impl := newImpl(t)
		done := make(chan []campaigns.Entry, 1)
		errc := make(chan error, 1)
		go func() {
			es, err := impl.Intake.Read(ctx, "d1", 5, 10*time.Second)
			errc <- err
			done <- es
		}()
		_, err := impl.Intake.Enqueue(ctx, []byte("late"))
		must(t, err)
		must(t, <-errc)
		if got := payloads(<-done); !slices.Equal(got, []string{"late"}) {
			t.Fatalf("blocked read got %q", got)
		}
	})

	t.Run("blocked read honours its context", func(t *testing.T) {
		impl := newImpl(t)
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		es, err := impl.Intake.Read(cctx, "d1", 5, time.Minute)
		if err == nil && len(es) != 0 {
			t.Fatalf("read %q from an empty intake", payloads(es))
		}
		if err == nil {
			t.Fatal("no error after the context ended")
		}
	})

	t.Run("bad input", func(t *testing.T) {
		impl := newImpl(t)
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"read without consumer", func() error { _, err := impl.Intake.Read(ctx, "", 1, 0); return err }},
			{"read zero entries", func() error { _, err := impl.Intake.Read(ctx, "d", 0, 0); return err }},
			{"reclaim without consumer", func() error { _, err := impl.Intake.Reclaim(ctx, "", 0, 1); return err }},
			{"reclaim zero entries", func() error { _, err := impl.Intake.Reclaim(ctx, "d", 0, 0); return err }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.call() == nil {
					t.Fatal("no error")
				}
			})
		}
	})
}

func runDelays(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()
	nowOf := func(impl Impl) time.Time {
		if impl.Now != nil {
			return impl.Now()
		}
		return time.Now()
	}
	ids := func(items []campaigns.Delayed) []string {
		out := make([]string, len(items))
		for i, d := range items {
			out[i] = d.ID
		}
		return out
	}

	t.Run("due items come out earliest first with their payloads", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		now := nowOf(impl)
		must(t, q.Schedule(ctx, []campaigns.Delayed{
			{ID: "b", Due: now.Add(-time.Second), Payload: []byte(`{"n":2}`)},
			{ID: "a", Due: now.Add(-2 * time.Second), Payload: []byte(`{"n":1}`)},
			{ID: "later", Due: now.Add(time.Hour), Payload: []byte(`{"n":3}`)},
		}))
		got, err := q.ClaimDue(ctx, 10, time.Hour)
		must(t, err)
		if !slices.Equal(ids(got), []string{"a", "b"}) {
			t.Fatalf("claimed %v, want [a b] (the item due in an hour stays)", ids(got))
		}
		if string(got[0].Payload) != `{"n":1}` || string(got[1].Payload) != `{"n":2}` {
			t.Fatalf("payloads %q %q", got[0].Payload, got[1].Payload)
		}
		n, err := q.Len(ctx)
		must(t, err)
		if n != 3 {
			t.Fatalf("Len = %d, want 3 (claimed items are held until Done)", n)
		}
	})

	t.Run("a claimed item is not handed out again while leased", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		must(t, q.Schedule(ctx, []campaigns.Delayed{{ID: "x", Due: nowOf(impl).Add(-time.Second), Payload: []byte("p")}}))
		first, err := q.ClaimDue(ctx, 10, time.Hour)
		must(t, err)
		again, err := q.ClaimDue(ctx, 10, time.Hour)
		must(t, err)
		if len(first) != 1 || len(again) != 0 {
			t.Fatalf("claims %v then %v, want [x] then []", ids(first), ids(again))
		}
	})

	t.Run("an item not done within its lease comes back", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		must(t, q.Schedule(ctx, []campaigns.Delayed{{ID: "x", Due: nowOf(impl).Add(-time.Second), Payload: []byte("p")}}))
		got, err := q.ClaimDue(ctx, 10, impl.Lease)
		must(t, err)
		if len(got) != 1 {
			t.Fatalf("first claim %v", ids(got))
		}
		back := eventually(t, impl, impl.Lease, func() ([]campaigns.Delayed, bool) {
			got, err := q.ClaimDue(ctx, 10, time.Hour)
			must(t, err)
			return got, len(got) == 1
		})
		if back[0].ID != "x" || string(back[0].Payload) != "p" {
			t.Fatalf("re-delivered %+v", back[0])
		}
	})

	t.Run("done items are gone; scheduling is idempotent on id", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		past := nowOf(impl).Add(-time.Second)
		must(t, q.Schedule(ctx, []campaigns.Delayed{{ID: "x", Due: past, Payload: []byte("first")}}))
		must(t, q.Schedule(ctx, []campaigns.Delayed{{ID: "x", Due: past, Payload: []byte("second")}, {ID: "y", Due: past, Payload: []byte("y")}}))
		got, err := q.ClaimDue(ctx, 10, impl.Lease)
		must(t, err)
		if len(got) != 2 || got[0].ID != "x" || string(got[0].Payload) != "first" {
			t.Fatalf("claimed %+v, want x with its first payload, then y", got)
		}
		must(t, q.Done(ctx, []string{"x", "y", "never-scheduled"}))
		n, err := q.Len(ctx)
		must(t, err)
		if n != 0 {
			t.Fatalf("Len after Done = %d", n)
		}
		// Past the lease nothing comes back: Done removed it for good.
		if impl.Advance != nil {
			impl.Advance(2 * impl.Lease)
		} else {
			time.Sleep(2 * impl.Lease)
		}
		got, err = q.ClaimDue(ctx, 10, impl.Lease)
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("claimed %v after Done", ids(got))
		}
	})

	t.Run("max bounds a claim", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		past := nowOf(impl).Add(-time.Second)
		var items []campaigns.Delayed
		for i := range 25 {
			items = append(items, campaigns.Delayed{ID: fmt.Sprintf("i%02d", i), Due: past.Add(time.Duration(i) * time.Millisecond), Payload: []byte("p")})
		}
		must(t, q.Schedule(ctx, items))
		seen := map[string]bool{}
		for range 3 {
			got, err := q.ClaimDue(ctx, 10, time.Hour)
			must(t, err)
			if len(got) > 10 {
				t.Fatalf("claimed %d, max 10", len(got))
			}
			for _, d := range got {
				if seen[d.ID] {
					t.Fatalf("%s handed out twice", d.ID)
				}
				seen[d.ID] = true
			}
		}
		if len(seen) != 25 {
			t.Fatalf("claimed %d distinct items in 3 rounds of 10, want 25", len(seen))
		}
	})

	t.Run("concurrent claimers get each item once", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		past := nowOf(impl).Add(-time.Second)
		var items []campaigns.Delayed
		for i := range 200 {
			items = append(items, campaigns.Delayed{ID: fmt.Sprintf("c%03d", i), Due: past, Payload: []byte("p")})
		}
		must(t, q.Schedule(ctx, items))
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					got, err := q.ClaimDue(ctx, 7, time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, d := range got {
						seen[d.ID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seen) != 200 {
			t.Fatalf("%d distinct items claimed, want 200", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("%s claimed %d times", id, n)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		impl := newImpl(t)
		q := impl.Delays
		if err := q.Schedule(ctx, []campaigns.Delayed{{ID: "", Due: nowOf(impl)}}); err == nil {
			t.Error("Schedule accepted an empty id")
		}
		if _, err := q.ClaimDue(ctx, 0, time.Second); err == nil {
			t.Error("ClaimDue accepted max 0")
		}
		if _, err := q.ClaimDue(ctx, 1, 0); err == nil {
			t.Error("ClaimDue accepted a zero lease")
		}
	})
}

func runCaps(t *testing.T, newImpl func(t *testing.T) Impl) {
	ctx := context.Background()
	req := func(user uint64, ch, msg string) campaigns.CapRequest {
		return campaigns.CapRequest{User: user, Channel: ch, Msg: msg}
	}
	admit := func(t *testing.T, c campaigns.CapStore, rules []campaigns.CapRule, dry bool, reqs ...campaigns.CapRequest) string {
		t.Helper()
		ok, err := c.Admit(ctx, reqs, rules, dry)
		must(t, err)
		if len(ok) != len(reqs) {
			t.Fatalf("%d answers for %d requests", len(ok), len(reqs))
		}
		return fmt.Sprint(ok)
	}
	impl := func(t *testing.T) Impl {
		t.Helper()
		i := newImpl(t)
		if i.Caps == nil {
			t.Skip("no CapStore")
		}
		return i
	}
	day := campaigns.Duration(24 * time.Hour)
	t.Run("a rule over all channels counts every channel", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Channel: campaigns.CapAll, Limit: 2, Window: day}}
		if got := admit(t, c, rules, false, req(1, "email", "a"), req(1, "sms", "a"), req(1, "apns", "b"), req(2, "apns", "b")); got != "[true true false true]" {
			t.Fatalf("got %s", got)
		}
		// The same messages again (a resumed run) pass without counting twice; a new one does not.
		if got := admit(t, c, rules, false, req(1, "sms", "a"), req(1, "email", "a"), req(1, "webhook", "c")); got != "[true true false]" {
			t.Fatalf("again: got %s", got)
		}
	})
	t.Run("a channel rule counts its channel only; every applying rule must fit", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Channel: "sms", Limit: 1, Window: day}, {Limit: 3, Window: day}}
		got := admit(t, c, rules, false, req(7, "sms", "a"), req(7, "email", "a"), req(7, "sms", "b"), req(7, "apns", "b"), req(7, "fcm", "c"))
		if got != "[true true false true false]" {
			t.Fatalf("got %s", got)
		}
	})
	t.Run("no rule applies: admitted, nothing counted", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Channel: "sms", Limit: 1, Window: day}}
		if got := admit(t, c, rules, false, req(3, "email", "a"), req(3, "email", "b"), req(3, "sms", "a")); got != "[true true true]" {
			t.Fatalf("got %s", got)
		}
	})
	t.Run("a dry run answers the same and writes nothing", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Limit: 2, Window: day}}
		reqs := []campaigns.CapRequest{req(4, "email", "a"), req(4, "sms", "b"), req(4, "apns", "c")}
		for range 2 {
			if got := admit(t, c, rules, true, reqs...); got != "[true true false]" {
				t.Fatalf("dry: got %s", got)
			}
		}
		if got := admit(t, c, rules, false, reqs...); got != "[true true false]" {
			t.Fatalf("after dry runs: got %s", got)
		}
		if got := admit(t, c, rules, true, req(4, "apns", "d"), req(4, "email", "a")); got != "[false true]" {
			t.Fatalf("dry after a real admit: got %s", got)
		}
	})
	t.Run("a user's requests count against each other wherever they are in the call", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Limit: 2, Window: day}}
		got := admit(t, c, rules, false, req(8, "email", "a"), req(9, "email", "a"), req(8, "sms", "b"), req(9, "sms", "b"), req(8, "apns", "c"))
		if got != "[true true true true false]" {
			t.Fatalf("got %s", got)
		}
	})
	t.Run("every rule over all channels must fit: the smallest limit caps", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Limit: 3, Window: day}, {Limit: 2, Window: campaigns.Duration(time.Hour)}}
		if got := admit(t, c, rules, false, req(10, "apns", "a"), req(10, "email", "a"), req(10, "webhook", "a")); got != "[true true false]" {
			t.Fatalf("got %s", got)
		}
		if got := admit(t, c, rules, false, req(10, "webhook", "b"), req(10, "email", "a")); got != "[false true]" {
			t.Fatalf("again: got %s", got)
		}
	})
	t.Run("the same message twice in one call counts once, dry or not", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Limit: 1, Window: day}}
		for _, dry := range []bool{true, false} {
			if got := admit(t, c, rules, dry, req(11, "email", "a"), req(11, "email", "a"), req(11, "sms", "a")); got != "[true true false]" {
				t.Fatalf("dry %v: got %s", dry, got)
			}
		}
	})
	t.Run("the window slides", func(t *testing.T) {
		i := impl(t)
		rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(i.Lease)}}
		if got := admit(t, i.Caps, rules, false, req(5, "email", "a"), req(5, "email", "b")); got != "[true false]" {
			t.Fatalf("got %s", got)
		}
		eventually(t, i, i.Lease, func() (string, bool) {
			ok, err := i.Caps.Admit(ctx, []campaigns.CapRequest{req(5, "email", "b")}, rules, false)
			must(t, err)
			return fmt.Sprint(ok), ok[0]
		})
		if got := admit(t, i.Caps, rules, false, req(5, "email", "c")); got != "[false]" {
			t.Fatalf("after the window: got %s, want b to count", got)
		}
	})
	t.Run("a large batch over many users", func(t *testing.T) {
		c := impl(t).Caps
		rules := []campaigns.CapRule{{Limit: 1, Window: day}}
		var reqs []campaigns.CapRequest
		for u := range uint64(3000) {
			reqs = append(reqs, req(u*7919+1, "email", "x"), req(u*7919+1, "sms", "x"))
		}
		ok, err := c.Admit(ctx, reqs, rules, false)
		must(t, err)
		for k, v := range ok {
			if v != (k%2 == 0) {
				t.Fatalf("request %d: %v, want only each user's first admitted", k, v)
			}
		}
	})
	t.Run("bad rules", func(t *testing.T) {
		c := impl(t).Caps
		for _, r := range []campaigns.CapRule{{Limit: 0, Window: day}, {Limit: 1}} {
			if _, err := c.Admit(ctx, []campaigns.CapRequest{req(1, "sms", "a")}, []campaigns.CapRule{r}, false); err == nil {
				t.Errorf("rule %+v accepted", r)
			}
		}
	})
}

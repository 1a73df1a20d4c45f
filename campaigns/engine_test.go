package campaigns_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
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

// profile is a templates.Profile over a map.
type profile struct {
	id, locale, zone string
	attrs            map[string]any
}

func (p *profile) ID() string       { return p.id }
func (p *profile) Locale() string   { return p.locale }
func (p *profile) TimeZone() string { return p.zone }
func (p *profile) Attr(name string) (any, bool) {
	v, ok := p.attrs[name]
	return v, ok
}

// source is an in-memory MemberSource: members sorted by key, one segment "all".
type source struct {
	members []campaigns.Member
	corrupt map[uint64]bool
}

func (s *source) Generation() uint64 { return 1 }

func (s *source) Members(segment string, after uint64, hasAfter bool) (campaigns.MemberIter, error) {
	if segment != "all" {
		return nil, fmt.Errorf("%w: %q", campaigns.ErrUnknownSegment, segment)
	}
	i := 0
	if hasAfter {
		i = sort.Search(len(s.members), func(i int) bool { return s.members[i].Key > after })
	}
	return &iter{s: s, i: i}, nil
}

type iter struct {
	s *source
	i int
}

func (it *iter) Next(dst []campaigns.Member) (int, error) {
	n := copy(dst, it.s.members[it.i:])
	for k := range n {
		if it.s.corrupt[dst[k].Key] {
			dst[k].Err = errors.New("block 3 of section records fails its checksum")
		}
	}
	it.i += n
	return n, nil
}

func (it *iter) Close() error { return nil }

func (s *source) Pin() (campaigns.PinnedSource, error) { return s, nil }

func (s *source) LookupKey(key uint64, dst *campaigns.Member) (bool, error) {
	i := sort.Search(len(s.members), func(i int) bool { return s.members[i].Key >= key })
	if i == len(s.members) || s.members[i].Key != key {
		return false, nil
	}
	*dst = s.members[i]
	return true, nil
}

func (s *source) LookupID(id string, dst *campaigns.Member) (bool, error) {
	for i := range s.members {
		if s.members[i].ID == id {
			*dst = s.members[i]
			return true, nil
		}
	}
	return false, nil
}

func (s *source) Close() error { return nil }

// newSource makes n members; member i has an email unless i%10==0, a phone
// unless i%7==0, an APNs token when i%3==0, email consent denied when i%11==0.
func newSource(n int) *source {
	s := &source{corrupt: map[uint64]bool{}}
	for i := range n {
		id := fmt.Sprintf("u-%05d", i)
		m := campaigns.Member{
			Key:     uint64(i+1) * 1000,
			ID:      id,
			Profile: &profile{id: id, zone: "UTC", attrs: map[string]any{"first_name": fmt.Sprintf("Ann%d", i)}},
		}
		if i%10 != 0 {
			m.Email = id + "@example.test"
		}
		if i%7 != 0 {
			m.Phone = fmt.Sprintf("+1415555%04d", i)
		}
		if i%3 == 0 {
			m.APNs = []string{fmt.Sprintf("%064x", i)}
		}
		if i%11 == 0 {
			m.EmailConsent = campaigns.ConsentDenied
		}
		s.members = append(s.members, m)
	}
	return s
}

// rig is an engine over memstate, an in-memory source and real worker pools
// in front of scripted channels.
type rig struct {
	t      *testing.T
	state  *memstate.Store
	src    *source
	chans  map[string]*channelstest.Scripted
	pools  map[string]*channels.Pool
	engine *campaigns.Engine

	mu   sync.Mutex
	sent map[string][]string // channel → idempotency keys, in send order

	// onHandoff, when set, sees each request as its worker hands it off:
	// the order in which workers took their batches from the pool, which
	// send order across two workers only approximates.
	onHandoff atomic.Pointer[func(ch string, msgs []*channels.Message)]
	// noWait makes the pools hand off with MarkHandedOff (the daemon's
	// choice for state kept in memory) instead of HandOff.
	noWait atomic.Bool
}

func newRig(t *testing.T, state *memstate.Store, src *source, cfg campaigns.EngineConfig) *rig {
	t.Helper()
	r := newRigOn(t, state, src, cfg)
	r.state = state
	return r
}

// stateStore is what an engine keeps its campaigns in: memstate, or
// redisstate for the tests of a store that loses its data.
type stateStore interface {
	campaigns.CampaignStore
	campaigns.ProgressStore
}

// newRigOn is newRig over any state store.
func newRigOn(t *testing.T, state stateStore, src *source, cfg campaigns.EngineConfig) *rig {
	t.Helper()
	r := &rig{t: t, src: src, chans: map[string]*channelstest.Scripted{}, pools: map[string]*channels.Pool{}, sent: map[string][]string{}}
	for _, name := range []string{channels.Email, channels.SMS, channels.APNs} {
		ch := channelstest.NewScripted(name)
		ch.OnSend(func(batch []*channels.Message) {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, m := range batch {
				r.sent[name] = append(r.sent[name], m.IdempotencyKey)
			}
		})
		p, err := channels.NewWorkerPool(ch, channels.PoolConfig{
			Workers: 2, BatchSize: 50, QueueSize: 500, MaxAttempts: 2,
			BackoffBase: time.Millisecond, BackoffMax: time.Millisecond,
			Outcomes: channels.OutcomeFunc(campaigns.RouteOutcomes),
			Handoff: channels.HandoffFunc(func(ctx context.Context, msgs []*channels.Message) error {
				if f := r.onHandoff.Load(); f != nil {
					(*f)(name, msgs)
				}
				if r.noWait.Load() {
					return campaigns.MarkHandedOff(ctx, msgs)
				}
				return campaigns.HandOff(ctx, msgs)
			}),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.Close(ctx)
		})
		r.chans[name], r.pools[name] = ch, p
	}
	cfg.BatchSize = max(cfg.BatchSize, 100)
	r.engine = campaigns.NewEngine(state, state, src, campaigns.NewPoolDispatcher(r.pools), cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = r.engine.Close(ctx)
	})
	return r
}

func (r *rig) keys(ch string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sent[ch]...)
}

const body = `{
  "id": "spring-sale",
  "name": "Spring sale",
  "segment": "all",
  "channels": ["email", "sms", "apns"],
  "content": {
    "email": {"from": "shop@example.test", "subject": "Hi {{ profile.first_name }}", "html": "<p>Hello {{ profile.first_name }}</p>", "text": "Hello"},
    "sms": {"body": "Sale! {{ profile.first_name | default: 'friend' }}"},
    "push": {"title": "Sale", "body": "Hi {{ profile.first_name }}"}
  }
}`

func waitStatus(t *testing.T, e *campaigns.Engine, id string, want campaigns.Status) campaigns.CampaignStatus {
	t.Helper()
	var st campaigns.CampaignStatus
	channelstest.Eventually(t, 30*time.Second, func() bool {
		var err error
		st, err = e.Get(context.Background(), id)
		return err == nil && st.Status == want
	}, "campaign %s never reached %s (last %+v)", id, want, &st)
	return st
}

func total(counts map[string]map[string]int64, ch string) int64 {
	var n int64
	for _, v := range counts[ch] {
		n += v
	}
	return n
}

func TestCampaignDeliversEveryMemberWithAReason(t *testing.T) {
	src := newSource(1000)
	src.corrupt[src.members[5].Key] = true
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	r.chans[channels.Email].Script(src.members[1].Email, channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "550", errors.New("user unknown"))})

	ctx := context.Background()
	st, created, err := r.engine.Create(ctx, []byte(body))
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)

	// Expected counts, computed from the source's rules.
	want := map[string]map[string]int64{channels.Email: {}, channels.SMS: {}, channels.APNs: {}}
	for i, m := range src.members {
		if i == 5 {
			for ch := range want {
				want[ch][campaigns.ReasonCorruptRow]++
			}
			continue
		}
		switch {
		case i%11 == 0:
			want[channels.Email][campaigns.ReasonNoConsent]++
		case m.Email == "":
			want[channels.Email][campaigns.ReasonNoAddress]++
		case i == 1:
			want[channels.Email][campaigns.ReasonDeadAddress]++
		default:
			want[channels.Email][campaigns.ReasonSent]++
		}
		if m.Phone == "" {
			want[channels.SMS][campaigns.ReasonNoAddress]++
		} else {
			want[channels.SMS][campaigns.ReasonSent]++
		}
		if len(m.APNs) == 0 {
			want[channels.APNs][campaigns.ReasonNoAddress]++
		} else {
			want[channels.APNs][campaigns.ReasonSent]++
		}
	}
	for ch, reasons := range want {
		if total(st.Counts, ch) != int64(len(src.members)) {
			t.Errorf("%s: counts add up to %d, want every member (%d): %v", ch, total(st.Counts, ch), len(src.members), st.Counts[ch])
		}
		for reason, n := range reasons {
			if st.Counts[ch][reason] != n {
				t.Errorf("%s/%s = %d, want %d", ch, reason, st.Counts[ch][reason], n)
			}
		}
	}
	// Exactly one send per (user, channel, address): no duplicates.
	for ch := range want {
		seen := map[string]bool{}
		for _, k := range r.keys(ch) {
			if seen[k] {
				t.Errorf("%s: %s sent twice", ch, k)
			}
			seen[k] = true
		}
		if int64(len(seen)) != want[ch][campaigns.ReasonSent]+want[ch][campaigns.ReasonDeadAddress] {
			t.Errorf("%s: %d distinct sends, want %d", ch, len(seen), want[ch][campaigns.ReasonSent]+want[ch][campaigns.ReasonDeadAddress])
		}
	}
	if st.Checkpoint != fmt.Sprintf("%016x", src.members[len(src.members)-1].Key) {
		t.Errorf("checkpoint = %s, want the last member's key", st.Checkpoint)
	}

	// Creating it again is a no-op; a different body under the same id is a conflict.
	if _, created, err := r.engine.Create(ctx, []byte(body)); err != nil || created {
		t.Fatalf("re-create: created=%v err=%v", created, err)
	}
	if got := len(r.keys(channels.SMS)); int64(got) != want[channels.SMS][campaigns.ReasonSent] {
		t.Fatalf("re-create sent again: %d sms", got)
	}
	_, _, err = r.engine.Create(ctx, []byte(strings.Replace(body, "Spring sale", "Summer sale", 1)))
	if !errors.Is(err, campaigns.ErrConflict) {
		t.Fatalf("conflicting create: err = %v, want ErrConflict", err)
	}
}

func TestCreateRejectsBadInputNamingTheField(t *testing.T) {
	r := newRig(t, memstate.New(), newSource(1), campaigns.EngineConfig{})
	tests := []struct {
		name, body, field string
	}{
		{"not JSON", `{"id":`, "body"},
		{"unknown field", `{"id":"a","segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}},"colour":"red"}`, "colour"},
		{"missing id", `{"segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}}}`, "id"},
		{"missing segment", `{"id":"a","channels":["sms"],"content":{"sms":{"body":"x"}}}`, "segment"},
		{"unknown segment", `{"id":"a","segment":"nope","channels":["sms"],"content":{"sms":{"body":"x"}}}`, "segment"},
		{"unknown channel", `{"id":"a","segment":"all","channels":["fax"],"content":{}}`, "channels[0]"},
		{"channel without content", `{"id":"a","segment":"all","channels":["email"],"content":{"sms":{"body":"x"}}}`, "content.email"},
		{"wrong type", `{"id":"a","segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}},"throttle_per_s":"fast"}`, "throttle_per_s"},
		{"bad quiet hours", `{"id":"a","segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}},"quiet_hours":{"start":"25:00","end":"08:00"}}`, "quiet_hours.start"},
		{"bad ttl", `{"id":"a","segment":"all","channels":["sms"],"content":{"sms":{"body":"x"}},"ttl":"soon"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := r.engine.Create(context.Background(), []byte(tc.body))
			if err == nil {
				t.Fatal("accepted bad input")
			}
			var fe *campaigns.FieldError
			if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
				t.Fatalf("err = %v, want a FieldError on %q", err, tc.field)
			}
		})
	}
	t.Run("broken template names channel, field, line", func(t *testing.T) {
		_, _, err := r.engine.Create(context.Background(), []byte(`{"id":"b","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi\n{{ profile.name | }}"}}}`))
		if err == nil || !strings.Contains(err.Error(), "sms") || !strings.Contains(err.Error(), "body") || !strings.Contains(err.Error(), "2") {
			t.Fatalf("err = %v, want channel, field and line", err)
		}
	})
}

func TestRenderErrorAndPoliciesSkipWithReasons(t *testing.T) {
	src := newSource(300)
	for i := range src.members {
		if i%2 == 0 {
			delete(src.members[i].Profile.(*profile).attrs, "first_name")
		}
	}
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{})
	b := `{"id":"skip-missing","segment":"all","channels":["sms"],
	  "content":{"missing":"skip","sms":{"body":"Hi {{ profile.first_name }}"}}}`
	st, _, err := r.engine.Create(context.Background(), []byte(b))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
	if got := st.Counts[channels.SMS][campaigns.ReasonRenderError]; got == 0 {
		t.Fatalf("no render_error counted: %v", st.Counts)
	}
	if total(st.Counts, channels.SMS) != 300 {
		t.Fatalf("counts %v do not add up to 300", st.Counts)
	}

	// Quiet hours covering the whole day skip everyone.
	q := `{"id":"quiet","segment":"all","channels":["sms"],"quiet_hours":{"start":"00:00","end":"23:59"},
	  "content":{"sms":{"body":"Hi"}}}`
	st, _, err = r.engine.Create(context.Background(), []byte(q))
	if err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, st.ID, campaigns.StatusCompleted)
	if st.Counts[channels.SMS][campaigns.ReasonSent] > 0 && st.Counts[channels.SMS][campaigns.ReasonQuietHours] == 0 {
		t.Fatalf("quiet hours ignored: %v", st.Counts)
	}
}

func TestPauseAndResumeSendEachMemberOnce(t *testing.T) {
	src := newSource(3000)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{BatchSize: 100, MaxOpenBatches: 2})
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
	b := `{"id":"pausable","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
	if _, _, err := r.engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	<-gate
	st, err := r.engine.Pause(context.Background(), "pausable")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != campaigns.StatusPaused {
		t.Fatalf("status %s after pause", st.Status)
	}
	sentAtPause := len(r.keys(channels.SMS))
	if sentAtPause >= 2571 {
		t.Fatalf("pause did not stop the campaign early (%d sent)", sentAtPause)
	}
	if _, err := r.engine.Resume(context.Background(), "pausable"); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, "pausable", campaigns.StatusCompleted)
	keys := r.keys(channels.SMS)
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Fatalf("%s sent twice across pause/resume", k)
		}
		seen[k] = true
	}
	withPhone := 0
	for _, m := range src.members {
		if m.Phone != "" {
			withPhone++
		}
	}
	if len(seen) != withPhone || st.Counts[channels.SMS][campaigns.ReasonSent] != int64(withPhone) {
		t.Fatalf("sent %d distinct (counted %d), want %d", len(seen), st.Counts[channels.SMS][campaigns.ReasonSent], withPhone)
	}
}

// blackhole takes messages and never answers: a daemon killed (kill -9)
// right after taking a batch. With hand, it also records them as handed to
// the provider, as a pool does right before the request leaves: those are
// the messages that were on the wire at the kill.
type blackhole struct {
	hand bool
	mu   sync.Mutex
	keys map[string][]string
}

func (b *blackhole) Dispatch(ctx context.Context, ch string, _ channels.Lane, msgs []*channels.Message) (int, error) {
	if b.hand {
		if err := campaigns.HandOff(ctx, msgs); err != nil {
			return 0, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range msgs {
		b.keys[ch] = append(b.keys[ch], m.IdempotencyKey)
	}
	return len(msgs), nil
}

func (b *blackhole) Throttle(string, float64) {}

// severable is the state as a daemon sees it: once severed (the process is
// killed) none of its writes land any more, as after a kill -9.
type severable struct {
	*memstate.Store
	dead atomic.Bool
}

var errKilled = errors.New("the process is dead")

func (s *severable) check() error {
	if s.dead.Load() {
		return errKilled
	}
	return nil
}

func (s *severable) Renew(ctx context.Context, l campaigns.Lease, ttl time.Duration) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.Store.Renew(ctx, l, ttl)
}

func (s *severable) Release(ctx context.Context, l campaigns.Lease) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.Store.Release(ctx, l)
}

func (s *severable) ClaimBatch(ctx context.Context, l campaigns.Lease, first, last uint64, slots int) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	return s.Store.ClaimBatch(ctx, l, first, last, slots)
}

func (s *severable) Record(ctx context.Context, l campaigns.Lease, f campaigns.Flush) (campaigns.Checkpoint, error) {
	if err := s.check(); err != nil {
		return campaigns.Checkpoint{}, err
	}
	return s.Store.Record(ctx, l, f)
}

func (b *blackhole) Has(string) bool { return true }

func TestCrashMidCampaignResumesWithoutDuplicates(t *testing.T) {
	tests := []struct {
		name string
		// hand: A's messages reached the provider's request (in doubt after
		// the crash); otherwise they were only queued (simply sent by B).
		hand bool
	}{
		{name: "handed to the provider and unanswered: in doubt", hand: true},
		{name: "queued, never handed over: sent by the next owner", hand: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { testCrashResume(t, tc.hand) })
	}
}

func testCrashResume(t *testing.T, hand bool) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	state := memstate.New(memstate.WithClock(clock))
	src := newSource(1000)

	// Daemon A dispatches the first batches, then "dies": nothing it
	// dispatched ever settles, and its lease is left to run out.
	dead := &blackhole{hand: hand, keys: map[string][]string{}}
	aState := &severable{Store: state}
	a := campaigns.NewEngine(aState, aState, src, dead, campaigns.EngineConfig{
		Owner: "a", BatchSize: 100, MaxOpenBatches: 2, LeaseTTL: time.Hour, DrainTimeout: 50 * time.Millisecond,
	}, campaigns.WithEngineClock(clock))
	b := `{"id":"crashy","segment":"all","channels":["email","sms","apns"],"content":{"email":{"from":"a@example.test","subject":"s","text":"t"},"sms":{"body":"Hi"},"push":{"title":"t","body":"b"}}}`
	if _, _, err := a.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 30*time.Second, func() bool {
		dead.mu.Lock()
		defer dead.mu.Unlock()
		return len(dead.keys[channels.SMS]) > 0 && len(dead.keys[channels.APNs]) > 0
	}, "daemon A never dispatched")
	st, err := a.Get(context.Background(), "crashy")
	if err != nil || st.Status != campaigns.StatusRunning {
		t.Fatalf("A: %+v %v", st, err)
	}
	aState.dead.Store(true) // A is killed: nothing it does lands any more
	clockMu.Lock()
	now = now.Add(2 * time.Hour) // A's lease runs out
	clockMu.Unlock()

	// Daemon B starts, finds the campaign running and resumes it, while A's
	// goroutines may still be finishing what they had in hand.
	r := newRig(t, state, src, campaigns.EngineConfig{Owner: "b", BatchSize: 100})
	if err := r.engine.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, "crashy", campaigns.StatusCompleted)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Close(closeCtx); err != nil {
		t.Fatalf("A's goroutines did not stop: %v", err)
	}
	// What A put on the wire is read only now that A has stopped: a hand-off
	// mark that landed just before the kill has its request leave just
	// after it, and that request is as much in doubt as the ones before.
	dead.mu.Lock()
	deadKeys := map[string][]string{}
	for ch, ks := range dead.keys {
		deadKeys[ch] = append([]string(nil), ks...)
	}
	dead.mu.Unlock()

	for _, ch := range []string{channels.Email, channels.SMS, channels.APNs} {
		sentByB := map[string]int{}
		for _, k := range r.keys(ch) {
			if sentByB[k]++; sentByB[k] > 1 {
				t.Fatalf("B sent %s twice", k)
			}
		}
		deadSet := map[string]bool{}
		for _, k := range deadKeys[ch] {
			deadSet[k] = true
		}
		switch {
		case !hand:
			// Never on the wire: simply sent, nothing in doubt.
			for k := range deadSet {
				if sentByB[k] != 1 {
					t.Fatalf("%s: queued message %s was not sent by B", ch, k)
				}
			}
			if got := st.Counts[ch][campaigns.ReasonInDoubt]; got != 0 {
				t.Fatalf("%s: in_doubt = %d, want 0: nothing was handed over", ch, got)
			}
		case ch == channels.APNs:
			// An idempotency handle: re-sent with the very key A used.
			for k := range deadSet {
				if sentByB[k] != 1 {
					t.Fatalf("in-doubt push %s was not re-sent with its key", k)
				}
			}
		default:
			// No handle (SMS, email): reported in doubt, exactly what A handed over, never re-sent.
			if got := st.Counts[ch][campaigns.ReasonInDoubt]; got != int64(len(deadSet)) {
				t.Fatalf("%s in_doubt = %d, want %d (what A handed over)", ch, got, len(deadSet))
			}
			for k := range deadSet {
				if sentByB[k] != 0 {
					t.Fatalf("in-doubt %s %s re-sent", ch, k)
				}
			}
		}
		if total(st.Counts, ch) != int64(len(src.members)) {
			t.Fatalf("%s counts %v add up to %d, want %d", ch, st.Counts[ch], total(st.Counts, ch), len(src.members))
		}
	}
}

func TestRetryFailedResendsOnlyTransientFailures(t *testing.T) {
	src := newSource(400)
	r := newRig(t, memstate.New(), src, campaigns.EngineConfig{BatchSize: 100})
	// Three phones fail every attempt with a transient error; one is dead.
	flaky := []string{src.members[1].Phone, src.members[2].Phone, src.members[150].Phone}
	outage := channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("provider down"))}
	for _, p := range flaky {
		r.chans[channels.SMS].Script(p, outage)
	}
	r.chans[channels.SMS].Script(src.members[3].Phone, channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "21211", errors.New("invalid number"))})
	b := `{"id":"retry-me","segment":"all","channels":["sms","email"],"content":{"sms":{"body":"Hi"},"email":{"from":"a@example.test","subject":"s","text":"t"}}}`
	if _, _, err := r.engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, r.engine, "retry-me", campaigns.StatusCompleted)
	if st.Counts[channels.SMS][campaigns.ReasonRetriesExhausted] != 3 || st.Failures != 3 {
		t.Fatalf("want 3 retryable failures, got %v (listed %d)", st.Counts[channels.SMS], st.Failures)
	}
	if _, err := r.engine.Pause(context.Background(), "retry-me"); !errors.Is(err, campaigns.ErrInvalidTransition) {
		t.Fatalf("pause of a completed campaign: %v", err)
	}

	// The provider recovers for two of them.
	r.chans[channels.SMS].Script(flaky[0])
	r.chans[channels.SMS].Script(flaky[1])
	emailsBefore := len(r.keys(channels.Email))
	smsBefore := len(r.keys(channels.SMS))
	if _, err := r.engine.RetryFailed(context.Background(), "retry-me"); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, r.engine, "retry-me", campaigns.StatusCompleted)
	if got := len(r.keys(channels.Email)); got != emailsBefore {
		t.Fatalf("retry re-sent %d emails that had not failed", got-emailsBefore)
	}
	// Only the 3 failed phones were tried again (twice each: MaxAttempts 2).
	if got := len(r.keys(channels.SMS)) - smsBefore; got != 2+2 {
		t.Fatalf("retry made %d sms attempts, want 4 (2 recovered once, 1 failing twice)", got)
	}
	sms := st.Counts[channels.SMS]
	if sms[campaigns.ReasonRetriesExhausted] != 1 || st.Failures != 1 {
		t.Fatalf("after retry: %v, listed %d; want 1 still failing", sms, st.Failures)
	}
	if sms[campaigns.ReasonDeadAddress] != 1 {
		t.Fatalf("dead address was retried or lost: %v", sms)
	}
	if total(st.Counts, channels.SMS) != 400 {
		t.Fatalf("sms counts %v add up to %d, want 400", sms, total(st.Counts, channels.SMS))
	}
}

// gatedState is a memstate whose ledger writes wait while the gate is shut.
type gatedState struct {
	*memstate.Store
	gate chan struct{} // closed: open
}

func (g *gatedState) Record(ctx context.Context, l campaigns.Lease, f campaigns.Flush) (campaigns.Checkpoint, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return campaigns.Checkpoint{}, ctx.Err()
	}
	return g.Store.Record(ctx, l, f)
}

// TestHandOffWaitsForTheLedger: with HandOff no request leaves while the
// ledger cannot write (its marks must land first); with MarkHandedOff they
// leave at once and the marks follow. Either way every member is counted
// exactly once when the writes resume.
func TestHandOffWaitsForTheLedger(t *testing.T) {
	for _, noWait := range []bool{false, true} {
		t.Run(fmt.Sprintf("mark_only=%v", noWait), func(t *testing.T) {
			src := newSource(300)
			st := &gatedState{Store: memstate.New(), gate: make(chan struct{})}
			r := newRigOn(t, st, src, campaigns.EngineConfig{})
			r.noWait.Store(noWait)
			ctx := context.Background()
			c, _, err := r.engine.Create(ctx, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			sentWhileShut := len(r.keys(channels.Email)) + len(r.keys(channels.SMS)) + len(r.keys(channels.APNs))
			close(st.gate)
			done := waitStatus(t, r.engine, c.ID, campaigns.StatusCompleted)
			if noWait && sentWhileShut == 0 {
				t.Fatal("MarkHandedOff: nothing was sent while the ledger could not write")
			}
			if !noWait && sentWhileShut != 0 {
				t.Fatalf("HandOff: %d requests left before their hand-off was written", sentWhileShut)
			}
			for _, ch := range []string{channels.Email, channels.SMS, channels.APNs} {
				if got := total(done.Counts, ch); got != int64(len(src.members)) {
					t.Fatalf("%s: %d counted, want %d (%v)", ch, got, len(src.members), done.Counts[ch])
				}
				if keys := r.keys(ch); len(keys) != int(done.Counts[ch][campaigns.ReasonSent]) {
					t.Fatalf("%s: %d sent, %d counted sent", ch, len(keys), done.Counts[ch][campaigns.ReasonSent])
				}
			}
		})
	}
}

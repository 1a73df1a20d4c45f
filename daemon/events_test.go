package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

// fakeCampaigns is a CampaignSource with statuses set by the test.
type fakeCampaigns struct {
	mu      sync.Mutex
	running []string
	byID    map[string]campaigns.CampaignStatus
	err     error
}

func (f *fakeCampaigns) Running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.running...)
}

func (f *fakeCampaigns) Get(_ context.Context, id string) (campaigns.CampaignStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return campaigns.CampaignStatus{}, f.err
	}
	st, ok := f.byID[id]
	if !ok {
		return campaigns.CampaignStatus{}, campaigns.ErrNotFound
	}
	return st, nil
}

func (f *fakeCampaigns) set(st campaigns.CampaignStatus, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byID[st.ID] = st
	f.running = f.running[:0]
	if running {
		f.running = append(f.running, st.ID)
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hubFixture is a hub over one real SMS worker pool whose channel rejects
// the address "bad", and a fake campaign engine.
type hubFixture struct {
	hub   *EventHub
	camps *fakeCampaigns
	clock *clock
	pool  *channels.Pool
	outs  *channelstest.Outcomes
}

func newHubFixture(t testing.TB, cfg EventsConfig) *hubFixture {
	t.Helper()
	live := prometheus.NewRegistry()
	m, err := channels.NewMetrics(live)
	if err != nil {
		t.Fatal(err)
	}
	outs := &channelstest.Outcomes{}
	ch := &channelstest.FuncChannel{ChannelName: channels.SMS, SendFunc: func(_ context.Context, batch []*channels.Message) []channels.Result {
		res := make([]channels.Result, len(batch))
		for i, msg := range batch {
			if msg.To == "bad" {
				res[i].Err = channels.Permanent(channels.ReasonRejected, "21612", errors.New("not reachable"))
			}
		}
		return res
	}}
	logger, _ := channelstest.NewLogger()
	pool, err := channels.NewWorkerPool(ch, channels.PoolConfig{Workers: 1, BatchSize: 1, Outcomes: outs},
		channels.WithMetrics(m), channels.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		_ = pool.Close(context.Background())
	})
	if err := pool.Start(ctx); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2025, 11, 28, 14, 0, 0, 0, time.UTC)}
	cfg.Now = clk.Now
	camps := &fakeCampaigns{byID: map[string]campaigns.CampaignStatus{}}
	shardInfo := func() (ShardSnapshot, map[string]uint64, bool) {
		return ShardSnapshot{Generation: 7, Rows: 40}, map[string]uint64{"all": 40, "vip": 10}, true
	}
	hub := NewEventHub(cfg, camps, live, map[string]PoolStatser{channels.SMS: pool}, shardInfo, logger)
	return &hubFixture{hub: hub, camps: camps, clock: clk, pool: pool, outs: outs}
}

// send submits n messages (bad of them to the rejected address) and waits
// for all their outcomes.
func (f *hubFixture) send(t *testing.T, n, bad int) {
	t.Helper()
	before := len(f.outs.All())
	msgs := make([]*channels.Message, n)
	for i := range msgs {
		to := "+15005550006"
		if i < bad {
			to = "bad"
		}
		msgs[i] = &channels.Message{ID: fmt.Sprint(before + i), Campaign: "c", To: to, Text: &channels.Text{Body: "hi"}}
	}
	if _, err := f.pool.Submit(context.Background(), channels.LaneNormal, msgs...); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.outs.All()) < before+n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d outcomes", len(f.outs.All())-before, n)
		}
		time.Sleep(time.Millisecond) // polling the pool's outcomes with a deadline
	}
}

func smsStatus(id string, status campaigns.Status, counts map[string]int64) campaigns.CampaignStatus {
	return campaigns.CampaignStatus{ID: id, Status: status, Segment: "all", Channels: []string{channels.SMS},
		Counts: map[string]map[string]int64{channels.SMS: counts}}
}

func TestEventHubChannels(t *testing.T) {
	f := newHubFixture(t, EventsConfig{})
	f.hub.Sample(context.Background())
	first := f.hub.Latest()
	if first == nil || first.Seq != 1 || first.IntervalS != 0 {
		t.Fatalf("first snapshot: %+v", first)
	}
	if first.Shard == nil || first.Shard.Generation != 7 || first.Shard.Rows != 40 {
		t.Fatalf("shard: %+v", first.Shard)
	}
	if first.Flows == nil {
		t.Fatal("flows must be an empty map, not absent")
	}

	f.send(t, 10, 2)
	f.clock.Advance(2 * time.Second)
	f.hub.Sample(context.Background())
	s := f.hub.Latest()
	sms := s.Channels[channels.SMS]
	tests := []struct {
		name      string
		got, want float64
	}{
		{"seq", float64(s.Seq), 2},
		{"interval", s.IntervalS, 2},
		{"sent", float64(sms.Sent), 8},
		{"failed rejected", float64(sms.Failed[string(channels.ReasonRejected)]), 2},
		{"failed total", float64(sms.FailedTotal()), 2},
		{"sent per second", sms.SentPerS, 4},
		{"failed per second", sms.FailedPerS, 1},
		{"latency samples (one batch per message)", float64(sms.Latency.Samples), 10},
		{"queue depth drained", float64(sms.QueueDepth), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
	t.Run("latency percentiles ordered and plausible", func(t *testing.T) {
		// A fake channel answers in microseconds, but on a loaded machine a
		// Send can be descheduled past the first bucket: assert the shape
		// here; TestQuantile pins the interpolation itself.
		if l := sms.Latency; l.P50Ms <= 0 || l.P50Ms > l.P99Ms || l.P99Ms > 1000 {
			t.Fatalf("latency %+v", l)
		}
	})
	t.Run("lanes listed", func(t *testing.T) {
		for _, lane := range []string{"high", "normal", "retry"} {
			if _, ok := sms.Queue[lane]; !ok {
				t.Fatalf("queue %v lacks lane %s", sms.Queue, lane)
			}
		}
	})

	f.clock.Advance(time.Second)
	f.hub.Sample(context.Background())
	idle := f.hub.Latest().Channels[channels.SMS]
	if idle.SentPerS != 0 || idle.Latency.Samples != 0 || idle.Sent != 8 {
		t.Fatalf("an idle interval must show no rate and keep the totals: %+v", idle)
	}
}

func TestEventHubCampaigns(t *testing.T) {
	f := newHubFixture(t, EventsConfig{Linger: time.Minute})
	ctx := context.Background()

	// "resumed" was already running when the hub started (another process
	// counted its first 10): it is a baseline, not new work.
	f.camps.set(smsStatus("resumed", campaigns.StatusRunning, map[string]int64{"sent": 10, "no_address": 2}), true)
	// "created" comes through the API and finishes before the first sample.
	f.camps.byID["created"] = smsStatus("created", campaigns.StatusCompleted, map[string]int64{"sent": 30, "provider_rejected": 4, "quiet_hours": 6})
	svc := f.hub.Track(&stubService{st: f.camps.byID["created"]})
	if _, _, err := svc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	f.hub.Sample(ctx)

	f.camps.set(smsStatus("resumed", campaigns.StatusRunning, map[string]int64{"sent": 20, "no_address": 4, "dead_address": 1}), true)
	f.clock.Advance(time.Second)
	f.hub.Sample(ctx)
	s := f.hub.Latest()

	r, c := s.Campaigns["resumed"], s.Campaigns["created"]
	tests := []struct {
		name      string
		got, want any
	}{
		{"resumed settled", r.Settled, int64(25)},
		{"resumed progress", *r.Progress, 25.0 / 40},
		{"resumed positions", r.Positions, uint64(40)},
		{"resumed sent per second", r.SentPerS, 10.0},
		{"resumed settled per second", r.SettledPerS, 13.0},
		{"resumed skipped", r.Skipped["no_address"], int64(4)},
		{"resumed failed", r.Failed["dead_address"], int64(1)},
		{"resumed by channel", r.ByChannel[channels.SMS].Sent, int64(20)},
		{"created is shown though it never ran during a sample", c.Status, "completed"},
		{"completed progress is 1", *c.Progress, 1.0},
		{"created failed", c.Failed["provider_rejected"], int64(4)},
		{"created skipped", c.Skipped["quiet_hours"], int64(6)},
		{"channel skipped sums what this daemon settled", s.Channels[channels.SMS].Skipped["quiet_hours"], int64(6)},
		{"channel skipped leaves out the baseline", s.Channels[channels.SMS].Skipped["no_address"], int64(2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
	t.Run("recipient totals: created in full, resumed from its baseline", func(t *testing.T) {
		want := map[[2]string]int64{
			{"sms", "sent"}: 30 + 10, {"sms", "provider_rejected"}: 4, {"sms", "quiet_hours"}: 6,
			{"sms", "no_address"}: 2, {"sms", "dead_address"}: 1,
		}
		got := f.hub.RecipientTotals()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("%v = %d, want %d (all: %v)", k, got[k], n, got)
			}
		}
	})
	t.Run("retry-failed moving counts never lowers a total", func(t *testing.T) {
		f.camps.set(smsStatus("resumed", campaigns.StatusRunning, map[string]int64{"sent": 21, "no_address": 4}), true)
		f.hub.Sample(ctx)
		got := f.hub.RecipientTotals()
		if got[[2]string{"sms", "sent"}] != 41 || got[[2]string{"sms", "dead_address"}] != 1 {
			t.Fatalf("totals %v", got)
		}
	})
	t.Run("finished campaigns linger, then leave", func(t *testing.T) {
		f.camps.set(smsStatus("resumed", campaigns.StatusCompleted, map[string]int64{"sent": 21, "no_address": 4}), false)
		f.clock.Advance(30 * time.Second)
		f.hub.Sample(ctx)
		if _, ok := f.hub.Latest().Campaigns["resumed"]; !ok {
			t.Fatal("left before Linger")
		}
		f.clock.Advance(2 * time.Minute)
		f.hub.Sample(ctx)
		if n := len(f.hub.Latest().Campaigns); n != 0 {
			t.Fatalf("%d campaigns still shown after Linger: %v", n, keys(f.hub.Latest().Campaigns))
		}
	})
	t.Run("a deleted campaign leaves at once", func(t *testing.T) {
		f.hub.Touch("ghost", false)
		f.hub.Sample(ctx)
		if _, ok := f.hub.Latest().Campaigns["ghost"]; ok {
			t.Fatal("unknown campaign shown")
		}
	})
	t.Run("a read error keeps the last known state", func(t *testing.T) {
		f.camps.set(smsStatus("flaky", campaigns.StatusRunning, map[string]int64{"sent": 3}), true)
		f.hub.Sample(ctx)
		f.camps.mu.Lock()
		f.camps.err = errors.New("redis: connection refused")
		f.camps.mu.Unlock()
		f.hub.Sample(ctx)
		f.camps.mu.Lock()
		f.camps.err = nil
		f.camps.mu.Unlock()
		if c, ok := f.hub.Latest().Campaigns["flaky"]; !ok || c.Sent != 3 {
			t.Fatalf("flaky: %+v %v", c, ok)
		}
	})
}

func TestEventHubMaxCampaigns(t *testing.T) {
	f := newHubFixture(t, EventsConfig{MaxCampaigns: 2})
	for i := range 4 {
		id := fmt.Sprintf("done-%d", i)
		f.camps.byID[id] = smsStatus(id, campaigns.StatusCompleted, map[string]int64{"sent": 1})
		f.hub.Touch(id, true)
		f.clock.Advance(time.Second)
	}
	f.hub.Sample(context.Background())
	f.hub.Sample(context.Background())
	got := f.hub.Latest().Campaigns
	if _, ok := got["done-3"]; len(got) != 2 || !ok {
		t.Fatalf("want the 2 most recently active, got %v", keys(got))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// stubService answers every call with st.
type stubService struct{ st campaigns.CampaignStatus }

func (s *stubService) Create(context.Context, []byte) (campaigns.CampaignStatus, bool, error) {
	return s.st, true, nil
}
func (s *stubService) Get(context.Context, string) (campaigns.CampaignStatus, error) {
	return s.st, nil
}
func (s *stubService) List(context.Context, string, int) ([]campaigns.CampaignStatus, error) {
	return []campaigns.CampaignStatus{s.st}, nil
}
func (s *stubService) Pause(context.Context, string) (campaigns.CampaignStatus, error) {
	return s.st, nil
}
func (s *stubService) Resume(context.Context, string) (campaigns.CampaignStatus, error) {
	return s.st, nil
}
func (s *stubService) Cancel(context.Context, string) (campaigns.CampaignStatus, error) {
	return s.st, nil
}
func (s *stubService) RetryFailed(context.Context, string) (campaigns.CampaignStatus, error) {
	return s.st, nil
}

func TestQuantile(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1, math.Inf(1)}
	tests := []struct {
		name   string
		q      float64
		counts []uint64 // cumulative
		want   float64
	}{
		{"all in the first bucket: linear from 0", 0.5, []uint64{10, 10, 10, 10}, 0.0005},
		{"median in the second bucket", 0.5, []uint64{2, 8, 10, 10}, 0.001 + 0.009*(5-2)/6},
		{"p99 in the third bucket", 0.99, []uint64{2, 8, 10, 10}, 0.01 + 0.09*(9.9-8)/2},
		{"beyond the last finite bound reports it", 0.99, []uint64{0, 0, 1, 10}, 0.1},
		{"empty buckets before the rank are skipped", 0.5, []uint64{0, 0, 4, 4}, 0.01 + 0.09*0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.q, bounds, tc.counts, tc.counts[len(tc.counts)-1]); math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	event, id, data, comment string
	retry                    string
}

// readEvents parses an SSE body into events on a channel until EOF.
func readEvents(body *bufio.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 16)
	go func() {
		defer close(out)
		var ev sseEvent
		for {
			line, err := body.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				out <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "event":
					ev.event = v
				case "id":
					ev.id = v
				case "data":
					ev.data = v
				case "retry":
					ev.retry = v
				}
			}
		}
	}()
	return out
}

func nextEvent(t *testing.T, evs <-chan sseEvent, what string) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatalf("stream ended waiting for %s", what)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	return sseEvent{}
}

func nextSnapshot(t *testing.T, evs <-chan sseEvent) Snapshot {
	t.Helper()
	for {
		ev := nextEvent(t, evs, "snapshot")
		if ev.event != EventSnapshot {
			continue
		}
		var s Snapshot
		if err := json.Unmarshal([]byte(ev.data), &s); err != nil {
			t.Fatalf("snapshot is not JSON: %v: %s", err, ev.data)
		}
		if ev.id != fmt.Sprint(s.Seq) {
			t.Fatalf("event id %q, seq %d", ev.id, s.Seq)
		}
		return s
	}
}

func TestEventsStream(t *testing.T) {
	ticks := make(chan time.Time)
	f := newHubFixture(t, EventsConfig{Ticks: ticks, Heartbeat: 20 * time.Millisecond})
	f.camps.set(smsStatus("vip", campaigns.StatusPaused, map[string]int64{"sent": 3}), false)
	f.camps.set(smsStatus("bulk", campaigns.StatusRunning, map[string]int64{"sent": 5}), true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hubDone := make(chan struct{})
	go func() { f.hub.Run(ctx); close(hubDone) }()
	for f.hub.Latest() == nil {
		time.Sleep(time.Millisecond) // Run samples at once; poll for it
	}
	api := NewAPI(APIConfig{Token: testToken, Events: f.hub}, &stubService{}, func(context.Context) error { return nil }, prometheus.NewRegistry(), f.hub.log)
	srv := httptest.NewServer(api)
	defer srv.Close()

	open := func(t *testing.T, query, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/v1/events"+query, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	statusTests := []struct {
		name, query, token string
		status             int
	}{
		{"no token", "", "", http.StatusUnauthorized},
		{"wrong token", "", "wrong-wrong-wrong", http.StatusUnauthorized},
		{"unknown campaign", "?campaign=nope", testToken, http.StatusNotFound},
	}
	for _, tc := range statusTests {
		t.Run(tc.name, func(t *testing.T) {
			if resp := open(t, tc.query, tc.token); resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}

	t.Run("retry hint, immediate snapshot, one per tick, heartbeats", func(t *testing.T) {
		resp := open(t, "", testToken)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
		}
		evs := readEvents(bufio.NewReader(resp.Body))
		if ev := nextEvent(t, evs, "retry hint"); ev.retry != "2000" {
			t.Fatalf("first event %+v, want the retry hint", ev)
		}
		first := nextSnapshot(t, evs)
		if len(first.Campaigns) != 1 || first.Campaigns["bulk"].Sent != 5 {
			t.Fatalf("first snapshot campaigns %v", first.Campaigns)
		}
		heartbeat := false
		for !heartbeat {
			ev := nextEvent(t, evs, "heartbeat")
			heartbeat = ev.comment == "heartbeat"
		}
		f.clock.Advance(time.Second)
		ticks <- time.Time{}
		if s := nextSnapshot(t, evs); s.Seq != first.Seq+1 || s.IntervalS != 1 {
			t.Fatalf("next snapshot seq %d interval %v after %d", s.Seq, s.IntervalS, first.Seq)
		}
	})

	t.Run("campaign filter shows only that campaign, even one not running", func(t *testing.T) {
		resp := open(t, "?campaign=vip", testToken)
		evs := readEvents(bufio.NewReader(resp.Body))
		s := nextSnapshot(t, evs)
		if len(s.Campaigns) != 1 || s.Campaigns["vip"].Status != "paused" || s.Campaigns["vip"].Sent != 3 {
			t.Fatalf("filtered snapshot campaigns %v", s.Campaigns)
		}
		if _, ok := s.Channels[channels.SMS]; !ok {
			t.Fatal("channels are not filtered")
		}
		f.clock.Advance(time.Second)
		ticks <- time.Time{}
		if s := nextSnapshot(t, evs); len(s.Campaigns) != 1 || s.Campaigns["vip"].ID != "vip" {
			t.Fatalf("filtered snapshot campaigns %v", s.Campaigns)
		}
	})

	t.Run("a client that goes away is unsubscribed", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Second)
		for f.hub.Subscribers() != 0 { // the subtests above closed their bodies
			if time.Now().After(deadline) {
				t.Fatalf("%d subscribers left", f.hub.Subscribers())
			}
			time.Sleep(5 * time.Millisecond)
		}
	})

	t.Run("shutdown ends open streams", func(t *testing.T) {
		resp := open(t, "", testToken)
		evs := readEvents(bufio.NewReader(resp.Body))
		nextSnapshot(t, evs)
		cancel()
		<-hubDone
		for {
			select {
			case _, ok := <-evs:
				if !ok {
					if resp := open(t, "", testToken); resp.StatusCode != http.StatusServiceUnavailable {
						t.Fatalf("a new stream after shutdown: %d", resp.StatusCode)
					}
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatal("stream still open after the hub stopped")
			}
		}
	})
}

// BenchmarkEventHubSample is the once-a-second cost of the live view with
// 50 campaigns in it (fake engine, so it measures the hub, not Redis).
func BenchmarkEventHubSample(b *testing.B) {
	f := newHubFixture(b, EventsConfig{})
	for i := range 50 {
		id := fmt.Sprintf("c%02d", i)
		f.camps.byID[id] = smsStatus(id, campaigns.StatusRunning, map[string]int64{"sent": int64(i * 100), "no_address": 3, "dead_address": 1})
		f.hub.Touch(id, false)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		f.clock.Advance(time.Second)
		f.hub.Sample(ctx)
	}
}

func TestEventHubReportsFlows(t *testing.T) {
	f := newHubFixture(t, EventsConfig{})
	sent := int64(10)
	f.hub.SetFlows(func() []campaigns.FlowStatus {
		return []campaigns.FlowStatus{{ID: "welcome", Status: campaigns.StatusRunning, Counts: map[string]map[string]int64{
			"sms": {"sent": sent, "duplicate": 2, "dedup_unavailable": 1},
		}}}
	})
	f.hub.Sample(context.Background())
	sent = 30
	f.clock.Advance(2 * time.Second)
	f.hub.Sample(context.Background())
	fs, ok := f.hub.Latest().Flows["welcome"]
	if !ok {
		t.Fatalf("no flow in the snapshot: %+v", f.hub.Latest().Flows)
	}
	if fs.Sent != 30 || fs.Skipped["duplicate"] != 2 || fs.Failed["dedup_unavailable"] != 1 || fs.ByChannel["sms"].Sent != 30 {
		t.Fatalf("flow snapshot %+v", fs)
	}
	if fs.SentPerS != 10 {
		t.Fatalf("sent/s = %v, want 10 (20 more in 2s)", fs.SentPerS)
	}
}

// A campaign's counts move per checkpointed batch: 500 messages every 5th
// second. The live rate must read as the 100/s it is once the window has
// filled, not jump between 0 and 500.
func TestEventHubCampaignRateIsSmoothed(t *testing.T) {
	f := newHubFixture(t, EventsConfig{Linger: time.Minute})
	ctx := context.Background()
	f.camps.set(smsStatus("bursty", campaigns.StatusRunning, map[string]int64{"sent": 0}), true)
	f.hub.Sample(ctx)
	var got []float64
	for sec := 1; sec <= 30; sec++ {
		f.camps.set(smsStatus("bursty", campaigns.StatusRunning, map[string]int64{"sent": int64(sec/5) * 500}), true)
		f.clock.Advance(time.Second)
		f.hub.Sample(ctx)
		got = append(got, f.hub.Latest().Campaigns["bursty"].SettledPerS)
	}
	for i, r := range got {
		sec := i + 1
		if sec < 10 {
			continue // the window is still filling
		}
		// Over any 10 s the window holds exactly two checkpoints: 1,000
		// messages, i.e. 100/s.
		if r != 100 {
			t.Errorf("second %d: settled/s = %v, want 100 (all: %v)", sec, r, got)
		}
	}
}

// Progress counts members, from the checkpoints: a member with two devices
// is two settled messages but one member, so settled/positions would run
// ahead of the send.
func TestMemberProgress(t *testing.T) {
	half := fmt.Sprintf("%016x", uint64(1)<<63)
	quarter := fmt.Sprintf("%016x", uint64(1)<<62)
	tests := []struct {
		name string
		st   campaigns.CampaignStatus
		want float64
		ok   bool
	}{
		{"before the first checkpoint", campaigns.CampaignStatus{}, 0, false},
		{"one daemon, half the key space final", campaigns.CampaignStatus{Checkpoint: half}, 0.5, true},
		{"fleet: completed, halfway, waiting", campaigns.CampaignStatus{Shards: []campaigns.ShardProgress{
			{State: "completed"}, {State: "running", Checkpoint: half}, {State: "waiting"}}}, 1.5 / 3, true},
		{"fleet: a stopped shard keeps its checkpoint", campaigns.CampaignStatus{Shards: []campaigns.ShardProgress{
			{State: "stopped", Checkpoint: quarter}, {State: "running", Checkpoint: half}}}, 0.375, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := memberProgress(tc.st)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("memberProgress = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	// The snapshot uses it over settled/positions: 2 devices per member,
	// 40 messages settled of 40 "positions", a quarter of the members done.
	st := smsStatus("two-devices", campaigns.StatusRunning, map[string]int64{"sent": 40})
	st.Checkpoint = quarter
	if c := describeCampaign(st, map[string]uint64{"all": 40}); c.Progress == nil || *c.Progress != 0.25 {
		t.Fatalf("progress %v, want 0.25 from the checkpoint", c.Progress)
	}
}

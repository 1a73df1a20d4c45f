package campaigns_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/shard"
)

// partition splits a source into shards parts by member ordinal, as the
// store's ring splits users over hosts.
func partition(all *source, shards int) []*source {
	out := make([]*source, shards)
	for k := range out {
		out[k] = &source{corrupt: map[uint64]bool{}}
	}
	for i, m := range all.members {
		out[i%shards].members = append(out[i%shards].members, m)
	}
	return out
}

// TestFleetCampaignReachesEveryShardOnce: one campaign created through one
// daemon of a three-shard fleet is run by every shard's daemon over its own
// members, each member once; it completes only when the last shard has, a
// shard without a daemon shows as waiting, and a standby for that shard
// finishes it.
func TestFleetCampaignReachesEveryShardOnce(t *testing.T) {
	const shards = 3
	state := memstate.New()
	all := newSource(900)
	parts := partition(all, shards)
	rigs := make([]*rig, shards)
	// Shards 0 and 1 have daemons; shard 2's daemon is down at first.
	for k := range 2 {
		rigs[k] = newRig(t, state, parts[k], campaigns.EngineConfig{Owner: "node-" + string(rune('a'+k)), Shard: k, Shards: shards})
		if err := rigs[k].engine.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	b := `{"id":"fleet","segment":"all","channels":["sms","apns"],"content":{"sms":{"body":"Hi"},"push":{"title":"t","body":"b"}}}`
	if _, _, err := rigs[0].engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	tick := func(k int) {
		if err := rigs[k].engine.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tick(1) // shard 1's daemon notices the campaign on its next tick
	var st campaigns.CampaignStatus
	channelstest.Eventually(t, 30*time.Second, func() bool {
		var err error
		st, err = rigs[0].engine.Get(context.Background(), "fleet")
		return err == nil && len(st.Shards) == shards && st.Shards[0].State == "completed" && st.Shards[1].State == "completed"
	}, "shards 0 and 1 never completed their parts")
	if st.Status != campaigns.StatusRunning || st.Shards[2].State != "waiting" {
		t.Fatalf("with shard 2's daemon down: status %s, shards %+v; want running with shard 2 waiting", st.Status, st.Shards)
	}

	// A standby daemon for shard 2 comes up and runs only shard 2's part.
	rigs[2] = newRig(t, state, parts[2], campaigns.EngineConfig{Owner: "node-c-standby", Shard: 2, Shards: shards})
	if err := rigs[2].engine.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = waitStatus(t, rigs[0].engine, "fleet", campaigns.StatusCompleted)

	for _, ch := range []string{channels.SMS, channels.APNs} {
		seen := map[string]int{}
		for k := range shards {
			for _, key := range rigs[k].keys(ch) {
				seen[key]++
			}
		}
		want := 0
		for i := range all.members {
			want += map[string]int{channels.SMS: min(1, len(all.members[i].Phone)), channels.APNs: len(all.members[i].APNs)}[ch]
		}
		if len(seen) != want {
			t.Fatalf("%s: %d distinct messages over the fleet, want %d", ch, len(seen), want)
		}
		for key, n := range seen {
			if n != 1 {
				t.Fatalf("%s: %s sent %d times", ch, key, n)
			}
		}
		if st.Counts[ch]["sent"] != int64(want) {
			t.Fatalf("%s: counted sent %d, want %d (counts %v)", ch, st.Counts[ch]["sent"], want, st.Counts[ch])
		}
	}
	for k, sp := range st.Shards {
		if sp.State != "completed" || sp.Shard != k {
			t.Fatalf("shard %d: %+v", k, sp)
		}
	}
}

// TestFleetPauseReachesEveryDaemon: a pause through one daemon stops the
// other daemons' parts at their next tick; a resume through any daemon lets
// every part finish.
func TestFleetPauseReachesEveryDaemon(t *testing.T) {
	const shards = 2
	state := memstate.New()
	parts := partition(newSource(2000), shards)
	rigs := make([]*rig, shards)
	for k := range rigs {
		// A short drain: the pause must not wait for the sends held below.
		rigs[k] = newRig(t, state, parts[k], campaigns.EngineConfig{Owner: "node-" + string(rune('a'+k)), Shard: k, Shards: shards, BatchSize: 100,
			DrainTimeout: 100 * time.Millisecond})
	}
	gate := make(chan struct{})
	for k := range rigs {
		rigs[k].chans[channels.SMS].OnSend(func([]*channels.Message) { <-gate })
	}
	b := `{"id":"pausable","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
	if _, _, err := rigs[0].engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	if err := rigs[1].engine.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 10*time.Second, func() bool { return len(rigs[1].engine.Running()) == 1 }, "shard 1 never started")
	if _, err := rigs[0].engine.Pause(context.Background(), "pausable"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if err := rigs[1].engine.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rigs[1].engine.Running(); len(got) != 0 {
		t.Fatalf("shard 1 still runs %v after the pause", got)
	}
	if _, err := rigs[1].engine.Resume(context.Background(), "pausable"); err != nil {
		t.Fatal(err)
	}
	if err := rigs[0].engine.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, rigs[0].engine, "pausable", campaigns.StatusCompleted)
	if total(st.Counts, channels.SMS) != 2000 {
		t.Fatalf("counts %v add up to %d, want 2000", st.Counts, total(st.Counts, channels.SMS))
	}
}

// TestFleetCampaignStaysOnItsRing: a campaign is pinned to the ring it
// first ran on; a daemon of another ring version (the fleet was resharded)
// does not run a part of it, so no user is reached twice through two rings.
func TestFleetCampaignStaysOnItsRing(t *testing.T) {
	state := memstate.New()
	parts := partition(newSource(300), 2)
	old := newRig(t, state, parts[0], campaigns.EngineConfig{Owner: "old", Shard: 0, Shards: 2, RingVersion: 1})
	gate := make(chan struct{})
	old.chans[channels.SMS].OnSend(func([]*channels.Message) { <-gate })
	defer close(gate)
	b := `{"id":"pinned","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
	if _, _, err := old.engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	resharded := newRig(t, state, parts[1], campaigns.EngineConfig{Owner: "new", Shard: 1, Shards: 3, RingVersion: 2})
	if err := resharded.engine.Tick(context.Background()); err != nil {
		t.Fatalf("tick on a daemon of another ring: %v", err)
	}
	if got := resharded.engine.Running(); len(got) != 0 {
		t.Fatalf("a daemon of ring 2:3 runs %v, pinned to ring 1:2", got)
	}
	st, err := resharded.engine.Get(context.Background(), "pinned")
	if err != nil {
		t.Fatal(err)
	}
	if st.Ring != "1:2" || len(st.Shards) != 2 {
		t.Fatalf("status ring %q with %d shards, want 1:2 with 2", st.Ring, len(st.Shards))
	}
}

// TestFleetRetryFailedReachesEveryShard: "retry failed" through one daemon
// re-sends the failed addresses of every shard, each by its own daemon, and
// the campaign completes once every part has run its retry pass.
func TestFleetRetryFailedReachesEveryShard(t *testing.T) {
	const shards = 2
	state := memstate.New()
	parts := partition(newSource(400), shards)
	rigs := make([]*rig, shards)
	outage := channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("provider down"))}
	var flaky []string
	for k := range rigs {
		rigs[k] = newRig(t, state, parts[k], campaigns.EngineConfig{Owner: "node-" + string(rune('a'+k)), Shard: k, Shards: shards})
		for _, m := range parts[k].members[1:3] { // two failing phones per shard
			rigs[k].chans[channels.SMS].Script(m.Phone, outage)
			flaky = append(flaky, m.Phone)
		}
	}
	b := `{"id":"retry-fleet","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
	if _, _, err := rigs[0].engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	if err := rigs[1].engine.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, rigs[0].engine, "retry-fleet", campaigns.StatusCompleted)
	if st.Failures != 4 || st.Counts[channels.SMS][campaigns.ReasonRetriesExhausted] != 4 {
		t.Fatalf("want 4 retryable failures over both shards, got %d, counts %v", st.Failures, st.Counts[channels.SMS])
	}
	before := [shards]int{len(rigs[0].keys(channels.SMS)), len(rigs[1].keys(channels.SMS))}
	for k := range rigs {
		for _, p := range flaky {
			rigs[k].chans[channels.SMS].Script(p) // the provider recovers
		}
	}
	if _, err := rigs[0].engine.RetryFailed(context.Background(), "retry-fleet"); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 10*time.Second, func() bool {
		s, err := rigs[0].engine.Get(context.Background(), "retry-fleet")
		return err == nil && s.Shards[0].State == "completed"
	}, "shard 0's retry pass never finished")
	if s, _ := rigs[0].engine.Get(context.Background(), "retry-fleet"); s.Status != campaigns.StatusRunning {
		t.Fatalf("campaign %s before shard 1 ran its retry pass, want running", s.Status)
	}
	if err := rigs[1].engine.Tick(context.Background()); err != nil { // shard 1's daemon picks it up
		t.Fatal(err)
	}
	st = waitStatus(t, rigs[0].engine, "retry-fleet", campaigns.StatusCompleted)
	for k := range rigs {
		if got := len(rigs[k].keys(channels.SMS)) - before[k]; got != 2 {
			t.Fatalf("shard %d re-sent %d texts, want its 2 failed ones", k, got)
		}
	}
	if st.Failures != 0 || st.Counts[channels.SMS][campaigns.ReasonRetriesExhausted] != 0 || total(st.Counts, channels.SMS) != 400 {
		t.Fatalf("after the retry: failures %d, counts %v", st.Failures, st.Counts[channels.SMS])
	}
}

// byRing splits a source by the Jump ring of n shards, as the store does.
func byRing(all *source, n int) []*source {
	out := make([]*source, n)
	for k := range out {
		out[k] = &source{corrupt: map[uint64]bool{}}
	}
	for _, m := range all.members {
		k := shard.ShardOf(m.Key, n)
		out[k].members = append(out[k].members, m)
	}
	return out
}

// TestFleetReshardMidCampaign: the fleet grows from 2 to 3 shards while a
// campaign runs. The campaign stays pinned to its ring; the daemons of the
// new ring that keep their old-ring shard (Retained) finish the old parts
// over the old members, so every member is reached exactly once — users who
// moved to the new shard too — and a campaign created after the reshard
// runs on the new ring.
func TestFleetReshardMidCampaign(t *testing.T) {
	state := memstate.New()
	all := newSource(3000)
	oldParts, newParts := byRing(all, 2), byRing(all, 3)
	var oldRigs []*rig
	gate := make(chan struct{})
	var oldSent atomic.Int64 // past 300, the old ring slows down, so that the reshard falls mid-campaign
	for k := range 2 {
		r := newRig(t, state, oldParts[k], campaigns.EngineConfig{Owner: "old-" + strconv.Itoa(k), Shard: k, Shards: 2, RingVersion: 1,
			BatchSize: 100, DrainTimeout: 100 * time.Millisecond})
		r.chans[channels.SMS].OnSend(func(batch []*channels.Message) { // held until the test lets it go
			<-gate
			if oldSent.Add(int64(len(batch))) > 300 {
				time.Sleep(20 * time.Millisecond)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, m := range batch {
				r.sent[channels.SMS] = append(r.sent[channels.SMS], m.IdempotencyKey)
			}
		})
		oldRigs = append(oldRigs, r)
	}
	b := `{"id":"before","segment":"all","channels":["sms"],"content":{"sms":{"body":"Hi"}}}`
	if _, _, err := oldRigs[0].engine.Create(context.Background(), []byte(b)); err != nil {
		t.Fatal(err)
	}
	if err := oldRigs[1].engine.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	channelstest.Eventually(t, 10*time.Second, func() bool { return len(oldRigs[1].engine.Running()) == 1 }, "old shard 1 never started")
	// The old ring sends a while, then the reshard: the old daemons stop
	// (their runs stay running, to resume)...
	close(gate)
	channelstest.Eventually(t, 10*time.Second, func() bool {
		return len(oldRigs[0].keys(channels.SMS))+len(oldRigs[1].keys(channels.SMS)) >= 300
	}, "the old ring never sent")
	for _, r := range oldRigs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = r.engine.Close(ctx)
		cancel()
	}
	// ...and the new ring's daemons start, 0 and 1 keeping their old shard.
	var newRigs []*rig
	for k := range 3 {
		cfg := campaigns.EngineConfig{Owner: "new-" + strconv.Itoa(k), Shard: k, Shards: 3, RingVersion: 2, BatchSize: 100}
		if k < 2 {
			cfg.Retained = []campaigns.RingPart{{Version: 1, Shard: k, Shards: 2, Source: oldParts[k]}}
		}
		r := newRig(t, state, newParts[k], cfg)
		if err := r.engine.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		newRigs = append(newRigs, r)
	}
	st := waitStatus(t, newRigs[0].engine, "before", campaigns.StatusCompleted)
	if st.Ring != "1:2" {
		t.Fatalf("campaign ring %q, want 1:2 (pinned before the reshard)", st.Ring)
	}
	seen := map[string]int{}
	for _, r := range append(oldRigs, newRigs...) {
		for _, k := range r.keys(channels.SMS) {
			seen[k]++
		}
	}
	want := 0
	for i := range all.members {
		if all.members[i].Phone != "" {
			want++
		}
	}
	if len(seen) != want {
		t.Fatalf("reached %d phones, want %d", len(seen), want)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s sent %d times", k, n)
		}
	}
	if got := newRigs[2].keys(channels.SMS); len(got) != 0 {
		t.Fatalf("the new shard 2 sent %d texts of a campaign of the old ring", len(got))
	}
	byOld := len(oldRigs[0].keys(channels.SMS)) + len(oldRigs[1].keys(channels.SMS))
	t.Logf("before the reshard %d texts, after it %d, of %d", byOld, want-byOld, want)
	if byOld == 0 || byOld == want {
		t.Fatalf("the reshard did not fall mid-campaign (%d of %d sent before it)", byOld, want)
	}
	// A campaign created after the reshard runs on the new ring, all three shards.
	if _, _, err := newRigs[2].engine.Create(context.Background(), []byte(strings.Replace(b, `"before"`, `"after"`, 1))); err != nil {
		t.Fatal(err)
	}
	for _, r := range newRigs[:2] {
		if err := r.engine.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	st = waitStatus(t, newRigs[0].engine, "after", campaigns.StatusCompleted)
	if st.Ring != "2:3" || len(st.Shards) != 3 || st.Counts[channels.SMS]["sent"] != int64(want) {
		t.Fatalf("after the reshard: ring %q, shards %d, sent %d (want 2:3, 3, %d)", st.Ring, len(st.Shards), st.Counts[channels.SMS]["sent"], want)
	}
}

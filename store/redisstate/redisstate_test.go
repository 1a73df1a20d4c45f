package redisstate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/statetest"
)

// redisOptions reads REDIS_URL, or skips: these tests need a real server.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	u := os.Getenv("REDIS_URL")
	if u == "" {
		tb.Skip("REDIS_URL is not set: skipping the tests against a real Redis (CI sets it; locally e.g. REDIS_URL=redis://127.0.0.1:6379/15)")
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		tb.Fatalf("parse REDIS_URL: %v", err)
	}
	return opt
}

func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(redisOptions(tb))
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("ping redis at REDIS_URL: %v", err)
	}
	return c
}

// newClusterClient connects to the Redis Cluster named by
// REDIS_CLUSTER_ADDRS (host:port,...), or skips: .ci/run starts one with
// .ci/redis-cluster.sh.
func newClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		tb.Skip("REDIS_CLUSTER_ADDRS is not set: skipping the tests against a Redis Cluster (CI sets it; locally start one with .ci/redis-cluster.sh start DIR)")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.Ping(ctx).Err() }); err != nil {
		tb.Fatalf("ping every master of REDIS_CLUSTER_ADDRS: %v", err)
	}
	return c
}

// onEachBackend runs test on one node (REDIS_URL) and on a cluster
// (REDIS_CLUSTER_ADDRS), each skipped when its variable is unset.
func onEachBackend(t *testing.T, test func(t *testing.T, c redis.UniversalClient)) {
	t.Run("node", func(t *testing.T) { test(t, newClient(t)) })
	t.Run("cluster", func(t *testing.T) { test(t, newClusterClient(t)) })
}

// deletePrefix deletes every key under prefix: on a cluster, master by
// master and key by key (the keys of one UNLINK must share a slot).
func deletePrefix(ctx context.Context, c redis.UniversalClient, prefix string) {
	del := func(ctx context.Context, n redis.UniversalClient) error {
		iter := n.Scan(ctx, 0, prefix+"*", 5000).Iterator()
		pipe := n.Pipeline()
		for iter.Next(ctx) {
			pipe.Unlink(ctx, iter.Val())
		}
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return del(ctx, n) })
		return
	}
	_ = del(ctx, c)
}

// uniquePrefix gives each test its own key space and deletes it afterwards,
// so tests can share a Redis (and run beside other users of it).
func uniquePrefix(tb testing.TB, c redis.UniversalClient) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "notifyd-test:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		deletePrefix(ctx, c, p)
	})
	return p
}

func newStore(tb testing.TB, c redis.UniversalClient, opts ...redisstate.Option) (*redisstate.Store, string) {
	tb.Helper()
	p := uniquePrefix(tb, c)
	s, err := redisstate.New(c, append([]redisstate.Option{redisstate.WithPrefix(p)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return s, p
}

func contract(t *testing.T, c redis.UniversalClient, opts ...redisstate.Option) {
	statetest.Run(t, func(t *testing.T) statetest.Impl {
		s, _ := newStore(t, c, opts...)
		return statetest.Impl{
			Dedup:      func(owner string) campaigns.DedupLog { return s.Dedup(owner) },
			Progress:   s,
			Campaigns:  s,
			Intake:     s,
			Delays:     s.Delays(),
			Caps:       s.Caps(),
			Engagement: s,
			Lease:      300 * time.Millisecond,
		}
	})
}

func TestContract(t *testing.T) { contract(t, newClient(t)) }

// The per-user script grouping a Redis Cluster needs, exercised on one node.
func TestContractClusterScripts(t *testing.T) {
	contract(t, newClient(t), redisstate.WithClusterScripts())
}

// The contract on a real Redis Cluster (REDIS_CLUSTER_ADDRS): every script
// and MULTI must keep to one slot, or the cluster answers CROSSSLOT.
func TestContractCluster(t *testing.T) { contract(t, newClusterClient(t)) }

func TestNewRejectsBadOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, tc := range []struct {
		name string
		opt  redisstate.Option
	}{
		{"brace in prefix", redisstate.WithPrefix("app{x}:")},
		{"empty group", redisstate.WithGroup("")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := redisstate.New(c, tc.opt); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// ---- Redis unavailable ----

// proxy forwards loopback TCP to Redis until Close, which drops every
// connection at once: "Redis went away mid-campaign".
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(out, in); _ = out.Close() })
			p.wg.Go(func() { _, _ = io.Copy(in, out); _ = in.Close() })
		}
	})
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func TestRedisOutageSurfacesAndMarksNothingSent(t *testing.T) {
	ctx := context.Background()
	direct := newClient(t)
	opt := redisOptions(t)
	px := startProxy(t, opt.Addr)
	viaProxy := *opt
	viaProxy.Addr = px.ln.Addr().String()
	viaProxy.MaxRetries = -1 // surface the outage at once; the pipeline decides how to wait
	viaProxy.DialTimeout = 200 * time.Millisecond
	viaProxy.DialerRetries = 1
	flaky := redis.NewClient(&viaProxy)
	defer flaky.Close()

	prefix := uniquePrefix(t, direct)
	s, err := redisstate.New(flaky, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	keys := []campaigns.DedupKey{{Scope: "f:x", User: 1, Channel: "sms"}, {Scope: "f:x", User: 2, Channel: "sms"}}
	d := s.Dedup("a")
	got, err := d.Claim(ctx, keys, time.Hour, time.Hour)
	if err != nil || got[0] != campaigns.Claimed {
		t.Fatalf("claim before the outage: %v %v", got, err)
	}
	r, err := s.Acquire(ctx, "c1", "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.ClaimBatch(ctx, r.Lease, 1, 100, 10)
	if err != nil {
		t.Fatal(err)
	}

	px.Close() // Redis is gone for this daemon.

	done := campaigns.NewBitmap(10)
	for i := range 10 {
		done.Set(i)
	}
	for _, tc := range []struct {
		name, verb string
		call       func() error
	}{
		{"confirm", "confirm dedup keys", func() error { return d.Confirm(ctx, keys, time.Hour) }},
		{"claim", "claim dedup keys", func() error { _, err := d.Claim(ctx, keys, time.Hour, time.Hour); return err }},
		{"release", "release dedup keys", func() error { return d.Release(ctx, keys) }},
		{"report", "report batch", func() error {
			_, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Confirmed: done, Done: done, Final: true,
				Counts: []campaigns.Count{{Channel: "sms", Reason: "sent", N: 10}}})
			return err
		}},
		{"renew", "renew campaign lease", func() error { return s.Renew(ctx, r.Lease, time.Hour) }},
		{"acquire", "acquire campaign", func() error { _, err := s.Acquire(ctx, "c2", "a", time.Hour); return err }},
		{"progress", "read progress", func() error { _, err := s.Progress(ctx, "c1"); return err }},
		{"create", "create campaign", func() error { _, _, err := s.Create(ctx, "c1", []byte(`{}`)); return err }},
		{"enqueue", "enqueue intake request", func() error { _, err := s.Enqueue(ctx, []byte("x")); return err }},
		{"read", "read intake", func() error { _, err := s.Read(ctx, "d", 1, 0); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("no error while Redis is unreachable")
			}
			var se campaigns.StateError
			if errors.As(err, &se) {
				t.Fatalf("an outage reads as a state answer: %v", err)
			}
			if !strings.HasPrefix(err.Error(), tc.verb) {
				t.Fatalf("error %q does not start with %q", err, tc.verb)
			}
		})
	}

	// Seen from a healthy connection, nothing was marked sent.
	healthy, err := redisstate.New(direct, redisstate.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	got, err = healthy.Dedup("b").Claim(ctx, keys, time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range got {
		if st != campaigns.Held {
			t.Fatalf("key %d after the failed confirm = %v, want held (claimed, never confirmed)", i, st)
		}
	}
	p, err := healthy.Progress(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Checkpoint.Valid || len(p.Counts) != 0 {
		t.Fatalf("progress after the failed report = %+v", p)
	}
}

// ---- key layout (docs/redis-keys.md) ----

func TestKeyLayout(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s, prefix := newStore(t, c)
	d := s.Dedup("daemon-1")
	keys := []campaigns.DedupKey{{Scope: "f:welcome", User: 0xabc, Channel: "email"}, {Scope: "k:order-1", User: 7, Channel: ""}}
	if _, err := d.Claim(ctx, keys, time.Minute, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := d.Confirm(ctx, keys[:1], time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, "spring", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Acquire(ctx, "spring", "daemon-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.ClaimBatch(ctx, r.Lease, 1, 9, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReportBatch(ctx, r.Lease, campaigns.BatchReport{Seq: seq, Dispatched: campaigns.Bitmap{0xe0},
		Counts: []campaigns.Count{{Channel: "email", Reason: "sent", N: 1}}, Failures: []campaigns.Failure{{User: 2, Channel: "sms", Reason: "network"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, []byte("req")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Epoch(ctx); err != nil {
		t.Fatal(err)
	}

	want := map[string]struct {
		typ string
		ttl bool
	}{
		"d:{u:abc}:f:welcome:email": {"string", true},
		"d:{u:7}:k:order-1:":        {"string", true},
		"c:{c:spring}:rec":          {"hash", false},
		"c:{c:spring}:lease":        {"string", true},
		"c:{c:spring}:prog":         {"hash", false},
		"c:{c:spring}:bat":          {"hash", false},
		"c:{c:spring}:cnt":          {"hash", false},
		"c:{c:spring}:fail":         {"zset", false},
		"campaigns":                 {"zset", false},
		"intake":                    {"stream", false},
	}
	for _, tag := range []string{"e0", "e22", "e62", "e40", "e1", "e23", "e63", "e41", "e2", "e20", "e60", "e42", "e3", "e21", "e61", "e43"} {
		want["epoch{"+tag+"}"] = struct {
			typ string
			ttl bool
		}{"string", false}
	}
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	seen := map[string]bool{}
	tagged := regexp.MustCompile(`^(d:\{u:[0-9a-f]+\}:|c:\{c:[^}]+\}:)`)
	for iter.Next(ctx) {
		k := strings.TrimPrefix(iter.Val(), prefix)
		seen[k] = true
		w, ok := want[k]
		if !ok {
			t.Errorf("undocumented key %q", k)
			continue
		}
		if k != "campaigns" && k != "intake" && !strings.HasPrefix(k, "epoch{") && !tagged.MatchString(k) {
			t.Errorf("key %q carries no user or campaign hash tag", k)
		}
		typ, err := c.Type(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		ttl, err := c.PTTL(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if typ != w.typ || (ttl > 0) != w.ttl {
			t.Errorf("key %q: type %s ttl %v, want %s with ttl=%v", k, typ, ttl, w.typ, w.ttl)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("documented key %q was not written", k)
		}
	}
	// The compact value forms of docs/redis-keys.md.
	if v, _ := c.Get(ctx, prefix+"d:{u:abc}:f:welcome:email").Result(); v != "C" {
		t.Errorf("confirmed value = %q, want C", v)
	}
	if v, _ := c.Get(ctx, prefix+"d:{u:7}:k:order-1:").Result(); !regexp.MustCompile(`^L\d+:daemon-1$`).MatchString(v) {
		t.Errorf("leased value = %q, want L<ms>:<owner>", v)
	}
}

// TestRestoreAfterEmptyRedis is a Redis that came back empty: the epoch
// marker is gone, and what the lease holder knew is written back so that its
// next flush lands and nothing it recorded is lost.
func TestRestoreAfterEmptyRedis(t *testing.T) { onEachBackend(t, testRestoreAfterEmptyRedis) }

func testRestoreAfterEmptyRedis(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	s, prefix := newStore(t, c)
	e1, created, err := s.Epoch(ctx)
	if err != nil || !created || e1 == "" {
		t.Fatalf("first epoch: %q created=%v %v", e1, created, err)
	}
	if e, created, err := s.Epoch(ctx); err != nil || created || e != e1 {
		t.Fatalf("second look: %q created=%v %v", e, created, err)
	}
	def := []byte(`{"id":"spring","segment":"all"}`)
	rec, _, err := s.Create(ctx, "spring", def)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err = s.Transition(ctx, "spring", campaigns.StatusScheduled, campaigns.StatusRunning); err != nil {
		t.Fatal(err)
	}
	r, err := s.Acquire(ctx, "spring", "daemon-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := s.ClaimBatch(ctx, r.Lease, 1, 9, 16)
	b2, err := s.ClaimBatch(ctx, r.Lease, 10, 19, 16)
	if err != nil {
		t.Fatal(err)
	}
	sent := []campaigns.Count{{Channel: "sms", Reason: "sent", N: 16}}
	if _, err := s.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{
		{Seq: b1, Dispatched: campaigns.Bitmap{0xff, 0xff}, Done: campaigns.Bitmap{0xff, 0xff}, Confirmed: campaigns.Bitmap{0xff, 0xff}, Counts: sent, Final: true},
		{Seq: b2, Dispatched: campaigns.Bitmap{0xf0, 0}, Done: campaigns.Bitmap{0xc0, 0}, Confirmed: campaigns.Bitmap{0xc0, 0},
			Counts: []campaigns.Count{{Channel: "sms", Reason: "sent", N: 2}}},
	}}); err != nil {
		t.Fatal(err)
	}
	snap := campaigns.CampaignSnapshot{
		Record: rec, Lease: r.Lease, Flush: 1, Checkpoint: campaigns.Checkpoint{Seq: b1, Key: 9, Valid: true},
		LastClaimed: 19, HasClaimed: true, Seq: b2,
		Open:   []campaigns.Batch{{Seq: b2, First: 10, Last: 19, Slots: 16, Token: r.Lease.Token, Dispatched: campaigns.Bitmap{0xf0, 0}, Confirmed: campaigns.Bitmap{0xc0, 0}, Done: campaigns.Bitmap{0xc0, 0}}},
		Counts: []campaigns.Count{{Channel: "sms", Reason: "sent", N: 18}},
	}
	if ok, err := s.Restore(ctx, snap, time.Minute); err != nil || ok {
		t.Fatalf("restore over live state: restored=%v %v, want refused", ok, err)
	}

	// Redis restarts empty.
	deletePrefix(ctx, c, prefix)
	if _, err := s.Record(ctx, r.Lease, campaigns.Flush{ID: 2, Reports: []campaigns.BatchReport{{Seq: b2, Done: campaigns.Bitmap{0xf0, 0}}}}); !errors.Is(err, campaigns.ErrLeaseLost) {
		t.Fatalf("flush on an empty Redis: %v, want lease lost", err)
	}
	if e, created, err := s.Epoch(ctx); err != nil || !created || e == e1 {
		t.Fatalf("epoch after the loss: %q created=%v %v", e, created, err)
	}
	if ok, err := s.Restore(ctx, snap, time.Minute); err != nil || !ok {
		t.Fatalf("restore: restored=%v %v", ok, err)
	}
	got, err := s.Get(ctx, "spring")
	if err != nil || got.Status != campaigns.StatusRunning || string(got.Definition) != string(def) {
		t.Fatalf("restored record %+v %v", got, err)
	}
	if list, err := s.List(ctx, "", 10); err != nil || len(list) != 1 {
		t.Fatalf("restored index: %v %v", list, err)
	}
	if _, err := s.Acquire(ctx, "spring", "daemon-2", time.Minute); !errors.Is(err, campaigns.ErrHeld) {
		t.Fatalf("another owner during the restored lease: %v, want held", err)
	}
	// The flush that failed is sent again and lands; a replay of flush 1 does not.
	if _, err := s.Record(ctx, r.Lease, campaigns.Flush{ID: 1, Reports: []campaigns.BatchReport{{Seq: b2, Counts: sent}}}); err != nil {
		t.Fatal(err)
	}
	cp, err := s.Record(ctx, r.Lease, campaigns.Flush{ID: 2, Reports: []campaigns.BatchReport{{Seq: b2, Base: 0,
		Dispatched: campaigns.Bitmap{0xff, 0xff}, Done: campaigns.Bitmap{0xff, 0xff}, Confirmed: campaigns.Bitmap{0xff, 0xff},
		Counts: []campaigns.Count{{Channel: "sms", Reason: "sent", N: 14}}, Final: true}}})
	if err != nil || !cp.Valid || cp.Key != 19 {
		t.Fatalf("flush after restore: %+v %v", cp, err)
	}
	p, err := s.Progress(ctx, "spring")
	if err != nil || !slices.Equal(p.Counts, []campaigns.Count{{Channel: "sms", Reason: "sent", N: 32}}) {
		t.Fatalf("progress after restore: %+v %v", p, err)
	}
}

// TestEpochNoticesOneMasterLost: the epoch marker is spread over the
// cluster's slots, so losing the keys of one slot range (a master restarted
// empty while the others kept their data) changes the epoch.
func TestEpochNoticesOneMasterLost(t *testing.T) { onEachBackend(t, testEpochNoticesOneMasterLost) }

func testEpochNoticesOneMasterLost(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	s, prefix := newStore(t, c)
	e1, created, err := s.Epoch(ctx)
	if err != nil || !created {
		t.Fatalf("first epoch: %q created=%v %v", e1, created, err)
	}
	if e, created, err := s.Epoch(ctx); err != nil || created || e != e1 {
		t.Fatalf("second look: %q created=%v %v, want %q unchanged", e, created, err, e1)
	}
	keys := epochKeysOf(t, c, prefix)
	if len(keys) != 16 {
		t.Fatalf("epoch keys %v, want 16", keys)
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		// Each marker sits in its own sixteenth of the slots, so every master
		// owning more than ~1,024 contiguous slots holds one.
		for _, k := range keys {
			slot, err := cc.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			tag := k[strings.Index(k, "{")+1 : len(k)-1]
			i := slices.Index([]string{"e0", "e22", "e62", "e40", "e1", "e23", "e63", "e41", "e2", "e20", "e60", "e42", "e3", "e21", "e61", "e43"}, tag)
			if i < 0 || slot < int64(i)*1024 || slot >= int64(i+1)*1024 {
				t.Errorf("marker %s is in slot %d, want sixteenth %d", k, slot, i)
			}
		}
	}
	// One slot range loses its data: the last sixteenth.
	if err := c.Del(ctx, keys[len(keys)-1]).Err(); err != nil {
		t.Fatal(err)
	}
	e2, created, err := s.Epoch(ctx)
	if err != nil || !created || e2 == e1 {
		t.Fatalf("after one marker was lost: %q created=%v %v, want a new epoch", e2, created, err)
	}
	if e, created, err := s.Epoch(ctx); err != nil || created || e != e2 {
		t.Fatalf("look after the loss: %q created=%v %v, want %q", e, created, err, e2)
	}
}

// epochKeysOf lists the epoch marker keys under prefix.
func epochKeysOf(t *testing.T, c redis.UniversalClient, prefix string) []string {
	t.Helper()
	var out []string
	scan := func(ctx context.Context, n redis.UniversalClient) error {
		iter := n.Scan(ctx, 0, prefix+"epoch*", 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
		}
		return iter.Err()
	}
	ctx := context.Background()
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, n)
		})
	} else {
		err = scan(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestRestoreCompletedPart: a fleet part completed before the store lost it
// is written back as done and without a lease: nobody runs it again.
func TestRestoreCompletedPart(t *testing.T) { onEachBackend(t, testRestoreCompletedPart) }

func testRestoreCompletedPart(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	s, prefix := newStore(t, c)
	def := []byte(`{"id":"fleet","segment":"all"}`)
	rec, _, err := s.Create(ctx, "fleet", def)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err = s.Transition(ctx, "fleet", campaigns.StatusScheduled, campaigns.StatusRunning); err != nil {
		t.Fatal(err)
	}
	r, err := s.Acquire(ctx, "fleet/s0", "daemon-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	counts := []campaigns.Count{{Channel: "sms", Reason: "sent", N: 7}}
	snap := campaigns.CampaignSnapshot{Record: rec, Lease: r.Lease, Seq: 3, Counts: counts, Completed: true,
		Failures: []campaigns.Failure{{User: 5, Channel: "sms", Reason: "network"}}}
	deletePrefix(ctx, c, prefix)
	if ok, err := s.Restore(ctx, snap, 0); err != nil || !ok {
		t.Fatalf("restore completed part: restored=%v %v", ok, err)
	}
	p, err := s.Progress(ctx, "fleet/s0")
	if err != nil || !p.Completed || p.Owner != "" || p.Failures != 1 || !slices.Equal(p.Counts, counts) {
		t.Fatalf("restored part: %+v %v; want completed, no owner, 1 failure, counts %v", p, err, counts)
	}
	if got, err := s.Get(ctx, "fleet"); err != nil || got.Status != campaigns.StatusRunning {
		t.Fatalf("restored record: %+v %v", got, err)
	}
	if ok, err := s.Restore(ctx, snap, 0); err != nil || ok {
		t.Fatalf("second restore: restored=%v %v, want left alone", ok, err)
	}
}

// In cluster mode a claim is a plain SET whose lease end is computed here,
// from the local clock corrected by the server's (TIME). A daemon whose clock
// is an hour off must still write a lease that ends on the server's clock:
// an hour late would hold a dead daemon's messages for an hour, an hour early
// would let another daemon take a live lease as in doubt and send it again.
func TestClusterClaimLeaseEndsOnServerClock(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		for _, tc := range []struct {
			name string
			skew time.Duration
		}{{"local clock an hour ahead", time.Hour}, {"local clock an hour behind", -time.Hour}, {"clocks agree", 0}} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				skewed := func() time.Time { return time.Now().Add(tc.skew) }
				s, prefix := newStore(t, c, redisstate.WithClusterScripts(), redisstate.WithClock(skewed))
				const lease = 400 * time.Millisecond
				key := []campaigns.DedupKey{{Scope: "f:clock", User: 0xbeef, Channel: "sms"}}
				got, err := s.Dedup("a").Claim(ctx, key, lease, time.Hour)
				if err != nil || got[0] != campaigns.Claimed {
					t.Fatalf("first claim: %v %v, want claimed", got, err)
				}
				server, err := c.Time(ctx).Result()
				if err != nil {
					t.Fatal(err)
				}
				v, err := c.Get(ctx, prefix+"d:{u:beef}:f:clock:sms").Result()
				if err != nil {
					t.Fatal(err)
				}
				end, err := strconv.ParseInt(strings.TrimPrefix(strings.SplitN(v, ":", 2)[0], "L"), 10, 64)
				if err != nil || !strings.HasSuffix(v, ":a") {
					t.Fatalf("lease value %q: want L<end ms>:a (%v)", v, err)
				}
				if off := time.Duration(end-server.Add(lease).UnixMilli()) * time.Millisecond; off < -250*time.Millisecond || off > 250*time.Millisecond {
					t.Fatalf("lease ends %v from the server's now+lease; want within 250ms", off)
				}
				// Another owner sees the live lease held, then in doubt once it ends.
				if got, err := s.Dedup("b").Claim(ctx, key, time.Minute, time.Hour); err != nil || got[0] != campaigns.Held {
					t.Fatalf("claim during the lease: %v %v, want held", got, err)
				}
				time.Sleep(lease + 200*time.Millisecond)
				if got, err := s.Dedup("b").Claim(ctx, key, time.Minute, time.Hour); err != nil || got[0] != campaigns.InDoubt {
					t.Fatalf("claim after the lease: %v %v, want in doubt", got, err)
				}
			})
		}
	})
}

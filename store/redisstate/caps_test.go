package redisstate_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
)

// serverMS is the Redis server's clock, the one the cap script uses.
func serverMS(t *testing.T, c redis.UniversalClient, user uint64) int64 {
	t.Helper()
	ctx := context.Background()
	var now time.Time
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		// the node that holds the user's cap hashes
		var n *redis.Client
		n, err = cc.MasterForKey(ctx, fmt.Sprintf("{g%d}", user>>58))
		if err == nil {
			now, err = n.Time(ctx).Result()
		}
	} else {
		now, err = c.Time(ctx).Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	return now.UnixMilli()
}

// capHashKey is the hash holding user's group under an "all" rule of
// window ms in generation gen (docs/redis-keys.md), with the default 16
// group bits.
func capHashKey(prefix string, user uint64, window, gen int64) string {
	return prefix + "capg:{g" + strconv.FormatUint(user>>58, 10) + "}:all:" + strconv.FormatInt(window, 10) + ":16:" + strconv.FormatInt(gen%2, 10)
}

// capField is user's group field with the default 16 group bits.
func capField(user uint64) string {
	return string(binary.BigEndian.AppendUint32(nil, uint32(user>>48)))
}

// capSegment is a value's segment: admitted at ms, with a record per user
// of their messages' 6-byte hashes.
func capSegment(ms int64, users []uint64, hashes [][]string) string {
	var recs []byte
	for i, u := range users {
		recs = binary.BigEndian.AppendUint64(recs, u)
		recs = binary.BigEndian.AppendUint16(recs, uint16(len(hashes[i])))
		for _, h := range hashes[i] {
			recs = append(recs, h...)
		}
	}
	seg := binary.BigEndian.AppendUint64(nil, uint64(ms))[2:]
	seg = binary.BigEndian.AppendUint32(seg, uint32(len(recs)))
	return string(append(seg, recs...))
}

// msgHash is the 6-byte hash of a message on a channel (capHash).
// admitOne admits a single request (not a dry run) and fails the test on error.
func admitOne(t *testing.T, caps *redisstate.Caps, rules []campaigns.CapRule, req campaigns.CapRequest) bool {
	t.Helper()
	ok, err := caps.Admit(context.Background(), []campaigns.CapRequest{req}, rules, false)
	if err != nil {
		t.Fatal(err)
	}
	return ok[0]
}

func msgHash(msg, channel string) string {
	h := fnv.New64a()
	h.Write([]byte(msg + "\x00" + channel))
	return string(binary.BigEndian.AppendUint64(nil, h.Sum64())[:6])
}

// The cap hashes rotate per window-long generation; a message admitted
// late in one generation must still count early in the next.
func TestCapsWindowSpansGenerations(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		s, prefix := newStore(t, c)
		caps := s.Caps()
		const window = 1000
		rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(window * time.Millisecond)}}
		const user = 77
		admit := func(msg string) bool {
			t.Helper()
			return admitOne(t, caps, rules, campaigns.CapRequest{User: user, Channel: "email", Msg: msg})
		}
		// Start late in a generation: 750–900 ms into it.
		for {
			if at := serverMS(t, c, user) % window; at >= 750 && at < 900 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		start := serverMS(t, c, user)
		if !admit("a") {
			t.Fatal("a: capped on an empty state")
		}
		gen := start / window
		for serverMS(t, c, user)/window == gen {
			time.Sleep(20 * time.Millisecond)
		}
		if admit("b") {
			t.Fatal("b: admitted in the next generation while a is within the window")
		}
		if !admit("a") {
			t.Fatal("a again: capped, want admitted (already counted)")
		}
		if now := serverMS(t, c, user); now-start >= window {
			t.Skipf("the checks took %d ms, past the window: the machine is too slow for this test", now-start)
		}
		// Nothing moved: a was only read from the previous generation.
		if n, err := c.HExists(ctx, capHashKey(prefix, user, window, gen), capField(user)).Result(); err != nil || !n {
			t.Fatalf("the user's value left the previous generation's hash: %v %v", n, err)
		}
	})
}

// A hash of the same parity two generations back that has not expired yet
// must not be read as the current one.
func TestCapsIgnoreStaleGeneration(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		s, prefix := newStore(t, c)
		caps := s.Caps()
		const window = 3_600_000
		rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(window * time.Millisecond)}}
		const user = 5
		now := serverMS(t, c, user)
		gen := now / window
		// A value admitting a message now, but in generation gen-2's hash
		// (same parity as gen) and in gen-3's (same parity as gen-1).
		v := capSegment(now, []uint64{user}, [][]string{{"abcdef"}})
		for _, g := range []int64{gen - 2, gen - 3} {
			key := capHashKey(prefix, user, window, g)
			if err := c.HSet(ctx, key, "g", strconv.FormatInt(g, 10), capField(user), v).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if !admitOne(t, caps, rules, campaigns.CapRequest{User: user, Channel: "sms", Msg: "x"}) {
			t.Fatal("capped by a generation older than the window")
		}
		g, err := c.HGet(ctx, capHashKey(prefix, user, window, gen), "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.ParseInt(strings.TrimSpace(g), 10, 64); n != gen {
			t.Fatalf("the current hash says generation %q, want %d", g, gen)
		}
	})
}

// A bucket with more groups than one HMGET or HSET of the script takes
// (3,000 fields) is read and written in chunks.
func TestCapsBucketLargerThanAChunk(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, newClient(t), redisstate.WithCapGroupBits(20))
	caps := s.Caps()
	rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(time.Hour)}}
	const users = 7000
	var first, again []campaigns.CapRequest
	for u := range uint64(users) {
		user := u<<44 | 1 // a group each, all in bucket 0 (groups below 2^14)
		first = append(first, campaigns.CapRequest{User: user, Channel: "email", Msg: "a"})
		again = append(again, campaigns.CapRequest{User: user, Channel: "email", Msg: "a"}, campaigns.CapRequest{User: user, Channel: "sms", Msg: "b"})
	}
	ok, err := caps.Admit(ctx, first, rules, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range ok {
		if !v {
			t.Fatalf("user %d: capped on an empty state", i)
		}
	}
	ok, err = caps.Admit(ctx, again, rules, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range ok {
		if v != (i%2 == 0) {
			t.Fatalf("request %d: %v, want a admitted again and b capped for every user", i, v)
		}
	}
}

// The cap hash as docs/redis-keys.md describes it.
func TestCapKeyLayout(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	s, prefix := newStore(t, c)
	const window = 86_400_000
	rules := []campaigns.CapRule{{Channel: "sms", Limit: 2, Window: campaigns.Duration(window * time.Millisecond)}}
	const user = 0x1d23456789abcdef // bucket 0x1d23... >> 58 = 7, group 0x1d23
	before := serverMS(t, c, user)
	if _, err := s.Caps().Admit(ctx, []campaigns.CapRequest{{User: user, Channel: "sms", Msg: "spring"}}, rules, false); err != nil {
		t.Fatal(err)
	}
	after := serverMS(t, c, user)
	keys, err := c.Keys(ctx, prefix+"cap*").Result()
	if err != nil {
		t.Fatal(err)
	}
	gen := after / window
	want := prefix + "capg:{g7}:sms:86400000:16:" + strconv.FormatInt(gen%2, 10)
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("keys %q, want [%s]", keys, want)
	}
	if typ := c.Type(ctx, want).Val(); typ != "hash" {
		t.Errorf("type %s, want hash", typ)
	}
	if at := c.PExpireTime(ctx, want).Val(); at != time.Duration(gen+2)*window*time.Millisecond {
		t.Errorf("expires at %v, want the end of generation %d", at, gen+1)
	}
	all, err := c.HGetAll(ctx, want).Result()
	if err != nil {
		t.Fatal(err)
	}
	field := "\x00\x00\x1d\x23"
	if len(all) != 2 || strings.TrimSpace(all["g"]) != strconv.FormatInt(gen, 10) || len(all["g"]) != 65 {
		t.Fatalf("fields %q, want g (65 bytes) and the group %q", all, field)
	}
	v := all[field]
	if len(v) != 6+4+8+2+6 {
		t.Fatalf("value %x, want one segment of one user with one message", v)
	}
	at := int64(binary.BigEndian.Uint64(append([]byte{0, 0}, v[:6]...)))
	if at < before || at > after {
		t.Errorf("admitted at %d, want within [%d, %d]", at, before, after)
	}
	if got, want := v[6:], capSegment(at, []uint64{user}, [][]string{{msgHash("spring", "sms")}})[6:]; got != want {
		t.Errorf("segment %x, want %x", got, want)
	}

	// A later write to the generation's hash writes only its groups: g and
	// the expiry stay as the first write set them. A user of the same
	// group adds a segment to its value; one of the next group, a field.
	const other, next = user + 1, user + 1<<48
	if _, err := s.Caps().Admit(ctx, []campaigns.CapRequest{{User: other, Channel: "sms", Msg: "summer"}, {User: next, Channel: "sms", Msg: "fall"}}, rules, false); err != nil {
		t.Fatal(err)
	}
	if serverMS(t, c, user)/window != gen {
		t.Skip("the generation turned between the two admissions")
	}
	all, err = c.HGetAll(ctx, want).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || len(all["g"]) != 65 || strings.TrimSpace(all["g"]) != strconv.FormatInt(gen, 10) {
		t.Fatalf("after two more users: fields %q, want g (65 bytes, generation %d) and two groups", all, gen)
	}
	if v2 := all[field]; len(v2) != 2*26 || v2[:26] != v || v2[26+6:] != capSegment(0, []uint64{other}, [][]string{{msgHash("summer", "sms")}})[6:] {
		t.Errorf("the group's value after its second user: %x, want the first segment then %x's", v2, uint64(other))
	}
	if v3 := all["\x00\x00\x1d\x24"]; len(v3) != 26 || v3[6:] != capSegment(0, []uint64{next}, [][]string{{msgHash("fall", "sms")}})[6:] {
		t.Errorf("the next group's value: %x", v3)
	}
	if at := c.PExpireTime(ctx, want).Val(); at != time.Duration(gen+2)*window*time.Millisecond {
		t.Errorf("after more users: expires at %v, want the end of generation %d", at, gen+1)
	}
}

// Users of one group share a field, users on either side of a group's or
// a bucket's edge do not: each user's messages count for that user only,
// and a message another user of the group holds is not this user's.
func TestCapsGroupBoundaries(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		s, _ := newStore(t, c)
		caps := s.Caps()
		rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(time.Hour)}}
		const (
			last    = 5<<48 - 1  // the last key of group 4
			first   = 5 << 48    // the first of group 5
			mate    = 4<<48 + 7  // group 4, with last
			edge    = 1<<58 - 1  // the last key of bucket 0
			over    = 1 << 58    // the first of bucket 1
			topmost = ^uint64(0) // the last group of the last bucket
		)
		admit := func(reqs ...campaigns.CapRequest) string {
			t.Helper()
			ok, err := caps.Admit(ctx, reqs, rules, false)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(ok)
		}
		req := func(u uint64, msg string) campaigns.CapRequest {
			return campaigns.CapRequest{User: u, Channel: "email", Msg: msg}
		}
		if got := admit(req(last, "a"), req(first, "b"), req(edge, "e"), req(over, "f"), req(topmost, "g")); got != "[true true true true true]" {
			t.Fatalf("first messages: %s", got)
		}
		// mate is new, in last's group: its first message passes, and
		// last's message is not mate's to pass again uncounted.
		if got := admit(req(mate, "c")); got != "[true]" {
			t.Fatalf("a new user in a group with a capped one: %s", got)
		}
		if got := admit(req(mate, "a"), req(last, "c"), req(last, "a"), req(first, "a"), req(first, "b"), req(edge, "f"), req(over, "e"), req(over, "f"), req(topmost, "x")); got != "[false false true false true false false true false]" {
			t.Fatalf("second messages: %s, want each user's own message only admitted again", got)
		}
	})
}

// Two daemons admitting the users of one group at once never admit more
// than the limit per user: the script reads and writes the shared field
// atomically.
func TestCapsConcurrentSharedGroup(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		s1, prefix := newStore(t, c)
		var c2 redis.UniversalClient
		if _, ok := c.(*redis.ClusterClient); ok {
			c2 = newClusterClient(t)
		} else {
			c2 = newClient(t)
		}
		s2, err := redisstate.New(c2, redisstate.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		rules := []campaigns.CapRule{{Limit: 3, Window: campaigns.Duration(time.Hour)}}
		const users, calls = 40, 6
		admitted := make([][users]int, 2)
		errs := make(chan error, 2)
		for d, caps := range []*redisstate.Caps{s1.Caps(), s2.Caps()} {
			go func() {
				for k := range calls {
					var reqs []campaigns.CapRequest
					for u := range uint64(users) {
						// every user in group 9; two messages per call
						for m := range 2 {
							reqs = append(reqs, campaigns.CapRequest{User: 9<<48 + u*1000, Channel: "sms", Msg: fmt.Sprintf("d%d-%d-%d", d, k, m)})
						}
					}
					ok, err := caps.Admit(ctx, reqs, rules, false)
					if err != nil {
						errs <- err
						return
					}
					for i, v := range ok {
						if v {
							admitted[d][i/2]++
						}
					}
				}
				errs <- nil
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for u := range users {
			if n := admitted[0][u] + admitted[1][u]; n != 3 {
				t.Errorf("user %d: %d + %d messages admitted, want 3 in all", u, admitted[0][u], admitted[1][u])
			}
		}
	})
}

// A group's segments older than the window are dropped at its next write,
// whichever user of the group writes: the value holds live entries only.
func TestCapsExpiredSegmentsDropped(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
		ctx := context.Background()
		s, prefix := newStore(t, c)
		caps := s.Caps()
		const window = 300
		rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(window * time.Millisecond)}}
		const a, b = 3<<48 + 1, 3<<48 + 2
		admit := func(u uint64, msg string) bool {
			t.Helper()
			return admitOne(t, caps, rules, campaigns.CapRequest{User: u, Channel: "email", Msg: msg})
		}
		if !admit(a, "x") {
			t.Fatal("a: capped on an empty state")
		}
		start := serverMS(t, c, a)
		time.Sleep(window * time.Millisecond)
		for serverMS(t, c, a) <= start+window {
			time.Sleep(10 * time.Millisecond)
		}
		if !admit(b, "y") {
			t.Fatal("b: capped on an empty state")
		}
		now := serverMS(t, c, b)
		v, err := c.HGet(ctx, capHashKey(prefix, b, window, now/window), capField(b)).Result()
		if err != nil {
			t.Fatalf("the group's value in the current generation: %v", err)
		}
		if len(v) != 26 || v[6:] != capSegment(0, []uint64{b}, [][]string{{msgHash("y", "email")}})[6:] {
			t.Fatalf("value %x, want b's segment only (a's expired)", v)
		}
		if !admit(a, "z") {
			t.Fatal("a: capped by a message older than the window")
		}
	})
}

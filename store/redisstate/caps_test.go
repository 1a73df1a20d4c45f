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
		n, err = cc.MasterForKey(ctx, fmt.Sprintf("{c%d}", user%64))
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

// capHashKey is the hash holding user's values under an "all" rule of
// window ms in generation gen (docs/redis-keys.md).
func capHashKey(prefix string, user uint64, window, gen int64) string {
	return prefix + "cap:{c" + strconv.FormatUint(user%64, 10) + "}:all:" + strconv.FormatInt(window, 10) + ":" + strconv.FormatInt(gen%2, 10)
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
			ok, err := caps.Admit(ctx, []campaigns.CapRequest{{User: user, Channel: "email", Msg: msg}}, rules, false)
			if err != nil {
				t.Fatal(err)
			}
			return ok[0]
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
		field := binary.BigEndian.AppendUint64(nil, user)
		if n, err := c.HExists(ctx, capHashKey(prefix, user, window, gen), string(field)).Result(); err != nil || !n {
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
		var v []byte
		v = append(v, "abcdef"...)
		v = append(v, byte(now>>40), byte(now>>32), byte(now>>24), byte(now>>16), byte(now>>8), byte(now))
		field := string(binary.BigEndian.AppendUint64(nil, user))
		for _, g := range []int64{gen - 2, gen - 3} {
			key := capHashKey(prefix, user, window, g)
			if err := c.HSet(ctx, key, "g", strconv.FormatInt(g, 10), field, string(v)).Err(); err != nil {
				t.Fatal(err)
			}
		}
		ok, err := caps.Admit(ctx, []campaigns.CapRequest{{User: user, Channel: "sms", Msg: "x"}}, rules, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok[0] {
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

// A bucket with more users than one HMGET or HSET of the script takes
// (3,000 fields) is read and written in chunks.
func TestCapsBucketLargerThanAChunk(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t, newClient(t))
	caps := s.Caps()
	rules := []campaigns.CapRule{{Limit: 1, Window: campaigns.Duration(time.Hour)}}
	const users = 7000
	var first, again []campaigns.CapRequest
	for u := range uint64(users) {
		user := u * 64 // one bucket
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
	const user = 0x0123456789abcdef // bucket 0x2f = 47
	before := serverMS(t, c, user)
	if _, err := s.Caps().Admit(ctx, []campaigns.CapRequest{{User: user, Channel: "sms", Msg: "spring"}}, rules, false); err != nil {
		t.Fatal(err)
	}
	after := serverMS(t, c, user)
	keys, err := c.Keys(ctx, prefix+"cap:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	gen := after / window
	want := prefix + "cap:{c47}:sms:86400000:" + strconv.FormatInt(gen%2, 10)
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
	field := string(binary.BigEndian.AppendUint64(nil, user))
	if len(all) != 2 || strings.TrimSpace(all["g"]) != strconv.FormatInt(gen, 10) || len(all["g"]) != 65 {
		t.Fatalf("fields %q, want g (65 bytes) and the user", all)
	}
	v := all[field]
	if len(v) != 12 {
		t.Fatalf("value %x, want one 12-byte entry", v)
	}
	h := fnv.New64a()
	h.Write([]byte("spring\x00sms"))
	if sum := binary.BigEndian.AppendUint64(nil, h.Sum64()); v[:6] != string(sum[:6]) {
		t.Errorf("message hash %x, want %x", v[:6], sum[:6])
	}
	at := int64(binary.BigEndian.Uint64(append([]byte{0, 0}, v[6:]...)))
	if at < before || at > after {
		t.Errorf("admitted at %d, want within [%d, %d]", at, before, after)
	}

	// A later write to the generation's hash writes only its users: g and
	// the expiry stay as the first write set them.
	const other = user + 64 // the same bucket
	if _, err := s.Caps().Admit(ctx, []campaigns.CapRequest{{User: other, Channel: "sms", Msg: "summer"}}, rules, false); err != nil {
		t.Fatal(err)
	}
	if serverMS(t, c, user)/window != gen {
		t.Skip("the generation turned between the two admissions")
	}
	all, err = c.HGetAll(ctx, want).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || len(all[string(binary.BigEndian.AppendUint64(nil, other))]) != 12 || len(all["g"]) != 65 || strings.TrimSpace(all["g"]) != strconv.FormatInt(gen, 10) {
		t.Fatalf("after a second user: fields %q, want g (65 bytes, generation %d) and two users", all, gen)
	}
	if at := c.PExpireTime(ctx, want).Val(); at != time.Duration(gen+2)*window*time.Millisecond {
		t.Errorf("after a second user: expires at %v, want the end of generation %d", at, gen+1)
	}
}

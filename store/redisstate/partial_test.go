package redisstate_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/redisstate/redisfault"
)

// keyTagged reports whether one of cmd's arguments holds one of the user
// tags in *tags (nil: none): a node holding those users is down.
func keyTagged(tags *atomic.Pointer[[]string]) func(redis.Cmder) bool {
	return func(cmd redis.Cmder) bool {
		p := tags.Load()
		if p == nil {
			return false
		}
		for _, a := range cmd.Args() {
			if k, ok := a.(string); ok {
				for _, tag := range *p {
					if strings.Contains(k, tag) {
						return true
					}
				}
			}
		}
		return false
	}
}

// TestClusterClaimPartialFailure: a claim whose pipeline reached only some
// nodes fails, and leaves none of the keys it did set claimed: the retry
// claims them all. Before, the keys set on the nodes that answered came back
// held (our own lease from the failed call), and were sent only after the
// lease, as in doubt, which SMS and email skip: lost messages.
func TestClusterClaimPartialFailure(t *testing.T) {
	onEachBackend(t, func(t *testing.T, c redis.UniversalClient) { testClaimPartialFailure(t, c) })
}

func testClaimPartialFailure(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	s, _ := newStore(t, c, redisstate.WithClusterScripts())
	var down atomic.Pointer[[]string]
	c.AddHook(&redisfault.Hook{Drop: keyTagged(&down)})
	keys := make([]campaigns.DedupKey, 8)
	for i := range keys {
		keys[i] = campaigns.DedupKey{Scope: "c:partial", User: uint64(0xa0 + i), Channel: "sms"}
	}
	// One key is leased by another daemon: it goes through the claim script.
	other := []campaigns.DedupKey{{Scope: "c:partial", User: 0xff, Channel: "sms"}}
	if got, err := s.Dedup("other").Claim(ctx, other, time.Hour, time.Hour); err != nil || got[0] != campaigns.Claimed {
		t.Fatalf("other's claim: %v %v", got, err)
	}
	for _, tc := range []struct {
		name string
		keys []campaigns.DedupKey
		down []string
	}{
		{"half the SETs never arrived", keys, []string{"{u:a1}", "{u:a3}", "{u:a5}", "{u:a7}"}},
		{"the SET arrived, the claim script did not", append([]campaigns.DedupKey{keys[0]}, other...), []string{"{u:ff}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := s.Dedup("a")
			down.Store(&tc.down)
			if got, err := d.Claim(ctx, tc.keys, time.Hour, time.Hour); err == nil {
				t.Fatalf("claim with a node down: %v, no error", got)
			}
			down.Store(nil)
			got, err := d.Claim(ctx, tc.keys, time.Hour, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range got {
				want := campaigns.Claimed
				if tc.keys[i].User == 0xff {
					want = campaigns.Held // still the other daemon's
				}
				if st != want {
					t.Fatalf("retry: key %d is %v, want %v (all: %v)", i, st, want, got)
				}
			}
			if err := d.Release(ctx, tc.keys); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClaimAttemptAfterLostReply: a claim executed by Redis whose reply was
// lost leaves leases the caller does not know it holds. Retried under the
// same attempt (campaigns.AttemptDedup), they are claimed; under another
// attempt or without one they are held, as another daemon's would be. A
// key twice in one call is claimed once and held once, attempt or not.
func TestClaimAttemptAfterLostReply(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts []redisstate.Option
	}{{"script", nil}, {"plain SETs", []redisstate.Option{redisstate.WithClusterScripts()}}} {
		t.Run(mode.name, func(t *testing.T) {
			onEachBackend(t, func(t *testing.T, c redis.UniversalClient) {
				ctx := context.Background()
				s, _ := newStore(t, c, mode.opts...)
				var lost atomic.Bool
				c.AddHook(&redisfault.Hook{LoseReply: func(cmd redis.Cmder) bool {
					return lost.Load() && (cmd.Name() == "set" || strings.HasPrefix(cmd.Name(), "eval"))
				}})
				keys := []campaigns.DedupKey{{Scope: "c:lost", User: 0xb1, Channel: "sms"}, {Scope: "c:lost", User: 0xb2, Channel: "email"}}
				d := s.Dedup("a")
				first := d.Attempt("t1")
				lost.Store(true)
				if got, err := first.Claim(ctx, keys, time.Hour, time.Hour); err == nil {
					t.Fatalf("claim with its reply lost: %v, no error", got)
				}
				lost.Store(false)
				for _, other := range []struct {
					name string
					d    campaigns.DedupLog
				}{{"no attempt", campaigns.DedupLog(d)}, {"another attempt", d.Attempt("t2")}} {
					if got, err := other.d.Claim(ctx, keys, time.Hour, time.Hour); err != nil || got[0] != campaigns.Held || got[1] != campaigns.Held {
						t.Fatalf("%s: %v %v, want held", other.name, got, err)
					}
				}
				got, err := first.Claim(ctx, keys, time.Hour, time.Hour)
				if err != nil || got[0] != campaigns.Claimed || got[1] != campaigns.Claimed {
					t.Fatalf("the same attempt retried: %v %v, want claimed", got, err)
				}
				if err := first.Confirm(ctx, keys, time.Hour); err != nil {
					t.Fatal(err)
				}
				if got, err := first.Claim(ctx, keys, time.Hour, time.Hour); err != nil || got[0] != campaigns.Duplicate {
					t.Fatalf("after confirm: %v %v, want duplicate", got, err)
				}
				twice := []campaigns.DedupKey{{Scope: "c:twice", User: 0xb3, Channel: "sms"}, {Scope: "c:twice", User: 0xb3, Channel: "sms"}}
				if got, err := d.Attempt("t3").Claim(ctx, twice, time.Hour, time.Hour); err != nil || got[0] != campaigns.Claimed || got[1] != campaigns.Held {
					t.Fatalf("a key twice in one call: %v %v, want claimed then held", got, err)
				}
			})
		})
	}
}

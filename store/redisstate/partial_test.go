package redisstate_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
)

// nodeDown is a go-redis hook standing for one node of a cluster failing
// mid-call: while down holds user tags, commands on their keys never reach
// the server and answer a connection error; the rest of a pipeline runs.
type nodeDown struct{ down atomic.Pointer[[]string] }

var errNodeDown = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

func (h *nodeDown) hit(cmd redis.Cmder) bool {
	p := h.down.Load()
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

func (h *nodeDown) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *nodeDown) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.hit(cmd) {
			cmd.SetErr(errNodeDown)
			return errNodeDown
		}
		return next(ctx, cmd)
	}
}

func (h *nodeDown) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var keep []redis.Cmder
		failed := false
		for _, c := range cmds {
			if h.hit(c) {
				c.SetErr(errNodeDown)
				failed = true
				continue
			}
			keep = append(keep, c)
		}
		var err error
		if len(keep) > 0 {
			err = next(ctx, keep)
		}
		if failed {
			return errNodeDown
		}
		return err
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
	down := &nodeDown{}
	c.AddHook(down)
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
			down.down.Store(&tc.down)
			if got, err := d.Claim(ctx, tc.keys, time.Hour, time.Hour); err == nil {
				t.Fatalf("claim with a node down: %v, no error", got)
			}
			down.down.Store(nil)
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

// lostReply is a go-redis hook standing for replies lost on the way back
// (a connection reset after Redis executed the commands): while on, every
// command runs and then answers a connection error.
type lostReply struct{ on atomic.Bool }

func (h *lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if h.on.Load() && (cmd.Name() == "set" || strings.HasPrefix(cmd.Name(), "eval")) {
			cmd.SetErr(errNodeDown)
			return errNodeDown
		}
		return err
	}
}

func (h *lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.on.Load() {
			for _, c := range cmds {
				c.SetErr(errNodeDown)
			}
			return errNodeDown
		}
		return err
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
				lost := &lostReply{}
				c.AddHook(lost)
				keys := []campaigns.DedupKey{{Scope: "c:lost", User: 0xb1, Channel: "sms"}, {Scope: "c:lost", User: 0xb2, Channel: "email"}}
				d := s.Dedup("a")
				first := d.Attempt("t1")
				lost.on.Store(true)
				if got, err := first.Claim(ctx, keys, time.Hour, time.Hour); err == nil {
					t.Fatalf("claim with its reply lost: %v, no error", got)
				}
				lost.on.Store(false)
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

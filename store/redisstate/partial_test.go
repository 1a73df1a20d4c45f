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

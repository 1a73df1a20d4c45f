package memstate

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

var _ campaigns.CapStore = (*Caps)(nil)

// Caps is the in-memory CapStore: per user and rule, the messages admitted
// within the rule's window (a sliding window), as redisstate keeps them.
type Caps struct {
	s *Store
}

type capKey struct {
	user   uint64
	scope  string // campaigns.CapAll or a channel
	window time.Duration
}

// sweepEvery is how many admissions pass between sweeps of expired records.
const sweepEvery = 100_000

type capEntry struct {
	msg string
	at  time.Time
}

// Caps returns the Store's CapStore.
func (s *Store) Caps() *Caps {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.caps == nil {
		s.caps = map[capKey][]capEntry{}
	}
	return &Caps{s: s}
}

// Admit implements campaigns.CapStore.
func (c *Caps) Admit(_ context.Context, reqs []campaigns.CapRequest, rules []campaigns.CapRule, dry bool) ([]bool, error) {
	for _, r := range rules {
		if r.Limit < 1 || r.Window < campaigns.Duration(time.Millisecond) {
			return nil, fmt.Errorf("admit under frequency caps: rule %+v needs a limit ≥ 1 and a window ≥ 1ms", r)
		}
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]bool, len(reqs))
	pending := map[capKey][]string{} // dry: the messages this call admitted, as Redis counts them
	for i, q := range reqs {
		msg := q.Msg + ":" + q.Channel
		seen, fits, applies := true, true, false
		for _, r := range rules {
			if !r.Applies(q.Channel) {
				continue
			}
			applies = true
			k := capKey{q.User, r.Scope(), time.Duration(r.Window)}
			since := now.Add(-time.Duration(r.Window))
			n, mine := 0, false
			for _, e := range s.caps[k] {
				if e.at.After(since) {
					n++
					mine = mine || e.msg == msg
				}
			}
			mine = mine || slices.Contains(pending[k], msg)
			seen = seen && mine
			if n+len(pending[k]) >= r.Limit {
				fits = false
			}
		}
		switch {
		case !applies || seen:
			out[i] = true
		case fits:
			out[i] = true
			for _, r := range rules {
				if !r.Applies(q.Channel) {
					continue
				}
				k := capKey{q.User, r.Scope(), time.Duration(r.Window)}
				if dry {
					pending[k] = append(pending[k], msg)
					continue
				}
				since := now.Add(-time.Duration(r.Window))
				es := slices.DeleteFunc(s.caps[k], func(e capEntry) bool { return !e.at.After(since) || e.msg == msg })
				s.caps[k] = append(es, capEntry{msg: msg, at: now})
				s.capOps++
			}
		}
	}
	if s.capOps >= sweepEvery {
		// Users who never come back would keep their records for ever.
		s.capOps = 0
		for k, es := range s.caps {
			since := now.Add(-k.window)
			if es = slices.DeleteFunc(es, func(e capEntry) bool { return !e.at.After(since) }); len(es) == 0 {
				delete(s.caps, k)
			} else {
				s.caps[k] = es
			}
		}
	}
	return out, nil
}

// CapUsers is how many users have cap records (tests, memory checks).
func (c *Caps) CapUsers() int {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	users := map[uint64]bool{}
	for k := range c.s.caps {
		users[k.user] = true
	}
	return len(users)
}

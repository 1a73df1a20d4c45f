package memstate_test

import (
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/memstate"
	"github.com/notifyd/notifyd/store/statetest"
)

// fakeClock is the injected clock: tests move it instead of waiting.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newImpl(t *testing.T) statetest.Impl {
	clock := &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	s := memstate.New(memstate.WithClock(clock.Now))
	return statetest.Impl{
		Dedup:      func(owner string) campaigns.DedupLog { return s.Dedup(owner) },
		Progress:   s,
		Campaigns:  s,
		Intake:     s,
		Delays:     s.Delays(),
		Caps:       s.Caps(),
		Engagement: s,
		Now:        clock.Now,
		Advance:    clock.Advance,
		Lease:      time.Minute,
	}
}

func TestContract(t *testing.T) { statetest.Run(t, newImpl) }

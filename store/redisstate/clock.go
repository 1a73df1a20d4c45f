package redisstate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// clockRefresh is how long a measured server-clock offset is trusted.
// Clocks drift by far less than a millisecond a minute; the offset only has
// to be good to a fraction of a lease (minutes).
const clockRefresh = time.Minute

// serverClock estimates Redis's clock (TIME) from the local one. Leases must
// end on the server's clock, which every daemon reads the same, so a claim
// sent as a plain SET (cluster mode: no script per user) writes the lease end
// the claim script would have written with redis.call('TIME').
//
// One TIME round trip a minute keeps it fresh: the first claim after the
// offset went stale measures it again while concurrent claims use the old
// one. On a cluster, TIME is answered by one node; nodes on other hosts may
// disagree with it by their NTP error (milliseconds), against leases of
// minutes.
type serverClock struct {
	rdb redis.UniversalClient
	now func() time.Time

	mu        sync.Mutex
	offset    time.Duration // server minus local
	at        time.Time     // local time of the last measurement; zero: none yet
	measuring bool
}

// Now returns the estimated server time.
func (c *serverClock) Now(ctx context.Context) (time.Time, error) {
	c.mu.Lock()
	local := c.now()
	fresh := !c.at.IsZero() && local.Sub(c.at) < clockRefresh
	if fresh || (c.measuring && !c.at.IsZero()) {
		off := c.offset
		c.mu.Unlock()
		return local.Add(off), nil
	}
	c.measuring = true
	c.mu.Unlock()

	t0 := c.now()
	server, err := c.rdb.Time(ctx).Result()
	t1 := c.now()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.measuring = false
	if err != nil {
		if !c.at.IsZero() {
			// A stale offset is still a good one; the claim itself will
			// tell whether Redis is away.
			return t1.Add(c.offset), nil
		}
		return time.Time{}, fmt.Errorf("read redis clock: %w", err)
	}
	// The server read its clock somewhere in the round trip: take the middle.
	c.offset = server.Sub(t0.Add(t1.Sub(t0) / 2))
	c.at = t1
	return t1.Add(c.offset), nil
}

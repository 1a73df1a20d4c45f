package channels

import "time"

// Clock is the pool's source of time. Production uses the wall clock; tests
// inject a fake (channelstest.FakeClock) so backoff, Retry-After, deadlines
// and per-campaign rate limits are checked by counting, not by sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports false if the call already ran or was stopped.
	Stop() bool
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

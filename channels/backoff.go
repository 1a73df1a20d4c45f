package channels

import (
	"math/rand/v2"
	"time"
)

// backoff computes retry delays. Not safe for concurrent use: the pool calls
// it under its lock, which also guards the random source.
type backoff struct {
	base, max     time.Duration
	maxRetryAfter time.Duration
	rnd           *rand.Rand
}

// delay is the wait before the next attempt after failed attempts 1..attempt.
// Equal jitter: half the exponential step is fixed so a retry storm still
// spreads out, half is random so synchronized senders de-correlate. A
// provider's Retry-After is a floor (capped at maxRetryAfter, because a
// misbehaving server must not park a message for a day).
func (b *backoff) delay(attempt int, retryAfter time.Duration) time.Duration {
	step := b.base
	for i := 1; i < attempt && step < b.max; i++ {
		step *= 2
	}
	step = min(step, b.max)
	d := step/2 + time.Duration(b.rnd.Float64()*float64(step/2))
	if retryAfter > 0 {
		d = max(d, min(retryAfter, b.maxRetryAfter))
	}
	return d
}

package channels

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

type constSource uint64

func (s constSource) Uint64() uint64 { return uint64(s) }

func TestBackoffDelay(t *testing.T) {
	low := rand.New(constSource(0))
	high := rand.New(constSource(math.MaxUint64))
	tests := []struct {
		name       string
		rnd        *rand.Rand
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{name: "first retry, no jitter, is half the base", rnd: low, attempt: 1, want: 500 * time.Millisecond},
		{name: "doubles per attempt", rnd: low, attempt: 3, want: 2 * time.Second},
		{name: "capped at max step", rnd: low, attempt: 10, want: 4 * time.Second},
		{name: "huge attempt does not overflow", rnd: low, attempt: 1 << 20, want: 4 * time.Second},
		{name: "full jitter reaches the step", rnd: high, attempt: 2, want: 2 * time.Second},
		{name: "retry-after is a floor", rnd: low, attempt: 1, retryAfter: 30 * time.Second, want: 30 * time.Second},
		{name: "retry-after below backoff keeps backoff", rnd: low, attempt: 4, retryAfter: time.Second, want: 4 * time.Second},
		{name: "retry-after capped", rnd: low, attempt: 1, retryAfter: 24 * time.Hour, want: time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{base: time.Second, max: 8 * time.Second, maxRetryAfter: time.Minute, rnd: tc.rnd}
			got := b.delay(tc.attempt, tc.retryAfter)
			// Float64 of MaxUint64 is just below 1: allow a nanosecond of rounding.
			if diff := got - tc.want; diff < -time.Microsecond || diff > 0 {
				t.Fatalf("delay(%d, %v) = %v, want %v", tc.attempt, tc.retryAfter, got, tc.want)
			}
		})
	}
}

func TestBackoffJitterSpreads(t *testing.T) {
	b := backoff{base: time.Second, max: time.Minute, maxRetryAfter: time.Minute, rnd: rand.New(rand.NewPCG(1, 2))}
	seen := map[time.Duration]bool{}
	for range 100 {
		d := b.delay(3, 0)
		if d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("delay %v outside [2s, 4s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct delays in 100: jitter does not spread retries", len(seen))
	}
}

func TestFifoAndRetryHeap(t *testing.T) {
	var f fifo
	for i := range 100 {
		f.push(item{attempts: int32(i)})
		if i%3 == 0 {
			if got := f.pop(); got.attempts != int32(i/3) {
				t.Fatalf("pop = %d, want %d", got.attempts, i/3)
			}
		}
	}
	want := int32(34)
	for f.n > 0 {
		if got := f.pop(); got.attempts != want {
			t.Fatalf("pop = %d, want %d", got.attempts, want)
		}
		want++
	}

	var h retryHeap
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		h.push(item{readyAt: r.Int64N(1000), attempts: int32(i)})
	}
	prev := int64(0)
	for len(h) > 0 {
		it := h.pop()
		if it.readyAt < prev {
			t.Fatalf("heap out of order: %v after %v", it.readyAt, prev)
		}
		prev = it.readyAt
	}
}

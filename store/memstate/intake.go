package memstate

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// intake mirrors a Redis Stream with one consumer group: entries are
// delivered once to the group, stay pending until acked, and can be claimed by
// another consumer after an idle time.
type intake struct {
	seq     uint64
	queue   []*intakeEntry // never delivered, in id order
	pending map[string]*intakeEntry
	wake    chan struct{} // closed and replaced on every Enqueue
}

type intakeEntry struct {
	seq         uint64
	entry       campaigns.Entry
	consumer    string
	deliveredAt time.Time
}

// Enqueue implements campaigns.Intake.
func (s *Store) Enqueue(ctx context.Context, payload []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("enqueue intake request: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.intake.seq++
	// Same shape as a Redis stream id, so callers never depend on the backend.
	id := strconv.FormatInt(s.now().UnixMilli(), 10) + "-" + strconv.FormatUint(s.intake.seq, 10)
	s.intake.queue = append(s.intake.queue, &intakeEntry{seq: s.intake.seq, entry: campaigns.Entry{ID: id, Payload: slices.Clone(payload)}})
	close(s.intake.wake)
	s.intake.wake = make(chan struct{})
	return id, nil
}

// Read implements campaigns.Intake.
func (s *Store) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]campaigns.Entry, error) {
	if consumer == "" || count <= 0 {
		return nil, fmt.Errorf("read intake: need a consumer and a positive count (got %q, %d)", consumer, count)
	}
	var timer <-chan time.Time
	if block > 0 {
		// A real timer, not the injected clock: this is how long the caller is
		// willing to wait, not state that must agree between processes.
		t := time.NewTimer(block)
		defer t.Stop()
		timer = t.C
	}
	for {
		s.mu.Lock()
		if n := min(count, len(s.intake.queue)); n > 0 {
			now := s.now()
			out := make([]campaigns.Entry, n)
			for i, e := range s.intake.queue[:n] {
				e.consumer, e.deliveredAt = consumer, now
				s.intake.pending[e.entry.ID] = e
				out[i] = cloneEntry(e.entry)
			}
			s.intake.queue = slices.Delete(s.intake.queue, 0, n)
			s.mu.Unlock()
			return out, nil
		}
		wake := s.intake.wake
		s.mu.Unlock()
		if timer == nil {
			return nil, nil
		}
		select {
		case <-wake:
		case <-timer:
			return nil, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("read intake: %w", ctx.Err())
		}
	}
}

func cloneEntry(e campaigns.Entry) campaigns.Entry {
	return campaigns.Entry{ID: e.ID, Payload: slices.Clone(e.Payload)}
}

// Ack implements campaigns.Intake.
func (s *Store) Ack(ctx context.Context, ids ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ack intake entries: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.intake.pending, id)
	}
	return nil
}

// Reclaim implements campaigns.Intake.
func (s *Store) Reclaim(ctx context.Context, consumer string, minIdle time.Duration, count int) ([]campaigns.Entry, error) {
	if consumer == "" || count <= 0 || minIdle < 0 {
		return nil, fmt.Errorf("reclaim intake entries: need a consumer, a positive count and a non-negative idle time")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reclaim intake entries: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	idle := make([]*intakeEntry, 0, len(s.intake.pending))
	for _, e := range s.intake.pending {
		if now.Sub(e.deliveredAt) >= minIdle {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *intakeEntry) int {
		if a.seq < b.seq {
			return -1
		}
		return 1
	})
	idle = idle[:min(count, len(idle))]
	out := make([]campaigns.Entry, len(idle))
	for i, e := range idle {
		e.consumer, e.deliveredAt = consumer, now
		out[i] = cloneEntry(e.entry)
	}
	return out, nil
}

package memstate

import (
	"container/heap"
	"context"
	"errors"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

var _ campaigns.DelayQueue = Delays{}

// Delays is the Store's campaigns.DelayQueue: delayed triggers in process
// memory, lost when the process ends.
type Delays struct{ s *Store }

// Delays returns the Store's delay queue.
func (s *Store) Delays() Delays { return Delays{s} }

// delayQueue is a min-heap on due time (a claimed item's due time is its
// lease end), with an index from ID to heap position.
type delayQueue struct {
	items []*delayItem
	byID  map[string]*delayItem
}

type delayItem struct {
	d   campaigns.Delayed
	at  time.Time // due, or lease end once claimed
	pos int
}

func (q *delayQueue) Len() int           { return len(q.items) }
func (q *delayQueue) Less(i, j int) bool { return q.items[i].at.Before(q.items[j].at) }
func (q *delayQueue) Swap(i, j int) {
	q.items[i], q.items[j] = q.items[j], q.items[i]
	q.items[i].pos, q.items[j].pos = i, j
}
func (q *delayQueue) Push(x any) {
	it := x.(*delayItem)
	it.pos = len(q.items)
	q.items = append(q.items, it)
}
func (q *delayQueue) Pop() any {
	it := q.items[len(q.items)-1]
	q.items[len(q.items)-1] = nil
	q.items = q.items[:len(q.items)-1]
	return it
}

// Schedule implements campaigns.DelayQueue.
func (q Delays) Schedule(_ context.Context, items []campaigns.Delayed) error {
	for _, d := range items {
		if d.ID == "" {
			return errors.New("schedule delayed trigger: empty id")
		}
	}
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delays.byID == nil {
		s.delays.byID = make(map[string]*delayItem)
	}
	for _, d := range items {
		if s.delays.byID[d.ID] != nil {
			continue
		}
		d.Payload = append([]byte(nil), d.Payload...)
		it := &delayItem{d: d, at: d.Due}
		s.delays.byID[d.ID] = it
		heap.Push(&s.delays, it)
	}
	return nil
}

// ClaimDue implements campaigns.DelayQueue.
func (q Delays) ClaimDue(_ context.Context, max int, lease time.Duration) ([]campaigns.Delayed, error) {
	if max <= 0 || lease <= 0 {
		return nil, errors.New("claim delayed triggers: max and lease must be positive")
	}
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []campaigns.Delayed
	for len(out) < max && len(s.delays.items) > 0 && !s.delays.items[0].at.After(now) {
		it := s.delays.items[0]
		d := it.d
		d.Due = time.Time{} // not part of the contract: Redis does not report it
		out = append(out, d)
		it.at = now.Add(lease)
		heap.Fix(&s.delays, 0)
	}
	return out, nil
}

// Done implements campaigns.DelayQueue.
func (q Delays) Done(_ context.Context, ids []string) error {
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if it := s.delays.byID[id]; it != nil {
			heap.Remove(&s.delays, it.pos)
			delete(s.delays.byID, id)
		}
	}
	return nil
}

// Len implements campaigns.DelayQueue.
func (q Delays) Len(context.Context) (int64, error) {
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.delays.items)), nil
}

package redisstate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

var _ campaigns.DelayQueue = (*Delays)(nil)

// Delays is the Store's campaigns.DelayQueue: a sorted set of IDs scored by
// due time (ms; a claimed item's score is its lease end) and a hash of
// payloads, both under one hash tag so scripts stay in one cluster slot.
type Delays struct{ s *Store }

// Delays returns the Store's delay queue.
func (s *Store) Delays() *Delays { return &Delays{s} }

// <prefix>{delayed}:due and <prefix>{delayed}:p (docs/redis-keys.md).
func (q *Delays) dueKey() string     { return q.s.prefix + "{" + q.s.delayed + "}:due" }
func (q *Delays) payloadKey() string { return q.s.prefix + "{" + q.s.delayed + "}:p" }

// claimDueSrc hands out due items and re-scores each to its lease end in
// the same step, so two daemons never get the same item while it is leased.
// KEYS: due, payloads. ARGV: max, lease ms. Returns id, payload pairs; an ID
// whose payload is missing (a half-finished Done) is dropped.
const claimDueSrc = nowMS + `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[2], id)
  if p then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    out[#out + 1] = id
    out[#out + 1] = p
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`

// Schedule implements campaigns.DelayQueue: HSETNX then ZADD NX in one
// MULTI, so an item is either fully stored or not at all.
func (q *Delays) Schedule(ctx context.Context, items []campaigns.Delayed) error {
	if len(items) == 0 {
		return nil
	}
	for _, d := range items {
		if d.ID == "" {
			return errors.New("schedule delayed trigger: empty id")
		}
	}
	_, err := q.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, d := range items {
			p.HSetNX(ctx, q.payloadKey(), d.ID, d.Payload)
			p.ZAddNX(ctx, q.dueKey(), redis.Z{Score: float64(d.Due.UnixMilli()), Member: d.ID})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("schedule delayed triggers: %w", err)
	}
	return nil
}

// ClaimDue implements campaigns.DelayQueue.
func (q *Delays) ClaimDue(ctx context.Context, max int, lease time.Duration) ([]campaigns.Delayed, error) {
	if max <= 0 || lease <= 0 {
		return nil, errors.New("claim delayed triggers: max and lease must be positive")
	}
	res, err := q.s.claimDue.Run(ctx, q.s.rdb, []string{q.dueKey(), q.payloadKey()}, max, lease.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim delayed triggers: %w", err)
	}
	out := make([]campaigns.Delayed, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out = append(out, campaigns.Delayed{ID: res[i], Payload: []byte(res[i+1])})
	}
	return out, nil
}

// Done implements campaigns.DelayQueue.
func (q *Delays) Done(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	_, err := q.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, q.dueKey(), members...)
		p.HDel(ctx, q.payloadKey(), ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget delayed triggers: %w", err)
	}
	return nil
}

// Len implements campaigns.DelayQueue.
func (q *Delays) Len(ctx context.Context) (int64, error) {
	n, err := q.s.rdb.ZCard(ctx, q.dueKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("count delayed triggers: %w", err)
	}
	return n, nil
}

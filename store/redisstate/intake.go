package redisstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// The intake is one stream with one consumer group. Ack is XACK + XDEL in
// one transaction, so the stream holds only pending and undelivered entries
// and needs no MAXLEN trimming (which could drop an unacknowledged request).

// Enqueue implements campaigns.Intake.
func (s *Store) Enqueue(ctx context.Context, payload []byte) (string, error) {
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.intakeKey(), Values: []any{"p", payload}}).Result()
	if err != nil {
		return "", fmt.Errorf("enqueue intake request: %w", err)
	}
	return id, nil
}

// EnqueueShards appends payloads[k] to shard k's intake stream (the stream
// ForShard(k) reads) for every k, in one pipeline: a Cluster client sends
// each node its part at once, so a request with users on every shard costs
// one round trip, not one per shard. On error some streams may hold their
// entry; a retry of the whole request is deduplicated downstream.
func (s *Store) EnqueueShards(ctx context.Context, payloads map[int][]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	cmds := make([]*redis.StringCmd, 0, len(payloads))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, payload := range payloads {
			cmds = append(cmds, p.XAdd(ctx, &redis.XAddArgs{Stream: s.ForShard(k).intakeKey(), Values: []any{"p", payload}}))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enqueue on shard streams: %w", err)
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return fmt.Errorf("enqueue on shard streams: %w", err)
		}
	}
	return nil
}

// withGroup runs op, creating the consumer group (from the stream's start, so
// requests enqueued before any daemon ran are read) if Redis says it is missing.
func (s *Store) withGroup(ctx context.Context, op func() error) error {
	err := op()
	if err == nil || !redis.HasErrorPrefix(err, "NOGROUP") {
		return err
	}
	if err := s.rdb.XGroupCreateMkStream(ctx, s.intakeKey(), s.group, "0").Err(); err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("create consumer group: %w", err)
	}
	return op()
}

func entriesFrom(msgs []redis.XMessage) []campaigns.Entry {
	out := make([]campaigns.Entry, 0, len(msgs))
	for _, m := range msgs {
		p, _ := m.Values["p"].(string)
		out = append(out, campaigns.Entry{ID: m.ID, Payload: []byte(p)})
	}
	return out
}

// Read implements campaigns.Intake with XREADGROUP … STREAMS intake >.
func (s *Store) Read(ctx context.Context, consumer string, count int, block time.Duration) ([]campaigns.Entry, error) {
	if consumer == "" || count <= 0 {
		return nil, fmt.Errorf("read intake: need a consumer and a positive count (got %q, %d)", consumer, count)
	}
	// go-redis ignores context deadlines on sockets unless the client has
	// ContextTimeoutEnabled, and a blocked XREADGROUP is only bounded by BLOCK:
	// so never block past the caller's deadline.
	clipped := false
	if dl, ok := ctx.Deadline(); ok && block > 0 {
		if until := time.Until(dl); until < block {
			block, clipped = until, true
		}
		if block <= 0 {
			return nil, fmt.Errorf("read intake: %w", context.DeadlineExceeded)
		}
	}
	if block <= 0 {
		block = -1 // go-redis: no BLOCK argument (Redis reads BLOCK 0 as "forever")
	} else if block < time.Millisecond {
		block = time.Millisecond
	}
	var streams []redis.XStream
	err := s.withGroup(ctx, func() error {
		var err error
		streams, err = s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: s.group, Consumer: consumer, Streams: []string{s.intakeKey(), ">"}, Count: int64(count), Block: block,
		}).Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read intake: %w", ctx.Err())
		}
		if clipped {
			// Redis ended the BLOCK we cut to the caller's deadline; its timer
			// may fire a hair before ours does.
			return nil, fmt.Errorf("read intake: %w", context.DeadlineExceeded)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read intake: %w", err)
	}
	var out []campaigns.Entry
	for _, st := range streams {
		out = append(out, entriesFrom(st.Messages)...)
	}
	return out, nil
}

// Ack implements campaigns.Intake.
func (s *Store) Ack(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := s.rdb.TxPipeline()
	pipe.XAck(ctx, s.intakeKey(), s.group, ids...)
	pipe.XDel(ctx, s.intakeKey(), ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("ack intake entries: %w", err)
	}
	return nil
}

// Reclaim implements campaigns.Intake with XAUTOCLAIM, following its cursor
// until count entries are claimed or the pending list has been scanned.
func (s *Store) Reclaim(ctx context.Context, consumer string, minIdle time.Duration, count int) ([]campaigns.Entry, error) {
	if consumer == "" || count <= 0 || minIdle < 0 {
		return nil, errors.New("reclaim intake entries: need a consumer, a positive count and a non-negative idle time")
	}
	var out []campaigns.Entry
	start := "0-0"
	for len(out) < count {
		var msgs []redis.XMessage
		var next string
		err := s.withGroup(ctx, func() error {
			var err error
			msgs, next, err = s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s.intakeKey(), Group: s.group, Consumer: consumer, MinIdle: minIdle, Start: start, Count: int64(count - len(out)),
			}).Result()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("reclaim intake entries: %w", err)
		}
		out = append(out, entriesFrom(msgs)...)
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	return out, nil
}

// Backlog is an intake stream's unfinished work.
type Backlog struct {
	// Entries not yet acknowledged (Ack deletes them): pending plus never read.
	Entries int64
	// Pending entries are read by a consumer and not yet acknowledged.
	Pending int64
	// Oldest is when the oldest unacknowledged entry was added (zero: none).
	Oldest time.Time
}

// Backlog measures the intake stream in one round trip (XLEN, XPENDING and
// the first entry's id, whose first part is its enqueue time in ms).
func (s *Store) Backlog(ctx context.Context) (Backlog, error) {
	pipe := s.rdb.Pipeline()
	xlen := pipe.XLen(ctx, s.intakeKey())
	xpend := pipe.XPending(ctx, s.intakeKey(), s.group)
	first := pipe.XRangeN(ctx, s.intakeKey(), "-", "+", 1)
	_, _ = pipe.Exec(ctx)
	var b Backlog
	var err error
	if b.Entries, err = xlen.Result(); err != nil {
		return Backlog{}, fmt.Errorf("measure intake stream: %w", err)
	}
	switch p, err := xpend.Result(); {
	case err == nil:
		b.Pending = p.Count
	case !redis.HasErrorPrefix(err, "NOGROUP"): // no group yet: nothing read
		return Backlog{}, fmt.Errorf("measure intake pending entries: %w", err)
	}
	msgs, err := first.Result()
	if err != nil {
		return Backlog{}, fmt.Errorf("read oldest intake entry: %w", err)
	}
	if len(msgs) > 0 {
		if ms, _, ok := strings.Cut(msgs[0].ID, "-"); ok {
			if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
				b.Oldest = time.UnixMilli(n)
			}
		}
	}
	return b, nil
}

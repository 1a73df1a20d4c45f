package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/templates"
)

// IntakeConfig tunes the stream intake.
type IntakeConfig struct {
	// Consumer names this daemon in the consumer group (default: the engine owner).
	Consumer string
	// Block is how long one read waits for new entries (default 2s).
	Block time.Duration
	// MinIdle is how long an entry stays pending with a dead consumer before
	// this daemon takes it over (default 1m).
	MinIdle time.Duration
	// Triggers, if set, counts the triggers taken (source "stream", or
	// "shard_stream" for ServeShardStream).
	Triggers *TriggerMetrics
}

// intakeLoop creates campaigns enqueued on the intake stream (a campaign's
// JSON, as POST /v1/campaigns takes it). An entry is acknowledged once the
// campaign is stored, or when it can never succeed (bad input, a conflicting
// definition), which is logged with the entry id. On any other error it stays
// pending and is retried, by this daemon or another one after MinIdle.
func intakeLoop(ctx context.Context, in campaigns.Intake, create func(context.Context, []byte) error, cfg IntakeConfig, log *slog.Logger) {
	if cfg.Block <= 0 {
		cfg.Block = 2 * time.Second
	}
	if cfg.MinIdle <= 0 {
		cfg.MinIdle = time.Minute
	}
	log = log.With("component", "intake", "consumer", cfg.Consumer)
	backoff := 100 * time.Millisecond
	lastReclaim := time.Time{}
	// The acknowledgement of one read runs beside the next read, so an entry
	// arriving meanwhile does not wait a round trip behind it; at most one
	// is in flight, and the loop waits for it before it returns.
	var acking chan struct{}
	defer func() {
		if acking != nil {
			<-acking
		}
	}()
	for ctx.Err() == nil {
		var entries []campaigns.Entry
		var err error
		if time.Since(lastReclaim) >= cfg.MinIdle/2 {
			lastReclaim = time.Now()
			entries, err = in.Reclaim(ctx, cfg.Consumer, cfg.MinIdle, 100)
		}
		if err == nil && len(entries) == 0 {
			entries, err = in.Read(ctx, cfg.Consumer, 100, cfg.Block)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("read intake stream", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// One acknowledgement for the whole read: a round trip per entry
		// made a busy shard stream queue behind its own acks. An entry
		// processed but not yet acknowledged when the daemon dies is read
		// again, as it would be after a crash between processing and a
		// per-entry ack: dedup stops a second send.
		done := make([]string, 0, len(entries))
		for _, e := range entries {
			err := create(ctx, e.Payload)
			switch {
			case err == nil:
			case permanentCreateError(err):
				log.Error("intake entry rejected; acknowledged so it is not retried", "entry", e.ID, "error", err)
			default:
				log.Warn("intake entry not processed; it stays pending", "entry", e.ID, "error", err)
				continue
			}
			done = append(done, e.ID)
		}
		if len(done) == 0 {
			continue
		}
		if acking != nil {
			<-acking
		}
		acking = make(chan struct{})
		go func(done []string, finished chan struct{}) {
			defer close(finished)
			if err := in.Ack(ctx, done...); err != nil {
				log.Warn("acknowledge intake entries; they will be read again and dedup stops a second send", "entries", len(done), "error", err)
			}
		}(done, acking)
	}
}

// cachedReady answers check's last result for up to ttl, so a stream
// taking thousands of entries a second does not ping every Redis master
// per entry. An entry taken in the moment after Redis went away fails at
// its own Redis call instead and stays pending, as it would have anyway.
func cachedReady(check func(context.Context) error, ttl time.Duration, now func() time.Time) func(context.Context) error {
	var mu sync.Mutex
	var at time.Time
	var last error
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if t := now(); at.IsZero() || t.Sub(at) >= ttl || t.Before(at) {
			last, at = check(ctx), t
		}
		return last
	}
}

// permanentCreateError reports whether retrying the same request cannot help.
func permanentCreateError(err error) bool {
	var fe *campaigns.FieldError
	var ce *templates.CompileError
	return errors.As(err, &fe) || errors.As(err, &ce) || errors.Is(err, campaigns.ErrConflict)
}

// intakeRequest handles one intake entry: a trigger ({"trigger": {...}}), a
// batch of them ({"triggers": [...]}), or a campaign (its JSON).
func (d *Daemon) intakeRequest(ctx context.Context, body []byte) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return &campaigns.FieldError{Field: "body", Msg: "not a JSON object"}
	}
	if t, ok := probe["trigger"]; ok {
		body = t
	}
	if _, ok := probe["trigger"]; ok || probe["triggers"] != nil {
		return d.takeTriggers(ctx, body, d.triggers.wrap("stream", d.flows.Fire))
	}
	_, _, err := d.engine.Create(ctx, body)
	return err
}

// ServeShardStream takes the triggers other daemons of the fleet forward to
// this daemon's shard (its own stream, ForShard) until ctx ends: what
// `notifyd serve` runs in a fleet, and what `notifyd bench trigger --shards`
// measures. ready, if set, holds entries while the daemon is not ready.
func ServeShardStream(ctx context.Context, in campaigns.Intake, flows *campaigns.FlowEngine, ready func(context.Context) error, cfg IntakeConfig, log *slog.Logger) {
	intakeLoop(ctx, in, func(ctx context.Context, body []byte) error {
		fwd, err := campaigns.DecodeForwarded(body)
		if err != nil {
			return err
		}
		return fireTriggers(ctx, ready, fwd.Triggers, cfg.Triggers.wrap("shard_stream", func(ctx context.Context, _ []campaigns.Trigger) ([]campaigns.TriggerResult, error) {
			return flows.FireForwarded(ctx, fwd)
		}))
	}, cfg, log)
}

// takeTriggers fires an intake entry's triggers. As for POST /v1/triggers,
// a trigger taken while the state store is away would wait at its dedup
// claim: an error that is not permanent leaves the entry pending, to be
// retried, and so does a full trigger queue.
func (d *Daemon) takeTriggers(ctx context.Context, body []byte, fire func(context.Context, []campaigns.Trigger) ([]campaigns.TriggerResult, error)) error {
	triggers, err := campaigns.DecodeTriggers(body)
	if err != nil {
		return err
	}
	return fireTriggers(ctx, d.intakeReady, triggers, fire)
}

func fireTriggers(ctx context.Context, ready func(context.Context) error, triggers []campaigns.Trigger, fire func(context.Context, []campaigns.Trigger) ([]campaigns.TriggerResult, error)) error {
	if ready != nil {
		if err := ready(ctx); err != nil {
			return fmt.Errorf("take triggers: daemon not ready: %w", err)
		}
	}
	res, err := fire(ctx, triggers)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Status == "overloaded" {
			return campaigns.ErrOverloaded // stays pending; retried
		}
	}
	return nil
}

// NewFleetRouter places users on ring (this daemon's shard file's) and
// forwards triggers for other shards' users to their shard's stream in rs.
func NewFleetRouter(ring shard.RingInfo, rs *redisstate.Store) campaigns.TriggerRouter {
	return &fleetRouter{ring: ring, store: rs}
}

// fleetRouter places users on the ring of the shard file and forwards
// triggers for other shards' users to their shard's intake stream.
type fleetRouter struct {
	ring  shard.RingInfo
	store *redisstate.Store
}

var _ campaigns.TriggerRouter = (*fleetRouter)(nil)

func (f *fleetRouter) Owner(userID string) (int, bool) {
	k := shard.ShardOf(shard.Key(userID), f.ring.Shards)
	return k, k == f.ring.Shard
}

func (f *fleetRouter) Forward(ctx context.Context, byShard map[int]campaigns.Forwarded) error {
	bodies := make(map[int][]byte, len(byShard))
	for k, fwd := range byShard {
		body, err := json.Marshal(fwd)
		if err != nil {
			return fmt.Errorf("encode triggers for shard %d: %w", k, err)
		}
		bodies[k] = body
	}
	return f.store.EnqueueShards(ctx, bodies)
}

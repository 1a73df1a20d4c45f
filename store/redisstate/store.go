package redisstate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

var (
	_ campaigns.DedupLog      = (*Dedup)(nil)
	_ campaigns.ProgressStore = (*Store)(nil)
	_ campaigns.CampaignStore = (*Store)(nil)
	_ campaigns.Intake        = (*Store)(nil)
	_ campaigns.StateRestorer = (*Store)(nil)
)

// DefaultPrefix starts every key notifyd writes.
const DefaultPrefix = "notifyd:"

// DefaultGroup is the intake stream's consumer group.
const DefaultGroup = "notifyd"

// Store is the Redis state layer. It holds no state of its own beyond the
// client and the compiled scripts, so any number of Stores (and daemons) may
// share one Redis.
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	group   string
	stream  string // the intake stream's name under the prefix ("intake")
	kind    string // record kind: "c" (campaigns) or "f" (flows); keys and index differ
	delayed string // the delay queue's hash tag ("delayed")
	cluster bool   // group per-message scripts by hash tag (one slot per call)
	// capGroupBits: the top bits of a user key that name its cap group (caps.go)
	capGroupBits int
	// clock: the server's clock, for claims sent as plain SETs (cluster mode);
	// shared by the Stores derived from this one.
	clock *serverClock
	now   func() time.Time

	claim, confirm, release        *redis.Script
	acquire, renew, unlease        *redis.Script
	claimDue                       *redis.Script
	claimBatch, report, retried    *redis.Script
	createRecord, transitionRecord *redis.Script
	restore, restoreRec            *redis.Script
	complete, pinRing              *redis.Script
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the key prefix (DefaultPrefix otherwise). It must not
// contain '{' or '}', which would move the hash tags.
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithGroup sets the intake consumer group (DefaultGroup otherwise).
func WithGroup(g string) Option { return func(s *Store) { s.group = g } }

// WithClusterScripts makes per-message scripts touch one hash tag per call
// even on a single-node client. It is on by itself for a *redis.ClusterClient.
func WithClusterScripts() Option { return func(s *Store) { s.cluster = true } }

// WithClock sets the local clock (time.Now otherwise) that the server's
// clock is estimated from.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, opts ...Option) (*Store, error) {
	s := &Store{rdb: rdb, prefix: DefaultPrefix, group: DefaultGroup, stream: "intake", delayed: "delayed", kind: "c", capGroupBits: DefaultCapGroupBits, now: time.Now}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		s.cluster = true
	}
	for _, o := range opts {
		o(s)
	}
	if strings.ContainsAny(s.prefix, "{}") {
		return nil, fmt.Errorf("configure redis state: prefix %q must not contain '{' or '}'", s.prefix)
	}
	if s.group == "" {
		return nil, errors.New("configure redis state: empty consumer group")
	}
	if s.capGroupBits < capBucketBits || s.capGroupBits > 32 {
		return nil, fmt.Errorf("configure redis state: cap group bits %d, want %d to 32", s.capGroupBits, capBucketBits)
	}
	if s.now == nil {
		return nil, errors.New("configure redis state: nil clock")
	}
	s.clock = &serverClock{rdb: rdb, now: s.now}
	s.claim = redis.NewScript(claimSrc)
	s.confirm = redis.NewScript(confirmSrc)
	s.release = redis.NewScript(releaseSrc)
	s.acquire = redis.NewScript(acquireSrc)
	s.renew = redis.NewScript(renewSrc)
	s.unlease = redis.NewScript(unleaseSrc)
	s.claimDue = redis.NewScript(claimDueSrc)
	s.claimBatch = redis.NewScript(claimBatchSrc)
	s.report = redis.NewScript(reportSrc)
	s.retried = redis.NewScript(retriedSrc)
	s.createRecord = redis.NewScript(createSrc)
	s.transitionRecord = redis.NewScript(transitionSrc)
	s.restore = redis.NewScript(restoreSrc)
	s.restoreRec = redis.NewScript(restoreRecSrc)
	s.complete = redis.NewScript(completeSrc)
	s.pinRing = redis.NewScript(pinRingSrc)
	return s, nil
}

// ---- keys (docs/redis-keys.md) ----

func hex16(v uint64) string {
	var b [16]byte
	const digits = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

func parseHex16(s string) (uint64, error) { return strconv.ParseUint(s, 16, 64) }

// dedupKey is <prefix>d:{u:<user hex>}:<scope>:<channel>.
func (s *Store) dedupKey(buf []byte, k campaigns.DedupKey) []byte {
	buf = append(buf, s.prefix...)
	buf = append(buf, "d:{u:"...)
	buf = strconv.AppendUint(buf, k.User, 16)
	buf = append(buf, "}:"...)
	buf = append(buf, k.Scope...)
	buf = append(buf, ':')
	return append(buf, k.Channel...)
}

// campaignKey is <prefix>c:{c:<id>}:<part>.
func (s *Store) campaignKey(id, part string) string {
	return s.prefix + s.kind + ":{" + s.kind + ":" + id + "}:" + part
}

func (s *Store) indexKey() string {
	if s.kind == "f" {
		return s.prefix + "flows"
	}
	return s.prefix + "campaigns"
}

// Flows returns the Store of flow records: a kind of its own, with its own
// keys (f:{f:<id>}:rec) and index (flows), so a campaign operation can never
// reach a flow and listing campaigns never reads flows.
func (s *Store) Flows() *Store {
	c := *s
	c.kind = "f"
	return &c
}
func (s *Store) intakeKey() string { return s.prefix + s.stream }

// ForShard returns a Store whose intake stream and delay queue are shard's
// own ("intake:s<shard>", "{delayed:s<shard>}"): in a fleet, triggers for a
// shard's users are handed to its daemon through them. Everything else is
// shared with s.
func (s *Store) ForShard(shard int) *Store {
	c := *s
	c.stream = "intake:s" + strconv.Itoa(shard)
	c.delayed = "delayed:s" + strconv.Itoa(shard)
	return &c
}

// ---- per-message dedup ----

// Dedup is a DedupLog for one owner; leases it takes can only be released by it.
type Dedup struct {
	s     *Store
	owner string
	// attempt: owner names one attempt (Attempt), whose own leases from
	// an earlier failed call count as claimed.
	attempt bool
}

var _ campaigns.AttemptDedup = (*Dedup)(nil)

// Attempt implements campaigns.AttemptDedup: the returned DedupLog writes
// leases as owner#token, and its claims take a lease of the same attempt
// (written by a call whose reply was lost, or that failed on another node)
// as theirs. Only a caller that sent nothing under the attempt may retry
// with it; a key twice in one call still answers held the second time.
func (d *Dedup) Attempt(token string) campaigns.DedupLog {
	return &Dedup{s: d.s, owner: d.owner + "#" + token, attempt: true}
}

func (d *Dedup) attemptArg() string {
	if d.attempt {
		return "1"
	}
	return "0"
}

// Dedup returns the DedupLog of owner (unique per process incarnation, e.g.
// host/pid/random).
func (s *Store) Dedup(owner string) *Dedup { return &Dedup{s: s, owner: owner} }

// groups splits keys into script calls: one call for all keys on a single
// node, one per user (hash tag) in cluster mode. idx maps back to positions.
func (d *Dedup) groups(keys []campaigns.DedupKey) (calls [][]string, idx [][]int) {
	names := make([]string, len(keys))
	var buf []byte
	for i, k := range keys {
		buf = d.s.dedupKey(buf[:0], k)
		names[i] = string(buf)
	}
	if !d.s.cluster {
		all := make([]int, len(keys))
		for i := range all {
			all[i] = i
		}
		return [][]string{names}, [][]int{all}
	}
	byUser := make(map[uint64]int)
	for i, k := range keys {
		g, ok := byUser[k.User]
		if !ok {
			g = len(calls)
			byUser[k.User] = g
			calls = append(calls, nil)
			idx = append(idx, nil)
		}
		calls[g] = append(calls[g], names[i])
		idx[g] = append(idx[g], i)
	}
	return calls, idx
}

// runGrouped runs script once per group in one pipeline (on a cluster client
// go-redis sends it as one pipeline per node). EVALSHA cannot fall back to
// EVAL inside a pipeline, so groups answered NOSCRIPT are re-run with Run,
// which loads the script; they were not executed, so this is safe.
func (s *Store) runGrouped(ctx context.Context, script *redis.Script, calls [][]string, args ...any) ([]*redis.Cmd, error) {
	if len(calls) == 1 {
		c := script.Run(ctx, s.rdb, calls[0], args...)
		return []*redis.Cmd{c}, c.Err()
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, keys := range calls {
		cmds[i] = script.EvalSha(ctx, pipe, keys, args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmds[i] = script.Run(ctx, s.rdb, calls[i], args...)
		}
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return cmds, err
		}
	}
	return cmds, nil
}

func ms(d time.Duration) int64 { return int64(d / time.Millisecond) }

// Claim implements campaigns.DedupLog.
func (d *Dedup) Claim(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	if lease < time.Millisecond || window < lease {
		return nil, fmt.Errorf("claim dedup keys: lease %v must be at least 1ms and window %v at least the lease", lease, window)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	if d.s.cluster {
		return d.claimPlain(ctx, keys, lease, window)
	}
	return d.claimScript(ctx, keys, lease, window)
}

func (d *Dedup) claimScript(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	calls, idx := d.groups(keys)
	cmds, err := d.s.runGrouped(ctx, d.s.claim, calls, ms(lease), ms(window), d.owner, d.attemptArg())
	if err != nil {
		return nil, fmt.Errorf("claim dedup keys: %w", err)
	}
	out := make([]campaigns.ClaimState, len(keys))
	for g, c := range cmds {
		codes, err := c.Int64Slice()
		if err != nil || len(codes) != len(idx[g]) {
			return nil, fmt.Errorf("claim dedup keys: unexpected reply %v: %w", c.Val(), err)
		}
		for j, code := range codes {
			out[idx[g][j]] = campaigns.ClaimState(code)
		}
	}
	return out, nil
}

// claimPlain claims keys that live in many slots (cluster mode) with one
// pipelined SET NX GET per key, which go-redis sends as one pipeline per
// node: a key that did not exist (the common case) is claimed by it, and one
// found confirmed is a duplicate. Only keys found leased go through the claim
// script, which decides held or in doubt atomically. A script call per user
// cost three times the server's CPU of a SET and most of the client's
// allocations per claim. The lease end is the server's clock (serverClock),
// in the script's format, so either path reads what the other wrote.
func (d *Dedup) claimPlain(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	now, err := d.s.clock.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim dedup keys: %w", err)
	}
	leasedStr := "L" + strconv.FormatInt(now.UnixMilli()+ms(lease), 10) + ":" + d.owner
	var leased any = leasedStr // boxed once: an interface per command would allocate per key
	cmds, _ := d.setEach(ctx, keys, leased, ms(window), "nx", "get")
	out := make([]campaigns.ClaimState, len(keys))
	var (
		leasedBefore []int
		failed       error
	)
	for i := range cmds {
		v, err := cmds[i].Result()
		switch {
		case err == redis.Nil:
			out[i] = campaigns.Claimed
		case err != nil:
			failed = cmp.Or(failed, err)
		case v == "C":
			out[i] = campaigns.Duplicate
		case v == leasedStr && slices.Contains(keys[:i], keys[i]):
			// Set by this very call for the same key earlier in it: the
			// second occurrence waits, as in the script. (An equal value
			// alone could also be this attempt's earlier call, in the same
			// millisecond: that one the script claims.)
			out[i] = campaigns.Held
		default:
			leasedBefore = append(leasedBefore, i)
		}
	}
	if failed != nil {
		return nil, d.undoClaims(ctx, keys, out, fmt.Errorf("claim dedup keys: %w", failed))
	}
	if len(leasedBefore) == 0 {
		return out, nil
	}
	rest := make([]campaigns.DedupKey, len(leasedBefore))
	for j, i := range leasedBefore {
		rest[j] = keys[i]
	}
	st, err := d.claimScript(ctx, rest, lease, window)
	if err != nil {
		return nil, d.undoClaims(ctx, keys, out, err)
	}
	for j, i := range leasedBefore {
		out[i] = st[j]
	}
	return out, nil
}

// undoClaims releases the keys a failed claim call did set (out[i] ==
// Claimed) and returns err. In cluster mode a call spans nodes: when one of
// them fails, the others have taken their keys, and the caller, told the
// call failed, sends nothing and claims again. Kept, those leases would be
// its own from then on, held until they end and then in doubt, which SMS and
// email skip: the messages would be lost. The release gets its own short
// deadline, since the caller's context may be what ended the call; if it
// fails too, the keys go back to being in doubt after the lease, as before.
func (d *Dedup) undoClaims(ctx context.Context, keys []campaigns.DedupKey, out []campaigns.ClaimState, err error) error {
	var taken []campaigns.DedupKey
	for i, st := range out {
		if st == campaigns.Claimed {
			taken = append(taken, keys[i])
		}
	}
	if len(taken) == 0 {
		return err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if rerr := d.Release(rctx, taken); rerr != nil {
		return fmt.Errorf("%w (and %d keys it had claimed stay leased until the lease ends: %v)", err, len(taken), rerr)
	}
	return err
}

// setEach sends SET <key> value PX <pxMS> [flags] for each key in one
// pipeline (one per node on a cluster client) and returns the replies in key
// order with the pipeline's first error.
func (d *Dedup) setEach(ctx context.Context, keys []campaigns.DedupKey, value any, pxMS int64, flags ...any) ([]redis.StringCmd, error) {
	var px any = pxMS // boxed once: an interface per command would allocate per key
	pipe := d.s.rdb.Pipeline()
	cmds := make([]redis.StringCmd, len(keys))
	var buf []byte
	for i, k := range keys {
		buf = d.s.dedupKey(buf[:0], k)
		args := append(make([]any, 0, 5+len(flags)), "set", string(buf), value, "px", px)
		cmds[i] = *redis.NewStringCmd(ctx, append(args, flags...)...)
		_ = pipe.Process(ctx, &cmds[i])
	}
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// Confirm implements campaigns.DedupLog. In cluster mode it is one pipelined
// SET per key (one pipeline per node) rather than a script call per user.
func (d *Dedup) Confirm(ctx context.Context, keys []campaigns.DedupKey, window time.Duration) error {
	if window < time.Millisecond {
		return fmt.Errorf("confirm dedup keys: window %v must be at least 1ms", window)
	}
	if len(keys) == 0 {
		return nil
	}
	if d.s.cluster {
		if _, err := d.setEach(ctx, keys, "C", ms(window)); err != nil {
			return fmt.Errorf("confirm dedup keys: %w", err)
		}
		return nil
	}
	calls, _ := d.groups(keys)
	if _, err := d.s.runGrouped(ctx, d.s.confirm, calls, ms(window)); err != nil {
		return fmt.Errorf("confirm dedup keys: %w", err)
	}
	return nil
}

// Release implements campaigns.DedupLog.
func (d *Dedup) Release(ctx context.Context, keys []campaigns.DedupKey) error {
	if len(keys) == 0 {
		return nil
	}
	calls, _ := d.groups(keys)
	if _, err := d.s.runGrouped(ctx, d.s.release, calls, d.owner); err != nil {
		return fmt.Errorf("release dedup keys: %w", err)
	}
	return nil
}

// ---- campaign records ----

func compactJSON(def []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, def); err != nil {
		return nil, fmt.Errorf("parse definition: %w", err)
	}
	return buf.Bytes(), nil
}

func msTime(v any) time.Time {
	n, _ := v.(int64)
	return time.UnixMilli(n)
}

// Create implements campaigns.CampaignStore. The index entry is written first
// (a different slot, so not in the same script): a crash between the two
// leaves an index entry without a record, which List skips and a retried
// Create completes.
func (s *Store) Create(ctx context.Context, id string, definition []byte) (campaigns.CampaignRecord, bool, error) {
	if id == "" {
		return campaigns.CampaignRecord{}, false, errors.New("create campaign: empty id")
	}
	def, err := compactJSON(definition)
	if err != nil {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, err)
	}
	if err := s.rdb.ZAddNX(ctx, s.indexKey(), redis.Z{Member: id}).Err(); err != nil {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: index: %w", id, err)
	}
	v, err := s.createRecord.Run(ctx, s.rdb, []string{s.campaignKey(id, "rec")}, def).Slice()
	if err != nil {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, err)
	}
	if code, _ := v[0].(int64); code == -1 {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, campaigns.ErrConflict)
	}
	if len(v) != 4 {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: unexpected reply %v", id, v)
	}
	st, _ := v[1].(string)
	rec := campaigns.CampaignRecord{ID: id, Definition: def, Status: campaigns.Status(st), Created: msTime(v[2]), Updated: msTime(v[3])}
	return rec, v[0].(int64) == 1, nil
}

func recordFrom(id string, vals []any) (campaigns.CampaignRecord, bool) {
	def, ok := vals[0].(string)
	if !ok {
		return campaigns.CampaignRecord{}, false
	}
	st, _ := vals[1].(string)
	ct, _ := vals[2].(string)
	ut, _ := vals[3].(string)
	why, _ := vals[4].(string)
	ring, _ := vals[5].(string)
	c, _ := strconv.ParseInt(ct, 10, 64)
	u, _ := strconv.ParseInt(ut, 10, 64)
	return campaigns.CampaignRecord{ID: id, Definition: json.RawMessage(def), Status: campaigns.Status(st), Reason: why, Ring: ring, Created: time.UnixMilli(c), Updated: time.UnixMilli(u)}, true
}

// Get implements campaigns.CampaignStore.
func (s *Store) Get(ctx context.Context, id string) (campaigns.CampaignRecord, error) {
	vals, err := s.rdb.HMGet(ctx, s.campaignKey(id, "rec"), "def", "st", "ct", "ut", "why", "ring").Result()
	if err != nil {
		return campaigns.CampaignRecord{}, fmt.Errorf("get campaign %q: %w", id, err)
	}
	rec, ok := recordFrom(id, vals)
	if !ok {
		return campaigns.CampaignRecord{}, fmt.Errorf("get campaign %q: %w", id, campaigns.ErrNotFound)
	}
	return rec, nil
}

// List implements campaigns.CampaignStore: ids from the index in lexical
// order, records fetched in one pipeline per page.
func (s *Store) List(ctx context.Context, after string, limit int) ([]campaigns.CampaignRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list campaigns: limit %d must be positive", limit)
	}
	var out []campaigns.CampaignRecord
	for len(out) < limit {
		min := "-"
		if after != "" {
			min = "(" + after
		}
		want := int64(limit - len(out))
		ids, err := s.rdb.ZRangeByLex(ctx, s.indexKey(), &redis.ZRangeBy{Min: min, Max: "+", Count: want}).Result()
		if err != nil {
			return nil, fmt.Errorf("list campaigns: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, s.campaignKey(id, "rec"), "def", "st", "ct", "ut", "why", "ring")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list campaigns: %w", err)
		}
		for i, c := range cmds {
			if rec, ok := recordFrom(ids[i], c.Val()); ok {
				out = append(out, rec)
			}
		}
		after = ids[len(ids)-1]
		if int64(len(ids)) < want {
			break
		}
	}
	return out, nil
}

// PinRing implements campaigns.CampaignStore.
func (s *Store) PinRing(ctx context.Context, id, ring string) (string, error) {
	v, err := s.pinRing.Run(ctx, s.rdb, []string{s.campaignKey(id, "rec")}, ring).Text()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("pin ring of campaign %q: %w", id, campaigns.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("pin ring of campaign %q: %w", id, err)
	}
	return v, nil
}

// Transition implements campaigns.CampaignStore.
func (s *Store) Transition(ctx context.Context, id string, from, to campaigns.Status) (campaigns.CampaignRecord, error) {
	return s.TransitionBecause(ctx, id, from, to, "")
}

// TransitionBecause implements campaigns.CampaignStore.
func (s *Store) TransitionBecause(ctx context.Context, id string, from, to campaigns.Status, reason string) (campaigns.CampaignRecord, error) {
	if !from.CanTransition(to) {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q from %q to %q: %w", id, from, to, campaigns.ErrInvalidTransition)
	}
	v, err := s.transitionRecord.Run(ctx, s.rdb, []string{s.campaignKey(id, "rec")}, string(from), string(to), reason).Slice()
	if err != nil {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q: %w", id, err)
	}
	switch code, _ := v[0].(int64); code {
	case -1:
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q: %w", id, campaigns.ErrNotFound)
	case -2:
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q from %q (now %v): %w", id, from, v[1], campaigns.ErrStatusChanged)
	}
	if len(v) != 4 {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q: unexpected reply %v", id, v)
	}
	def, _ := v[1].(string)
	return campaigns.CampaignRecord{ID: id, Definition: json.RawMessage(def), Status: to, Reason: reason, Created: msTime(v[2]), Updated: msTime(v[3])}, nil
}

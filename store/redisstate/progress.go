package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
)

// Campaign progress: a lease key, a progress hash (fence, seq, hi, cseq, cur),
// one hash holding the open batch records and their bitmaps, a counts hash
// and a failures sorted set — all under the campaign's hash tag, so each
// operation is one script call in one slot. Nothing is written per message.

type progressKeys struct{ lease, prog, bat, cnt, fail string }

func (s *Store) progressKeys(campaign string) progressKeys {
	return progressKeys{
		lease: s.campaignKey(campaign, "lease"),
		prog:  s.campaignKey(campaign, "prog"),
		bat:   s.campaignKey(campaign, "bat"),
		cnt:   s.campaignKey(campaign, "cnt"),
		fail:  s.campaignKey(campaign, "fail"),
	}
}

func leaseValue(l campaigns.Lease) string { return strconv.FormatInt(l.Token, 10) + ":" + l.Owner }

// Acquire implements campaigns.CampaignLeaser. The lease is taken by a script
// and the resume state read in the round trip after it: once the lease is
// ours nobody else writes the campaign, so the read needs no atomicity with it.
func (s *Store) Acquire(ctx context.Context, campaign, owner string, ttl time.Duration) (campaigns.Resume, error) {
	if campaign == "" || owner == "" || ttl < time.Millisecond {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: need a campaign, an owner and a ttl of at least 1ms", campaign)
	}
	k := s.progressKeys(campaign)
	v, err := s.acquire.Run(ctx, s.rdb, []string{k.lease, k.prog}, owner, ms(ttl)).Int64Slice()
	if err != nil {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, err)
	}
	if len(v) == 0 || v[0] < 0 {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, campaigns.ErrHeld)
	}
	tok := v[0]
	pipe := s.rdb.Pipeline()
	progCmd := pipe.HGetAll(ctx, k.prog)
	batCmd := pipe.HGetAll(ctx, k.bat)
	if _, err := pipe.Exec(ctx); err != nil {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: read progress: %w", campaign, err)
	}
	r := campaigns.Resume{Lease: campaigns.Lease{Campaign: campaign, Owner: owner, Token: tok}}
	if len(v) > 1 {
		r.Crashes = int(v[1])
	}
	prog := progCmd.Val()
	if r.Checkpoint, err = checkpointFrom(prog["cseq"], prog["cur"]); err != nil {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, err)
	}
	if hi, ok := prog["hi"]; ok {
		if r.LastClaimed, err = parseHex16(hi); err != nil {
			return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: parse last claimed key: %w", campaign, err)
		}
		r.HasClaimed = true
	}
	if r.Open, err = batchesFrom(batCmd.Val()); err != nil {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, err)
	}
	return r, nil
}

func checkpointFrom(cseq, cur string) (campaigns.Checkpoint, error) {
	if cseq == "" || cseq == "0" {
		return campaigns.Checkpoint{}, nil
	}
	seq, err := strconv.ParseInt(cseq, 10, 64)
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("parse checkpoint seq %q: %w", cseq, err)
	}
	key, err := parseHex16(cur)
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("parse checkpoint key %q: %w", cur, err)
	}
	return campaigns.Checkpoint{Seq: seq, Key: key, Valid: true}, nil
}

// batchesFrom decodes the batch hash: "<seq>" → "<first>:<last>:<slots>:<token>:<final>",
// "<seq>d|c|f" → bitmaps.
func batchesFrom(h map[string]string) ([]campaigns.Batch, error) {
	var out []campaigns.Batch
	for f, v := range h {
		seq, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			continue // a bitmap field; read below with its batch
		}
		parts := strings.Split(v, ":")
		if len(parts) != 5 {
			return nil, fmt.Errorf("parse batch %d record %q", seq, v)
		}
		b := campaigns.Batch{Seq: seq, Final: parts[4] == "1"}
		var e1, e2, e3, e4 error
		b.First, e1 = parseHex16(parts[0])
		b.Last, e2 = parseHex16(parts[1])
		b.Slots, e3 = strconv.Atoi(parts[2])
		b.Token, e4 = strconv.ParseInt(parts[3], 10, 64)
		if err := errors.Join(e1, e2, e3, e4); err != nil {
			return nil, fmt.Errorf("parse batch %d record: %w", seq, err)
		}
		n := (b.Slots + 7) / 8
		b.Dispatched = bitmapField(h[f+"d"], n)
		b.Confirmed = bitmapField(h[f+"c"], n)
		b.Done = bitmapField(h[f+"f"], n)
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b campaigns.Batch) int { return int(a.Seq - b.Seq) })
	return out, nil
}

func bitmapField(v string, n int) campaigns.Bitmap {
	b := campaigns.NewBitmap(0)
	b = append(b, v...)
	if len(b) < n {
		b = append(b, make([]byte, n-len(b))...)
	}
	return b
}

// Renew implements campaigns.CampaignLeaser.
func (s *Store) Renew(ctx context.Context, l campaigns.Lease, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("renew campaign lease %q: ttl %v must be at least 1ms", l.Campaign, ttl)
	}
	k := s.progressKeys(l.Campaign)
	ok, err := s.renew.Run(ctx, s.rdb, []string{k.lease, k.prog}, leaseValue(l), l.Token, ms(ttl)).Int64()
	if err != nil {
		return fmt.Errorf("renew campaign lease %q: %w", l.Campaign, err)
	}
	if ok != 1 {
		return fmt.Errorf("renew campaign lease %q: %w", l.Campaign, campaigns.ErrLeaseLost)
	}
	return nil
}

// Release implements campaigns.CampaignLeaser.
func (s *Store) Release(ctx context.Context, l campaigns.Lease) error {
	k := s.progressKeys(l.Campaign)
	if err := s.unlease.Run(ctx, s.rdb, []string{k.lease, k.prog}, leaseValue(l)).Err(); err != nil {
		return fmt.Errorf("release campaign lease %q: %w", l.Campaign, err)
	}
	return nil
}

// ClaimBatch implements campaigns.BatchLog.
func (s *Store) ClaimBatch(ctx context.Context, l campaigns.Lease, first, last uint64, slots int) (int64, error) {
	if first > last || slots < 0 {
		return 0, fmt.Errorf("claim batch of %q: bad range %d..%d or slots %d", l.Campaign, first, last, slots)
	}
	k := s.progressKeys(l.Campaign)
	seq, err := s.claimBatch.Run(ctx, s.rdb, []string{k.lease, k.prog, k.bat},
		leaseValue(l), l.Token, hex16(first), hex16(last), slots).Int64()
	if err != nil {
		return 0, fmt.Errorf("claim batch of %q: %w", l.Campaign, err)
	}
	switch seq {
	case -1:
		return 0, fmt.Errorf("claim batch of %q: %w", l.Campaign, campaigns.ErrLeaseLost)
	case -5:
		return 0, fmt.Errorf("claim batch of %q from key %d: %w", l.Campaign, first, campaigns.ErrBatchOrder)
	}
	return seq, nil
}

func checkChannel(ch string) error {
	if strings.ContainsAny(ch, ":@") {
		return fmt.Errorf("channel %q must not contain ':' or '@'", ch)
	}
	return nil
}

// countField is a count's field in the counts hash: "<channel>:<reason>",
// or "<channel>@<variant>:<reason>" for an A/B group, so a campaign without
// variants keeps the layout it always had.
func countField(c campaigns.Count) (string, error) {
	if err := checkChannel(c.Channel); err != nil {
		return "", err
	}
	if c.Variant == "" {
		return c.Channel + ":" + c.Reason, nil
	}
	if strings.ContainsAny(c.Variant, ":@") {
		return "", fmt.Errorf("variant %q must not contain ':' or '@'", c.Variant)
	}
	return c.Channel + "@" + c.Variant + ":" + c.Reason, nil
}

// failurePrefix is "<user hex16>:<channel>:<address index>:", unique per
// address: a new reason for the same address replaces the old one.
func failurePrefix(f campaigns.Failure) string {
	return hex16(f.User) + ":" + f.Channel + ":" + strconv.Itoa(f.Address) + ":"
}

// ReportBatch implements campaigns.BatchLog: a flush of one report, not
// checked for replay.
func (s *Store) ReportBatch(ctx context.Context, l campaigns.Lease, r campaigns.BatchReport) (campaigns.Checkpoint, error) {
	cp, err := s.record(ctx, l, "o", campaigns.Flush{Reports: []campaigns.BatchReport{r}})
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("report batch %d of %q: %w", r.Seq, l.Campaign, err)
	}
	return cp, nil
}

// Record implements campaigns.BatchLog: one script call for the whole flush.
func (s *Store) Record(ctx context.Context, l campaigns.Lease, f campaigns.Flush) (campaigns.Checkpoint, error) {
	mode := "s"
	if f.Progress {
		mode = "p"
	}
	cp, err := s.record(ctx, l, mode, f)
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("record ledger flush %d of %q: %w", f.ID, l.Campaign, err)
	}
	return cp, nil
}

func (s *Store) record(ctx context.Context, l campaigns.Lease, mode string, f campaigns.Flush) (campaigns.Checkpoint, error) {
	n := 5
	for _, r := range f.Reports {
		n += 10 + 2*len(r.Counts) + 2*len(r.Failures)
	}
	args := make([]any, 0, n)
	args = append(args, leaseValue(l), l.Token, f.ID, mode, len(f.Reports))
	for _, r := range f.Reports {
		final := 0
		if r.Final {
			final = 1
		}
		if r.Base < 0 || r.Slots < 0 || (mode == "o" && (r.Base != 0 || r.Slots != 0)) {
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: bad bitmap base %d", r.Seq, r.Base)
		}
		args = append(args, r.Seq, final, r.Base, r.Slots, []byte(r.Dispatched), []byte(r.Confirmed), []byte(r.Done), len(r.Counts))
		for _, c := range r.Counts {
			field, err := countField(c)
			if err != nil {
				return campaigns.Checkpoint{}, err
			}
			args = append(args, field, c.N)
		}
		args = append(args, len(r.Failures))
		for _, f := range r.Failures {
			if err := checkChannel(f.Channel); err != nil {
				return campaigns.Checkpoint{}, err
			}
			args = append(args, failurePrefix(f), f.Reason)
		}
	}
	k := s.progressKeys(l.Campaign)
	v, err := s.report.Run(ctx, s.rdb, []string{k.lease, k.prog, k.bat, k.cnt, k.fail}, args...).Slice()
	if err != nil {
		return campaigns.Checkpoint{}, err
	}
	if len(v) == 2 {
		if code, ok := v[0].(int64); ok && code < 0 {
			idx, _ := v[1].(int64)
			seq := int64(0)
			if idx >= 1 && int(idx) <= len(f.Reports) {
				seq = f.Reports[idx-1].Seq
			}
			var cause error
			switch code {
			case -1:
				return campaigns.Checkpoint{}, campaigns.ErrLeaseLost
			case -2:
				cause = campaigns.ErrUnknownBatch
			case -3:
				cause = campaigns.ErrBatchFinal
			case -4:
				cause = errors.New("bitmap longer than the batch")
			default:
				cause = fmt.Errorf("unexpected reply %v", v)
			}
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: %w", seq, cause)
		}
	}
	if len(v) != 2 {
		return campaigns.Checkpoint{}, fmt.Errorf("unexpected reply %v", v)
	}
	cseq, _ := v[0].(int64)
	cur, _ := v[1].(string)
	return checkpointFrom(strconv.FormatInt(cseq, 10), cur)
}

// Failures implements campaigns.FailureLog. The cursor is the last member
// returned; pages are exact (ZRANGEBYLEX), in user-key order.
func (s *Store) Failures(ctx context.Context, campaign, cursor string, limit int) ([]campaigns.Failure, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("list failures of %q: limit %d must be positive", campaign, limit)
	}
	min := "-"
	if cursor != "" {
		min = "(" + cursor
	}
	members, err := s.rdb.ZRangeByLex(ctx, s.campaignKey(campaign, "fail"), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit) + 1}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list failures of %q: %w", campaign, err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = members[limit-1]
	}
	out := make([]campaigns.Failure, 0, len(members))
	for _, m := range members {
		f, err := parseFailure(m)
		if err != nil {
			return nil, "", fmt.Errorf("list failures of %q: %w", campaign, err)
		}
		out = append(out, f)
	}
	return out, next, nil
}

// parseFailure reads "<user>:<channel>:<address>:<reason>", or the older
// "<user>:<channel>:<reason>" (address 0) written before failures were kept
// per address.
func parseFailure(m string) (campaigns.Failure, error) {
	parts := strings.SplitN(m, ":", 4)
	if len(parts) < 3 {
		return campaigns.Failure{}, fmt.Errorf("bad member %q", m)
	}
	u, err := parseHex16(parts[0])
	if err != nil {
		return campaigns.Failure{}, fmt.Errorf("bad member %q: %w", m, err)
	}
	f := campaigns.Failure{User: u, Channel: parts[1], Reason: parts[2]}
	if len(parts) == 4 {
		if f.Address, err = strconv.Atoi(parts[2]); err != nil || f.Address < 0 {
			return campaigns.Failure{}, fmt.Errorf("bad member %q: address index", m)
		}
		f.Reason = parts[3]
	}
	return f, nil
}

// MarkRetried implements campaigns.FailureLog.
func (s *Store) MarkRetried(ctx context.Context, l campaigns.Lease, r campaigns.RetryReport) error {
	args := make([]any, 0, 3+len(r.Retried)+2*len(r.Failures)+2*len(r.Counts))
	args = append(args, leaseValue(l), len(r.Retried))
	for _, f := range r.Retried {
		args = append(args, failurePrefix(f))
	}
	args = append(args, len(r.Failures))
	for _, f := range r.Failures {
		if err := checkChannel(f.Channel); err != nil {
			return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
		}
		args = append(args, failurePrefix(f), f.Reason)
	}
	for _, c := range r.Counts {
		field, err := countField(c)
		if err != nil {
			return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
		}
		args = append(args, field, c.N)
	}
	k := s.progressKeys(l.Campaign)
	ok, err := s.retried.Run(ctx, s.rdb, []string{k.lease, k.cnt, k.fail}, args...).Int64()
	if err != nil {
		return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
	}
	if ok != 1 {
		return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, campaigns.ErrLeaseLost)
	}
	return nil
}

// Progress implements campaigns.ProgressStore in one round trip.
func (s *Store) Progress(ctx context.Context, campaign string) (campaigns.Progress, error) {
	k := s.progressKeys(campaign)
	pipe := s.rdb.Pipeline()
	progCmd := pipe.HMGet(ctx, k.prog, "cseq", "cur", "done", "retry")
	cntCmd := pipe.HGetAll(ctx, k.cnt)
	failCmd := pipe.ZCard(ctx, k.fail)
	leaseCmd := pipe.Get(ctx, k.lease)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return campaigns.Progress{}, fmt.Errorf("read progress of %q: %w", campaign, err)
	}
	var out campaigns.Progress
	pv := progCmd.Val()
	cseq, _ := pv[0].(string)
	cur, _ := pv[1].(string)
	done, _ := pv[2].(string)
	retry, _ := pv[3].(string)
	out.Completed, out.Retry = done == "1", retry == "1"
	cp, err := checkpointFrom(cseq, cur)
	if err != nil {
		return campaigns.Progress{}, fmt.Errorf("read progress of %q: %w", campaign, err)
	}
	out.Checkpoint = cp
	out.Failures = failCmd.Val()
	if lv := leaseCmd.Val(); lv != "" {
		_, out.Owner, _ = strings.Cut(lv, ":")
	}
	for f, v := range cntCmd.Val() {
		ch, reason, _ := strings.Cut(f, ":")
		ch, variant, _ := strings.Cut(ch, "@")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return campaigns.Progress{}, fmt.Errorf("read progress of %q: parse count %q: %w", campaign, f, err)
		}
		out.Counts = append(out.Counts, campaigns.Count{Channel: ch, Reason: reason, Variant: variant, N: n})
	}
	slices.SortFunc(out.Counts, func(a, b campaigns.Count) int {
		if c := strings.Compare(a.Channel, b.Channel); c != 0 {
			return c
		}
		if c := strings.Compare(a.Reason, b.Reason); c != 0 {
			return c
		}
		return strings.Compare(a.Variant, b.Variant)
	})
	return out, nil
}

// epochTags are hash tags whose slots fall one in each sixteenth of the
// 16,384 Redis Cluster slots (checked against CLUSTER KEYSLOT by a test).
// A master of a cluster owns at least one of them unless it owns fewer than
// ~1,024 contiguous slots, so a master that restarts empty loses a marker
// even when the rest of the cluster kept its data. The markers move with
// their slots when the cluster is resharded.
var epochTags = [16]string{"e0", "e22", "e62", "e40", "e1", "e23", "e63", "e41", "e2", "e20", "e60", "e42", "e3", "e21", "e61", "e43"}

// Epoch implements campaigns.StateRestorer. The marker is a random value
// set once under each of the epoch keys; a Redis (or, in a cluster, one
// master) that lost its data has a new value under some key, so the joined
// value changes. One pipeline: one round trip per node.
func (s *Store) Epoch(ctx context.Context) (string, bool, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("read epoch: %w", err)
	}
	fresh := hex.EncodeToString(b[:])
	keys := s.epochKeys()
	pipe := s.rdb.Pipeline()
	set := make([]*redis.BoolCmd, len(keys))
	get := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		set[i] = pipe.SetNX(ctx, k, fresh, 0)
		get[i] = pipe.Get(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", false, fmt.Errorf("read epoch: %w", err)
	}
	var out strings.Builder
	created := false
	for i := range keys {
		created = created || set[i].Val()
		if i > 0 {
			out.WriteByte('.')
		}
		out.WriteString(get[i].Val())
	}
	return out.String(), created, nil
}

func (s *Store) epochKeys() []string {
	keys := make([]string, len(epochTags))
	for i, t := range epochTags {
		keys[i] = s.prefix + "epoch{" + t + "}"
	}
	return keys
}

// Restore implements campaigns.StateRestorer: the record (if absent: in a
// fleet another part's daemon may have written it), then the lease,
// progress, open batches, counts and failures of the snapshot's lease (one
// script, one slot), then the index entry (ZADD is idempotent).
func (s *Store) Restore(ctx context.Context, snap campaigns.CampaignSnapshot, ttl time.Duration) (bool, error) {
	id := snap.Record.ID
	l := snap.Lease
	leased := l.Token > 0
	if id == "" || (leased && (l.Campaign == "" || (ttl < time.Millisecond && !snap.Completed))) {
		return false, fmt.Errorf("restore campaign %q: need a record, and a ttl for its lease", id)
	}
	def, err := compactJSON(snap.Record.Definition)
	if err != nil {
		return false, fmt.Errorf("restore campaign %q: %w", id, err)
	}
	n, err := s.restoreRec.Run(ctx, s.rdb, []string{s.campaignKey(id, "rec")},
		def, string(snap.Record.Status), snap.Record.Reason, snap.Record.Created.UnixMilli(), snap.Record.Updated.UnixMilli(), snap.Record.Ring).Int64()
	if err != nil {
		return false, fmt.Errorf("restore campaign %q: %w", id, err)
	}
	restored := n == 1
	if leased {
		args := []any{leaseValue(l), ms(ttl)}
		prog := []any{"fence", l.Token, "seq", snap.Seq, "live", l.Token, "fl", strconv.FormatInt(l.Token, 10) + ":" + strconv.FormatInt(snap.Flush, 10)}
		if snap.Completed {
			// No lease: the part is done, and "done" keeps every daemon from running it.
			args[1] = 0
			prog = []any{"fence", l.Token, "seq", snap.Seq, "done", 1}
		}
		if snap.HasClaimed {
			prog = append(prog, "hi", hex16(snap.LastClaimed))
		}
		if snap.Checkpoint.Valid {
			prog = append(prog, "cseq", snap.Checkpoint.Seq, "cur", hex16(snap.Checkpoint.Key))
		}
		args = append(args, len(prog)/2)
		args = append(args, prog...)
		var bat []any
		for _, b := range snap.Open {
			fin := "0"
			if b.Final {
				fin = "1"
			}
			f := strconv.FormatInt(b.Seq, 10)
			bat = append(bat, f, hex16(b.First)+":"+hex16(b.Last)+":"+strconv.Itoa(b.Slots)+":"+strconv.FormatInt(b.Token, 10)+":"+fin,
				f+"d", []byte(b.Dispatched), f+"c", []byte(b.Confirmed), f+"f", []byte(b.Done))
		}
		args = append(args, len(bat)/2)
		args = append(args, bat...)
		args = append(args, len(snap.Counts))
		for _, c := range snap.Counts {
			field, err := countField(c)
			if err != nil {
				return false, fmt.Errorf("restore campaign %q: %w", id, err)
			}
			args = append(args, field, c.N)
		}
		for _, f := range snap.Failures {
			args = append(args, failurePrefix(f)+f.Reason)
		}
		k := s.progressKeys(l.Campaign)
		n, err := s.restore.Run(ctx, s.rdb, []string{k.lease, k.prog, k.bat, k.cnt, k.fail}, args...).Int64()
		if err != nil {
			return false, fmt.Errorf("restore progress of %q: %w", l.Campaign, err)
		}
		restored = n == 1
	}
	if err := s.rdb.ZAddNX(ctx, s.indexKey(), redis.Z{Member: id}).Err(); err != nil {
		return restored, fmt.Errorf("restore campaign %q: index: %w", id, err)
	}
	return restored, nil
}

// Reopen implements campaigns.CampaignLeaser: one MULTI on the progress hash.
func (s *Store) Reopen(ctx context.Context, campaign string) error {
	k := s.progressKeys(campaign)
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, k.prog, "retry", 1)
	pipe.HDel(ctx, k.prog, "done")
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("reopen campaign %q: %w", campaign, err)
	}
	return nil
}

// Complete implements campaigns.CampaignLeaser.
func (s *Store) Complete(ctx context.Context, l campaigns.Lease) error {
	k := s.progressKeys(l.Campaign)
	ok, err := s.complete.Run(ctx, s.rdb, []string{k.lease, k.prog}, leaseValue(l)).Int64()
	if err != nil {
		return fmt.Errorf("complete campaign %q: %w", l.Campaign, err)
	}
	if ok != 1 {
		return fmt.Errorf("complete campaign %q: %w", l.Campaign, campaigns.ErrLeaseLost)
	}
	return nil
}

package memstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

var (
	_ campaigns.DedupLog      = (*Dedup)(nil)
	_ campaigns.ProgressStore = (*Store)(nil)
	_ campaigns.CampaignStore = (*Store)(nil)
	_ campaigns.Intake        = (*Store)(nil)
)

// Store holds all state of one process behind one mutex: the state layer is
// touched once per batch, so contention is per batch, not per message.
type Store struct {
	now func() time.Time

	mu        sync.Mutex
	dedup     map[campaigns.DedupKey]dedupRecord
	dedupOps  int // mutations since the last sweep of expired dedup records
	progress  map[string]*progress
	records   map[string]*campaigns.CampaignRecord
	recordIDs []string // sorted, for List
	intake    intake
	delays    delayQueue
	flows     *Store // the flow records' store (Flows)
	caps      map[capKey][]capEntry
	capOps    int // cap records written since the last sweep

	eng engagements
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that stands in for Redis server time (leases,
// windows, idle times, timestamps). Tests pass a fake one.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Flows returns the Store of flow records: a kind of its own, so a campaign
// operation can never reach a flow and listing campaigns never reads flows.
func (s *Store) Flows() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flows == nil {
		s.flows = New(WithClock(s.now))
	}
	return s.flows
}

// New returns an empty Store.
func New(opts ...Option) *Store {
	s := &Store{
		now:      time.Now,
		dedup:    make(map[campaigns.DedupKey]dedupRecord),
		progress: make(map[string]*progress),
		records:  make(map[string]*campaigns.CampaignRecord),
		intake:   intake{pending: make(map[string]*intakeEntry), wake: make(chan struct{})},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ---- per-message dedup ----

type dedupRecord struct {
	confirmed bool
	leaseEnd  time.Time
	owner     string
	expires   time.Time
}

// Dedup is a DedupLog for one owner; leases it takes can only be released by it.
type Dedup struct {
	s     *Store
	owner string
}

// Dedup returns the DedupLog of owner (unique per process incarnation, e.g. host/pid/random).
func (s *Store) Dedup(owner string) *Dedup { return &Dedup{s: s, owner: owner} }

func checkLease(lease, window time.Duration) error {
	if lease <= 0 || window < lease {
		return fmt.Errorf("lease %v must be positive and window %v at least the lease", lease, window)
	}
	return nil
}

// Claim implements campaigns.DedupLog.
func (d *Dedup) Claim(ctx context.Context, keys []campaigns.DedupKey, lease, window time.Duration) ([]campaigns.ClaimState, error) {
	if err := checkLease(lease, window); err != nil {
		return nil, fmt.Errorf("claim dedup keys: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claim dedup keys: %w", err)
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]campaigns.ClaimState, len(keys))
	fresh := dedupRecord{leaseEnd: now.Add(lease), owner: d.owner, expires: now.Add(window)}
	for i, k := range keys {
		r, ok := s.dedup[k]
		switch {
		case !ok || !now.Before(r.expires):
			s.dedup[k] = fresh
			out[i] = campaigns.Claimed
		case r.confirmed:
			out[i] = campaigns.Duplicate
		case now.Before(r.leaseEnd):
			out[i] = campaigns.Held
		default:
			s.dedup[k] = fresh
			out[i] = campaigns.InDoubt
		}
	}
	s.sweepDedupLocked(now, len(keys))
	return out, nil
}

// Confirm implements campaigns.DedupLog.
func (d *Dedup) Confirm(ctx context.Context, keys []campaigns.DedupKey, window time.Duration) error {
	if window <= 0 {
		return fmt.Errorf("confirm dedup keys: window %v must be positive", window)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("confirm dedup keys: %w", err)
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, k := range keys {
		s.dedup[k] = dedupRecord{confirmed: true, expires: now.Add(window)}
	}
	s.sweepDedupLocked(now, len(keys))
	return nil
}

// Release implements campaigns.DedupLog.
func (d *Dedup) Release(ctx context.Context, keys []campaigns.DedupKey) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release dedup keys: %w", err)
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if r, ok := s.dedup[k]; ok && !r.confirmed && r.owner == d.owner {
			delete(s.dedup, k)
		}
	}
	return nil
}

// sweepDedupLocked drops expired records once the mutations since the last
// sweep reach half the map, which keeps the sweep amortised O(1) per key
// (Redis expires keys itself).
func (s *Store) sweepDedupLocked(now time.Time, ops int) {
	s.dedupOps += ops
	if s.dedupOps < 1024 || s.dedupOps < len(s.dedup)/2 {
		return
	}
	s.dedupOps = 0
	for k, r := range s.dedup {
		if !now.Before(r.expires) {
			delete(s.dedup, k)
		}
	}
}

// ---- campaign records ----

func compactJSON(def []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, def); err != nil {
		return nil, fmt.Errorf("parse definition: %w", err)
	}
	return buf.Bytes(), nil
}

func copyRecord(r *campaigns.CampaignRecord) campaigns.CampaignRecord {
	c := *r
	c.Definition = slices.Clone(r.Definition)
	return c
}

// Create implements campaigns.CampaignStore.
func (s *Store) Create(ctx context.Context, id string, definition []byte) (campaigns.CampaignRecord, bool, error) {
	if id == "" {
		return campaigns.CampaignRecord{}, false, errors.New("create campaign: empty id")
	}
	def, err := compactJSON(definition)
	if err != nil {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.records[id]; ok {
		if !bytes.Equal(r.Definition, def) {
			return campaigns.CampaignRecord{}, false, fmt.Errorf("create campaign %q: %w", id, campaigns.ErrConflict)
		}
		return copyRecord(r), false, nil
	}
	now := s.now()
	r := &campaigns.CampaignRecord{ID: id, Definition: def, Status: campaigns.StatusScheduled, Created: now, Updated: now}
	s.records[id] = r
	i, _ := slices.BinarySearch(s.recordIDs, id)
	s.recordIDs = slices.Insert(s.recordIDs, i, id)
	return copyRecord(r), true, nil
}

// Get implements campaigns.CampaignStore.
func (s *Store) Get(ctx context.Context, id string) (campaigns.CampaignRecord, error) {
	if err := ctx.Err(); err != nil {
		return campaigns.CampaignRecord{}, fmt.Errorf("get campaign %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return campaigns.CampaignRecord{}, fmt.Errorf("get campaign %q: %w", id, campaigns.ErrNotFound)
	}
	return copyRecord(r), nil
}

// PinRing implements campaigns.CampaignStore.
func (s *Store) PinRing(ctx context.Context, id, ring string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("pin ring of campaign %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return "", fmt.Errorf("pin ring of campaign %q: %w", id, campaigns.ErrNotFound)
	}
	if r.Ring == "" {
		r.Ring = ring
	}
	return r.Ring, nil
}

// List implements campaigns.CampaignStore.
func (s *Store) List(ctx context.Context, after string, limit int) ([]campaigns.CampaignRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list campaigns: limit %d must be positive", limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.recordIDs, after)
	if found {
		i++
	}
	var out []campaigns.CampaignRecord
	for ; i < len(s.recordIDs) && len(out) < limit; i++ {
		out = append(out, copyRecord(s.records[s.recordIDs[i]]))
	}
	return out, nil
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
	if err := ctx.Err(); err != nil {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q: %w", id, campaigns.ErrNotFound)
	}
	if r.Status != from {
		return campaigns.CampaignRecord{}, fmt.Errorf("transition campaign %q from %q (now %q): %w", id, from, r.Status, campaigns.ErrStatusChanged)
	}
	r.Status = to
	r.Reason = reason
	r.Updated = s.now()
	return copyRecord(r), nil
}

// ---- campaign progress ----

type failureKey struct {
	user    uint64
	channel string
	address int
}

type progress struct {
	leaseOwner string
	leaseToken int64
	leaseEnd   time.Time

	fence       int64 // last token handed out
	nextSeq     int64
	lastClaimed uint64
	hasClaimed  bool
	cp          campaigns.Checkpoint
	batches     map[int64]*campaigns.Batch
	counts      map[[3]string]int64
	failures    map[failureKey]string
	live        bool // a run holds or held the lease without releasing it
	completed   bool
	retry       bool
	crashes     int   // runs in a row that died holding the lease
	flushToken  int64 // lease token and ID of the last ledger flush applied
	flushID     int64
}

func (s *Store) progressLocked(campaign string) *progress {
	p, ok := s.progress[campaign]
	if !ok {
		p = &progress{batches: make(map[int64]*campaigns.Batch), counts: make(map[[3]string]int64), failures: make(map[failureKey]string)}
		s.progress[campaign] = p
	}
	return p
}

// heldLocked checks the caller still holds the live lease with its token.
func (s *Store) heldLocked(l campaigns.Lease) (*progress, error) {
	p, ok := s.progress[l.Campaign]
	if !ok || p.leaseToken != l.Token || p.leaseOwner != l.Owner || !s.now().Before(p.leaseEnd) {
		return nil, campaigns.ErrLeaseLost
	}
	return p, nil
}

// cloneBatch copies a batch with bitmaps sized to its slots, as Redis returns them.
func cloneBatch(b *campaigns.Batch) campaigns.Batch {
	c := *b
	sized := func(m campaigns.Bitmap) campaigns.Bitmap {
		out := campaigns.NewBitmap(b.Slots)
		copy(out, m)
		return out
	}
	c.Dispatched, c.Confirmed, c.Done = sized(b.Dispatched), sized(b.Confirmed), sized(b.Done)
	return c
}

// Acquire implements campaigns.CampaignLeaser.
func (s *Store) Acquire(ctx context.Context, campaign, owner string, ttl time.Duration) (campaigns.Resume, error) {
	if campaign == "" || owner == "" || ttl <= 0 {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: need a campaign, an owner and a positive ttl", campaign)
	}
	if err := ctx.Err(); err != nil {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	p := s.progressLocked(campaign)
	if p.leaseOwner != "" && p.leaseOwner != owner && now.Before(p.leaseEnd) {
		return campaigns.Resume{}, fmt.Errorf("acquire campaign %q: %w", campaign, campaigns.ErrHeld)
	}
	p.fence++
	p.leaseOwner, p.leaseToken, p.leaseEnd = owner, p.fence, now.Add(ttl)
	if p.live {
		p.crashes++
	}
	p.live = true
	r := campaigns.Resume{
		Crashes:     p.crashes,
		Lease:       campaigns.Lease{Campaign: campaign, Owner: owner, Token: p.fence},
		Checkpoint:  p.cp,
		LastClaimed: p.lastClaimed,
		HasClaimed:  p.hasClaimed,
	}
	for _, b := range p.batches {
		r.Open = append(r.Open, cloneBatch(b))
	}
	slices.SortFunc(r.Open, func(a, b campaigns.Batch) int { return int(a.Seq - b.Seq) })
	return r, nil
}

// Renew implements campaigns.CampaignLeaser.
func (s *Store) Renew(ctx context.Context, l campaigns.Lease, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("renew campaign lease %q: ttl %v must be positive", l.Campaign, ttl)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("renew campaign lease %q: %w", l.Campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.heldLocked(l)
	if q, ok := s.progress[l.Campaign]; err != nil && ok && q.live && q.fence == l.Token && !s.now().Before(q.leaseEnd) {
		// Ran out, but nobody took it over since: take it back.
		p, err = q, nil
		p.leaseOwner, p.leaseToken = l.Owner, l.Token
	}
	if err != nil {
		return fmt.Errorf("renew campaign lease %q: %w", l.Campaign, err)
	}
	p.leaseEnd = s.now().Add(ttl)
	return nil
}

// Release implements campaigns.CampaignLeaser. Releasing a lease no longer
// held is not an error: the goal (not holding it) is met.
func (s *Store) Release(ctx context.Context, l campaigns.Lease) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release campaign lease %q: %w", l.Campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, err := s.heldLocked(l); err == nil {
		p.leaseOwner, p.leaseEnd = "", time.Time{}
		p.live = false
	}
	return nil
}

// Complete implements campaigns.CampaignLeaser.
func (s *Store) Complete(ctx context.Context, l campaigns.Lease) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("complete campaign %q: %w", l.Campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.heldLocked(l)
	if err != nil {
		return fmt.Errorf("complete campaign %q: %w", l.Campaign, err)
	}
	p.completed, p.retry = true, false
	p.leaseOwner, p.leaseEnd, p.live = "", time.Time{}, false
	return nil
}

// Reopen implements campaigns.CampaignLeaser.
func (s *Store) Reopen(ctx context.Context, campaign string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reopen campaign %q: %w", campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.progressLocked(campaign)
	p.completed, p.retry = false, true
	return nil
}

// ClaimBatch implements campaigns.BatchLog.
func (s *Store) ClaimBatch(ctx context.Context, l campaigns.Lease, first, last uint64, slots int) (int64, error) {
	if first > last || slots < 0 {
		return 0, fmt.Errorf("claim batch of %q: bad range %d..%d or slots %d", l.Campaign, first, last, slots)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("claim batch of %q: %w", l.Campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.heldLocked(l)
	if err != nil {
		return 0, fmt.Errorf("claim batch of %q: %w", l.Campaign, err)
	}
	if p.hasClaimed && first <= p.lastClaimed {
		if b := p.batches[p.nextSeq]; b != nil && b.First == first && b.Last == last && b.Slots == slots && b.Token == l.Token && !b.Final {
			return b.Seq, nil // a retried claim
		}
		return 0, fmt.Errorf("claim batch of %q from key %d: %w", l.Campaign, first, campaigns.ErrBatchOrder)
	}
	p.nextSeq++
	p.batches[p.nextSeq] = &campaigns.Batch{Seq: p.nextSeq, First: first, Last: last, Slots: slots, Token: l.Token}
	p.lastClaimed, p.hasClaimed = last, true
	return p.nextSeq, nil
}

func orInto(dst *campaigns.Bitmap, src campaigns.Bitmap) {
	if len(*dst) < len(src) {
		*dst = append(*dst, make([]byte, len(src)-len(*dst))...)
	}
	for i, b := range src {
		(*dst)[i] |= b
	}
}

func putInto(dst *campaigns.Bitmap, base int, src campaigns.Bitmap) {
	if len(src) == 0 {
		return
	}
	if end := base + len(src); len(*dst) < end {
		*dst = append(*dst, make([]byte, end-len(*dst))...)
	}
	copy((*dst)[base:], src)
}

// ReportBatch implements campaigns.BatchLog.
func (s *Store) ReportBatch(ctx context.Context, l campaigns.Lease, r campaigns.BatchReport) (campaigns.Checkpoint, error) {
	cp, err := s.record(ctx, l, false, campaigns.Flush{Reports: []campaigns.BatchReport{r}})
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("report batch %d of %q: %w", r.Seq, l.Campaign, err)
	}
	return cp, nil
}

// Record implements campaigns.BatchLog.
func (s *Store) Record(ctx context.Context, l campaigns.Lease, f campaigns.Flush) (campaigns.Checkpoint, error) {
	cp, err := s.record(ctx, l, true, f)
	if err != nil {
		return campaigns.Checkpoint{}, fmt.Errorf("record ledger flush %d of %q: %w", f.ID, l.Campaign, err)
	}
	return cp, nil
}

// record applies a flush; with replace (Record), bitmaps replace the stored
// bytes from the report's Base on, otherwise (ReportBatch) they are OR-ed in.
func (s *Store) record(ctx context.Context, l campaigns.Lease, replace bool, f campaigns.Flush) (campaigns.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return campaigns.Checkpoint{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.heldLocked(l)
	if err != nil {
		return campaigns.Checkpoint{}, err
	}
	if f.ID > 0 && p.flushToken == l.Token && p.flushID >= f.ID {
		return p.cp, nil // a replayed flush
	}
	// Check every report before applying any: a refused flush changes nothing.
	for _, r := range f.Reports {
		b, ok := p.batches[r.Seq]
		switch {
		case !ok && r.Seq >= 1 && r.Seq <= p.cp.Seq:
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: %w", r.Seq, campaigns.ErrBatchFinal)
		case !ok:
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: %w", r.Seq, campaigns.ErrUnknownBatch)
		case b.Final:
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: %w", r.Seq, campaigns.ErrBatchFinal)
		}
		if r.Base < 0 || r.Slots < 0 || (!replace && (r.Base != 0 || r.Slots != 0)) {
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: bad bitmap base %d or slots %d", r.Seq, r.Base, r.Slots)
		}
		maxLen := (max(b.Slots, r.Slots)+7)/8 - r.Base
		if len(r.Dispatched) > maxLen || len(r.Confirmed) > maxLen || len(r.Done) > maxLen {
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: bitmap longer than %d slots", r.Seq, b.Slots)
		}
		if err := checkChannels(r.Counts, r.Failures); err != nil {
			return campaigns.Checkpoint{}, fmt.Errorf("batch %d: %w", r.Seq, err)
		}
	}
	anyFinal := false
	if f.Progress {
		p.crashes = 0
	}
	for _, r := range f.Reports {
		b := p.batches[r.Seq]
		b.Slots = max(b.Slots, r.Slots)
		if replace {
			putInto(&b.Dispatched, r.Base, r.Dispatched)
			putInto(&b.Confirmed, r.Base, r.Confirmed)
			putInto(&b.Done, r.Base, r.Done)
		} else {
			orInto(&b.Dispatched, r.Dispatched)
			orInto(&b.Confirmed, r.Confirmed)
			orInto(&b.Done, r.Done)
		}
		for _, c := range r.Counts {
			p.counts[[3]string{c.Channel, c.Reason, c.Variant}] += c.N
		}
		for _, f := range r.Failures {
			p.failures[failureKey{f.User, f.Channel, f.Address}] = f.Reason
		}
		if r.Final {
			b.Final = true
			anyFinal = true
		}
	}
	if anyFinal {
		for {
			next, ok := p.batches[p.cp.Seq+1]
			if !ok || !next.Final {
				break
			}
			p.cp = campaigns.Checkpoint{Seq: next.Seq, Key: next.Last, Valid: true}
			delete(p.batches, next.Seq)
			p.crashes = 0
		}
	}
	if f.ID > 0 {
		p.flushToken, p.flushID = l.Token, f.ID
	}
	return p.cp, nil
}

// checkChannels keeps the contract of the Redis layout, where a channel name
// is a field separator's neighbour and must not contain ':' (nor '@', the
// variant's separator), and a variant neither.
func checkChannels(counts []campaigns.Count, failures []campaigns.Failure) error {
	for _, c := range counts {
		if strings.ContainsAny(c.Channel, ":@") {
			return fmt.Errorf("channel %q must not contain ':' or '@'", c.Channel)
		}
		if strings.ContainsAny(c.Variant, ":@") {
			return fmt.Errorf("variant %q must not contain ':' or '@'", c.Variant)
		}
	}
	for _, f := range failures {
		if strings.Contains(f.Channel, ":") {
			return fmt.Errorf("channel %q must not contain ':'", f.Channel)
		}
	}
	return nil
}

func encodeFailureCursor(k failureKey) string {
	return strconv.FormatUint(k.user, 16) + ":" + k.channel + ":" + strconv.Itoa(k.address)
}

func compareFailureKeys(a, b failureKey) int {
	if a.user != b.user {
		if a.user < b.user {
			return -1
		}
		return 1
	}
	if c := strings.Compare(a.channel, b.channel); c != 0 {
		return c
	}
	return a.address - b.address
}

// Failures implements campaigns.FailureLog. The cursor is the last key returned.
func (s *Store) Failures(ctx context.Context, campaign, cursor string, limit int) ([]campaigns.Failure, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("list failures of %q: limit %d must be positive", campaign, limit)
	}
	var after failureKey
	hasAfter := cursor != ""
	if hasAfter {
		parts := strings.Split(cursor, ":")
		if len(parts) != 3 {
			return nil, "", fmt.Errorf("list failures of %q: bad cursor %q", campaign, cursor)
		}
		n, err1 := strconv.ParseUint(parts[0], 16, 64)
		a, err2 := strconv.Atoi(parts[2])
		if err1 != nil || err2 != nil {
			return nil, "", fmt.Errorf("list failures of %q: bad cursor %q", campaign, cursor)
		}
		after = failureKey{n, parts[1], a}
	}
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("list failures of %q: %w", campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.progress[campaign]
	if !ok {
		return nil, "", nil
	}
	keys := make([]failureKey, 0, len(p.failures))
	for k := range p.failures {
		if !hasAfter || compareFailureKeys(k, after) > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, compareFailureKeys)
	next := ""
	if len(keys) > limit {
		keys = keys[:limit]
		next = encodeFailureCursor(keys[limit-1])
	}
	out := make([]campaigns.Failure, len(keys))
	for i, k := range keys {
		out[i] = campaigns.Failure{User: k.user, Channel: k.channel, Address: k.address, Reason: p.failures[k]}
	}
	return out, next, nil
}

// MarkRetried implements campaigns.FailureLog.
func (s *Store) MarkRetried(ctx context.Context, l campaigns.Lease, r campaigns.RetryReport) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.heldLocked(l)
	if err != nil {
		return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
	}
	if err := checkChannels(r.Counts, r.Failures); err != nil {
		return fmt.Errorf("mark failures of %q retried: %w", l.Campaign, err)
	}
	for _, f := range r.Retried {
		delete(p.failures, failureKey{f.User, f.Channel, f.Address})
	}
	for _, f := range r.Failures {
		p.failures[failureKey{f.User, f.Channel, f.Address}] = f.Reason
	}
	for _, c := range r.Counts {
		p.counts[[3]string{c.Channel, c.Reason, c.Variant}] += c.N
	}
	return nil
}

// Progress implements campaigns.ProgressStore.
func (s *Store) Progress(ctx context.Context, campaign string) (campaigns.Progress, error) {
	if err := ctx.Err(); err != nil {
		return campaigns.Progress{}, fmt.Errorf("read progress of %q: %w", campaign, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.progress[campaign]
	if !ok {
		return campaigns.Progress{}, nil
	}
	out := campaigns.Progress{Checkpoint: p.cp, Failures: int64(len(p.failures)), Completed: p.completed, Retry: p.retry}
	if p.leaseOwner != "" && s.now().Before(p.leaseEnd) {
		out.Owner = p.leaseOwner
	}
	for k, n := range p.counts {
		out.Counts = append(out.Counts, campaigns.Count{Channel: k[0], Reason: k[1], Variant: k[2], N: n})
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

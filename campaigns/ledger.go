package campaigns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/channels"
)

// The ledger is a campaign run's record, per message, of what was handed to
// a provider and what the provider answered. It is what makes "in doubt"
// exact after a crash: a message is in doubt only if the ledger holds it as
// handed and unanswered, that is, it was on the wire.
//
// Writes are group-committed: every change (a slot handed, answered or
// skipped, with its count and failure) goes into the batch's pending bitmaps,
// and one goroutine flushes every pending change of the run in one Record
// call, at most FlushInterval after the first one, at once when a worker
// waits. A worker hands a message to its provider only after the flush that
// holds it as handed has landed (HandOff); the outcomes of the worker's
// previous request travel in the same or an earlier flush, so at a crash the
// in-doubt set is at most one request per worker.
//
// Flushes are numbered; the store applies a flush number once per lease, so
// after an infrastructure error (Redis restarting, stalled, a lost reply)
// the same flush is sent again until it lands, and the run goes on. Only a
// lost lease stops it, unless the state store lost everything (an empty
// Redis), in which case the engine writes back what the runs know and the
// flush is sent again.

// ledger is one run's group commit to its BatchLog.
type ledger struct {
	store    BatchLog
	lease    Lease
	log      *slog.Logger
	interval time.Duration
	maxDirty int
	// lost is asked when the store says the lease is lost: it reports
	// whether the state store had lost its data and the run's state was
	// written back (retry the flush), or the lease is really gone.
	lost func(ctx context.Context) bool

	mu      sync.Mutex
	list    []*RecipientBatch
	spare   []*RecipientBatch
	gen     *flushGen
	urgent  atomic.Bool  // a worker waits, or enough changed: flush now
	changes atomic.Int64 // changes since the last flush began
	wake    chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	failed  error // sticky: the ledger can no longer write (lease lost)

	// Durable state, kept for a state store that comes back empty.
	nextID  int64 // ID of the last flush sent
	applied int64 // ID of the last flush that landed
	cp      Checkpoint
	open    map[int64]*Batch
	counts  map[[3]string]int64
	fails   map[failureKey]string
	flushes int64 // flushes that landed (for tests and logs)
}

type failureKey struct {
	user    uint64
	channel string
	address int
}

type flushGen struct {
	done chan struct{}
	err  error
}

// errLedgerClosed: the ledger stopped before the change could be recorded.
var errLedgerClosed = errors.New("delivery ledger closed")

func newLedger(store BatchLog, lease Lease, log *slog.Logger, cfg EngineConfig, res Resume, counts []Count) *ledger {
	l := &ledger{
		store: store, lease: lease, log: log,
		interval: cfg.FlushInterval, maxDirty: cfg.FlushSlots,
		gen:  &flushGen{done: make(chan struct{})},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{}),
		cp: res.Checkpoint, open: map[int64]*Batch{}, counts: map[[3]string]int64{}, fails: map[failureKey]string{},
	}
	for i := range res.Open {
		b := res.Open[i]
		l.open[b.Seq] = &Batch{Seq: b.Seq, First: b.First, Last: b.Last, Slots: b.Slots, Token: b.Token, Final: b.Final,
			Dispatched: fit(b.Dispatched, b.Slots), Confirmed: fit(b.Confirmed, b.Slots), Done: fit(b.Done, b.Slots)}
	}
	for _, c := range counts {
		l.counts[[3]string{c.Channel, c.Reason, c.Variant}] += c.N
	}
	return l
}

// fit returns a copy of b sized for slots.
func fit(b Bitmap, slots int) Bitmap {
	out := NewBitmap(slots)
	copy(out, b)
	return out
}

// claimed starts the durable image of a newly claimed batch.
func (l *ledger) claimed(seq int64, first, last uint64, slots int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.open[seq]; !ok {
		l.open[seq] = &Batch{Seq: seq, First: first, Last: last, Slots: slots, Token: l.lease.Token,
			Dispatched: NewBitmap(slots), Confirmed: NewBitmap(slots), Done: NewBitmap(slots)}
	}
}

// relayout replaces a batch's durable image when a redriven batch no longer
// has the slots it was claimed with (its members changed in a newer shard
// generation): the old bits describe other messages.
func (l *ledger) relayout(seq int64, slots int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if img := l.open[seq]; img != nil {
		img.Slots = slots
		img.Dispatched, img.Confirmed, img.Done = NewBitmap(slots), NewBitmap(slots), NewBitmap(slots)
	}
}

// dirty puts b on the list of the next flush, with n changes. Called with
// b.mu held (b.listed says whether it is on the list already).
func (l *ledger) dirty(b *RecipientBatch, n int) {
	l.mu.Lock()
	l.list = append(l.list, b)
	l.mu.Unlock()
	l.count(n)
	l.poke()
}

// count notes n more changes; past FlushSlots it hurries the flusher. It
// takes no lock: it runs once per outcome.
func (l *ledger) count(n int) {
	if l.changes.Add(int64(n)) >= int64(l.maxDirty) && !l.urgent.Swap(true) {
		l.poke()
	}
}

// poke wakes the flusher.
func (l *ledger) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// err is the ledger's failure, if it failed.
func (l *ledger) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// sync waits until every change made before the call is durable.
func (l *ledger) sync(ctx context.Context) error {
	l.mu.Lock()
	if l.failed != nil {
		err := l.failed
		l.mu.Unlock()
		return err
	}
	g := l.gen
	l.urgent.Store(true)
	l.mu.Unlock()
	l.poke()
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run flushes until close; ctx bounds the retries of the last flushes.
func (l *ledger) run(ctx context.Context) {
	defer close(l.stopped)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-l.wake:
		case <-l.quit:
			l.flush(ctx)
			l.fail(errLedgerClosed)
			return
		}
		if !l.urgent.Load() {
			// Let the changes of a few milliseconds gather: one round trip for all.
			t.Reset(l.interval)
		gather:
			for {
				select {
				case <-t.C:
					break gather
				case <-l.quit:
					t.Stop()
					break gather
				case <-l.wake:
					if l.urgent.Load() {
						t.Stop()
						break gather
					}
				}
			}
		}
		l.flush(ctx)
	}
}

// close flushes what is pending (retrying until ctx ends) and stops.
func (l *ledger) close() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.stopped
}

// fail makes every later sync fail with err and ends the current generation.
func (l *ledger) fail(err error) {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = err
	}
	g := l.gen
	l.gen = &flushGen{done: make(chan struct{})}
	l.mu.Unlock()
	g.err = err
	close(g.done)
}

// pending is one batch's share of a flush, and what it becomes once durable.
type pending struct {
	b        *RecipientBatch
	merged   [3]Bitmap // bytes base.. of the durable bitmaps with this flush applied
	base     int
	final    bool
	accepted bool // a provider accepted one of its messages
}

// flush sends every pending change in one Record call, retrying the same
// flush until it lands, the lease is lost, or ctx ends.
func (l *ledger) flush(ctx context.Context) {
	l.mu.Lock()
	list := l.list
	l.list = l.spare[:0]
	g := l.gen
	l.gen = &flushGen{done: make(chan struct{})}
	l.urgent.Store(false)
	l.changes.Store(0)
	l.mu.Unlock()
	if len(list) == 0 {
		l.spare = list
		close(g.done)
		return
	}
	f := Flush{Reports: make([]BatchReport, 0, len(list))}
	parts := make([]pending, 0, len(list))
	for _, b := range list {
		b.mu.Lock()
		l.mu.Lock()
		img := l.open[b.Seq]
		l.mu.Unlock()
		if img == nil {
			b.listed = false
			b.mu.Unlock()
			continue // final and past the checkpoint already
		}
		rep, part := b.takePending(img)
		b.mu.Unlock()
		f.Reports = append(f.Reports, rep)
		parts = append(parts, part)
		f.Progress = f.Progress || part.accepted
	}
	clear(list)
	l.spare = list[:0]
	l.nextID++
	f.ID = l.nextID
	err := l.record(ctx, f)
	if err != nil {
		l.log.Error("delivery ledger stopped; the run ends and the next one resumes from what was recorded", "error", err, "flush", f.ID)
		g.err = err
		close(g.done)
		l.fail(err)
		return
	}
	l.mu.Lock()
	for _, p := range parts {
		img := l.open[p.b.Seq]
		copyAt(img.Dispatched, p.base, p.merged[0])
		copyAt(img.Confirmed, p.base, p.merged[1])
		copyAt(img.Done, p.base, p.merged[2])
		img.Final = img.Final || p.final
	}
	for _, r := range f.Reports {
		for _, c := range r.Counts {
			l.counts[[3]string{c.Channel, c.Reason, c.Variant}] += c.N
		}
		for _, fl := range r.Failures {
			l.fails[failureKey{fl.User, fl.Channel, fl.Address}] = fl.Reason
		}
	}
	for seq := range l.open {
		if l.cp.Valid && seq <= l.cp.Seq {
			delete(l.open, seq)
		}
	}
	l.flushes++
	l.applied = f.ID
	l.mu.Unlock()
	close(g.done)
}

// record retries one flush with backoff: the flush ID makes a retry safe.
func (l *ledger) record(ctx context.Context, f Flush) error {
	return retryState(ctx, l.log, "record delivery ledger", l.lost, func(ctx context.Context) error {
		cp, err := l.store.Record(ctx, l.lease, f)
		if err == nil {
			l.mu.Lock()
			l.cp = cp
			l.mu.Unlock()
		}
		return err
	})
}

// retryState runs op until it succeeds, fails with a StateError, or ctx
// ends. Infrastructure errors (Redis down, a timeout) are retried with
// backoff; ErrLeaseLost is retried only if lost says the state store lost
// its data and what this daemon knows was written back.
func retryState(ctx context.Context, log *slog.Logger, what string, lost func(context.Context) bool, op func(context.Context) error) error {
	delay := 20 * time.Millisecond
	var t *time.Timer
	for attempt := 1; ; attempt++ {
		actx := newAttemptCtx(ctx, time.Now().Add(5*time.Second))
		err := op(actx)
		actx.cancel()
		if err == nil {
			if attempt > 1 {
				log.Info(what+": recovered", "attempts", attempt)
			}
			return nil
		}
		var se StateError
		switch {
		case errors.Is(err, ErrLeaseLost):
			if lost == nil || !lost(ctx) {
				return err
			}
		case errors.As(err, &se):
			return err
		case ctx.Err() != nil:
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, ctx.Err())
		}
		if attempt == 1 || attempt%50 == 0 {
			log.Warn(what+" failed; retrying", "error", err, "attempt", attempt)
		}
		if t == nil {
			t = time.NewTimer(delay)
		} else {
			t.Reset(delay)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, ctx.Err())
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// attemptCtx is context.WithDeadline(parent, deadline) that builds the real
// context (a timer, and a registration with the parent) only when something
// waits on Done. A flush is one attempt, flushes come about once per request,
// and an in-memory store never waits on Done: the timer and the parent's
// child map were a measurable share of the ledger's cost per message
// (notifyd bench webhook). Deadline, Err and Value answer as the real
// context would.
type attemptCtx struct {
	parent   context.Context
	deadline time.Time
	mu       sync.Mutex
	real     context.Context
	stop     context.CancelFunc
	canceled bool
}

func newAttemptCtx(parent context.Context, deadline time.Time) *attemptCtx {
	if d, ok := parent.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return &attemptCtx{parent: parent, deadline: deadline}
}

func (c *attemptCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *attemptCtx) Value(key any) any { return c.parent.Value(key) }

func (c *attemptCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real == nil {
		c.real, c.stop = context.WithDeadline(c.parent, c.deadline)
		if c.canceled {
			c.stop()
		}
	}
	return c.real.Done()
}

func (c *attemptCtx) Err() error {
	c.mu.Lock()
	real, canceled := c.real, c.canceled
	c.mu.Unlock()
	if real != nil {
		return real.Err()
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if canceled {
		return context.Canceled
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// cancel ends the attempt, as the CancelFunc of WithDeadline.
func (c *attemptCtx) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.canceled = true
	if c.stop != nil {
		c.stop()
	}
}

// takePending moves b's pending changes into a report against img, the
// batch's durable image. Called with b.mu held.
//
// It runs once per batch per flush, and flushes come as often as workers
// wait (about one per request at one message per request), so it copies
// only the window of bytes that changed, all three bitmaps in one
// allocation, instead of cloning the batch's whole durable image three times.
func (b *RecipientBatch) takePending(img *Batch) (BatchReport, pending) {
	part := pending{b: b, final: b.pendFinal}
	src := [3]Bitmap{b.pendD, b.pendC, b.pendF}
	dur := [3]Bitmap{img.Dispatched, img.Confirmed, img.Done}
	lo, hi := len(b.pendD), 0
	if b.pendAll {
		lo, hi = 0, len(b.pendD)
	}
	for _, s := range src {
		for i, v := range s {
			if v != 0 {
				lo = min(lo, i)
				hi = max(hi, i+1)
			}
		}
	}
	rep := BatchReport{Seq: b.Seq, Final: b.pendFinal}
	if len(b.counts) > 0 {
		rep.Counts = b.takeCounts()
	}
	if b.pendAll {
		rep.Slots = b.nslots
		b.pendAll = false
	}
	if len(b.failures) > 0 {
		rep.Failures = slices.Clone(b.failures)
		b.failures = b.failures[:0]
	}
	if lo < hi {
		for _, v := range src[1][lo:hi] {
			if v != 0 {
				part.accepted = true
				break
			}
		}
		w := hi - lo
		buf := make(Bitmap, 3*w)
		for k := range 3 {
			m := buf[k*w : (k+1)*w : (k+1)*w]
			if lo < len(dur[k]) {
				n := copy(m, dur[k][lo:])
				for i := range n {
					m[i] |= src[k][lo+i]
				}
			}
			part.merged[k] = m
			clear(src[k][lo:hi])
		}
		part.base = lo
		rep.Base = lo
		rep.Dispatched, rep.Confirmed, rep.Done = part.merged[0], part.merged[1], part.merged[2]
	}
	b.pendFinal = false
	b.listed = false
	return rep, part
}

// copyAt copies src into dst from byte base on, as far as dst goes.
func copyAt(dst Bitmap, base int, src Bitmap) {
	if base < len(dst) {
		copy(dst[base:], src)
	}
}

// snapshot is the run's durable state, for a store that lost it.
func (l *ledger) snapshot() (flush int64, cp Checkpoint, open []Batch, counts []Count, fails []Failure) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.open {
		c := *b
		c.Dispatched, c.Confirmed, c.Done = slices.Clone(b.Dispatched), slices.Clone(b.Confirmed), slices.Clone(b.Done)
		open = append(open, c)
	}
	slices.SortFunc(open, func(a, b Batch) int { return int(a.Seq - b.Seq) })
	for k, n := range l.counts {
		counts = append(counts, Count{Channel: k[0], Reason: k[1], Variant: k[2], N: n})
	}
	for k, r := range l.fails {
		fails = append(fails, Failure{User: k.user, Channel: k.channel, Address: k.address, Reason: r})
	}
	return l.applied, l.cp, open, counts, fails
}

// HandOff is the channels.Handoff of every pool that carries campaign
// messages: before a request leaves, the campaign's ledger must hold its
// messages as handed to the provider. It returns once that is durable; an
// error means the messages must not be sent (they stay queued in the
// ledger's eyes and the next run sends them).
func HandOff(ctx context.Context, msgs []*channels.Message) error {
	return handOff(ctx, msgs, true)
}

// MarkHandedOff is HandOff without the wait: the messages are marked as
// handed in their ledgers, which write them with their next flush (within
// FlushInterval), and the request leaves at once. It is for state that dies
// with the process (the daemon without Redis): there the wait buys no crash
// safety, since a crash loses the ledger with everything else, and it cost
// a flush, two goroutine hand-overs and a fifth of the CPU per webhook.
func MarkHandedOff(ctx context.Context, msgs []*channels.Message) error {
	return handOff(ctx, msgs, false)
}

func handOff(ctx context.Context, msgs []*channels.Message, wait bool) error {
	var waitFor []*ledger
	var b *RecipientBatch
	fresh := 0
	// A request's messages come mostly from one batch: lock it once per run
	// of its messages, and list it once, under the lock.
	endRun := func() {
		if b == nil {
			return
		}
		if fresh > 0 {
			b.listLocked(fresh)
			if wait && !slices.Contains(waitFor, b.led) {
				waitFor = append(waitFor, b.led)
			}
		}
		b.mu.Unlock()
		b, fresh = nil, 0
	}
	for _, m := range msgs {
		e, ok := m.Ref.(*envelope)
		if !ok || e.batch.led == nil {
			continue
		}
		if e.batch != b {
			endRun()
			b = e.batch
			b.mu.Lock()
		}
		if !e.handed {
			e.handed = true
			b.pendD.Set(int(b.pos[e.pos].slot + e.n))
			fresh++
		}
	}
	endRun()
	for _, l := range waitFor {
		if err := l.sync(ctx); err != nil {
			return fmt.Errorf("record messages as handed to the provider: %w", err)
		}
	}
	return nil
}

package channels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// PoolError is a sentinel error of the pool, a constant so it cannot be
// reassigned; compare with errors.Is.
type PoolError string

func (e PoolError) Error() string { return string(e) }

const (
	// ErrPoolClosed is returned by Submit, TrySubmit and Start once Close
	// began or the pool's run context ended.
	ErrPoolClosed PoolError = "worker pool closed"
	// ErrQueueFull is returned by TrySubmit when not every message fit.
	ErrQueueFull PoolError = "worker pool queue full"
	// ErrPoolStopped is the cause inside a canceled Outcome's error: the pool
	// stopped before the message was delivered.
	ErrPoolStopped PoolError = "worker pool stopped before delivery"

	errShortResults PoolError = "channel returned fewer results than messages"
	errPanic        PoolError = "channel panicked"
)

// Defaults for zero PoolConfig fields.
const (
	DefaultQueueSize     = 10000
	DefaultMaxAttempts   = 5
	DefaultBackoffBase   = time.Second
	DefaultBackoffMax    = 5 * time.Minute
	DefaultMaxRetryAfter = 10 * time.Minute
	DefaultLogInterval   = time.Minute
)

// PoolConfig are the knobs every pool needs. Zero values take the defaults.
type PoolConfig struct {
	// Workers is how many Send calls run at once (default 1). For HTTP/2
	// providers with BatchSize 1 this is the number of concurrent streams.
	Workers int
	// BatchSize is the most messages per Send (default 1): FCM 500, APNs and webhook 1.
	BatchSize int
	// QueueSize bounds messages held by the pool, ready or awaiting a retry
	// (default 10,000). Submit blocks while it is full. Retries re-enter
	// without waiting, so it may be exceeded by at most the messages in flight.
	QueueSize int
	// HighReserve is extra queue room only LaneHigh may use, so triggers are
	// taken even while a campaign keeps the queue full (default QueueSize/4).
	HighReserve int
	// MaxAttempts is the most Send calls per message (default 5).
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff (default 1s, 5m).
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps a provider's Retry-After (default 10m).
	MaxRetryAfter time.Duration
	// PauseOnRateLimit makes a rate_limited answer with a RetryAfter pause
	// the whole pool until then, not just that message: right when the limit
	// is the account's (FCM QUOTA_EXCEEDED, Twilio 20429, one webhook host),
	// where carrying on would burn every queued message's attempts on 429s.
	// Leave it off where a 429 concerns one address (APNs TooManyRequests).
	PauseOnRateLimit bool
	// SendTimeout bounds one Send call. Zero leaves it to the provider's own
	// client timeouts (and saves a context allocation per batch).
	SendTimeout time.Duration
	// Outcomes receives exactly one Outcome per submitted message. Required.
	Outcomes OutcomeSink
	// Handoff, when set, is called right before each request leaves for the
	// provider, with its messages; the request leaves only after it returns
	// nil. A delivery ledger uses it to hold the messages as "on the wire"
	// before they are: after a crash, exactly those are in doubt. On an
	// error the messages end canceled with no attempt made.
	Handoff Handoff
}

// Handoff is told which messages are about to leave for the provider.
type Handoff interface {
	Handoff(ctx context.Context, msgs []*Message) error
}

// HandoffFunc adapts a function to a Handoff.
type HandoffFunc func(ctx context.Context, msgs []*Message) error

// Handoff calls f.
func (f HandoffFunc) Handoff(ctx context.Context, msgs []*Message) error { return f(ctx, msgs) }

// AccountLimiter is a provider account's rate limit (a Twilio number's MPS,
// an FCM project's quota). *rate.Limiter implements it; one may be shared by
// several pools. Workers wait on it for a whole batch, so its burst must be
// at least BatchSize.
type AccountLimiter interface {
	WaitN(ctx context.Context, n int) error
}

// PoolOption sets an optional knob.
type PoolOption func(*Pool)

// WithClock injects the clock for backoff, deadlines, latency and campaign limits.
func WithClock(c Clock) PoolOption { return func(p *Pool) { p.clock = c } }

// WithRand injects the jitter source (used under the pool's lock).
func WithRand(r *rand.Rand) PoolOption { return func(p *Pool) { p.backoff.rnd = r } }

// WithLogger sets the logger; the pool adds channel=<name>.
func WithLogger(l *slog.Logger) PoolOption { return func(p *Pool) { p.log = l } }

// WithFeedbackSink receives dead-address records.
func WithFeedbackSink(s FeedbackSink) PoolOption { return func(p *Pool) { p.feedback = s } }

// WithAccountLimiter rate-limits every Send of the pool (and of any other pool sharing l).
func WithAccountLimiter(l AccountLimiter) PoolOption { return func(p *Pool) { p.account = l } }

// WithMetrics reports into m (see NewMetrics).
func WithMetrics(m *Metrics) PoolOption { return func(p *Pool) { p.vec = m } }

// WithRegisterer registers the channel metrics on reg, reusing them if
// another pool already did.
func WithRegisterer(reg prometheus.Registerer) PoolOption { return func(p *Pool) { p.reg = reg } }

// WithLogInterval sets how often one kind of failure (reason and code) is
// logged; repeats in between are counted and reported with the next line.
func WithLogInterval(d time.Duration) PoolOption { return func(p *Pool) { p.logEvery = d } }

// Pool is one channel's worker pool. See the package documentation for its
// behaviour on close, cancellation, deadlines and retries.
type Pool struct {
	ch       Channel
	name     string
	cfg      PoolConfig
	clock    Clock
	log      *slog.Logger
	logEvery time.Duration
	feedback FeedbackSink
	account  AccountLimiter
	// allowAccount is the account limiter's non-blocking AllowN, used first
	// with the time the worker already has; only when it says no does the
	// worker block in WaitN. Only with the wall clock: a *rate.Limiter must
	// not see fake and real times mixed.
	allowAccount interface{ AllowN(time.Time, int) bool }
	reg          prometheus.Registerer
	vec          *Metrics
	metrics      *poolMetrics
	failures     *failureLog

	mu             sync.Mutex
	work           sync.Cond // workers wait here for messages
	lanes          [NumLanes]lane
	campaignLimits map[string]*rate.Limiter
	freeQueues     []*campaignQueue
	retries        retryHeap
	freeCap        int   // items of buffer kept by freeQueues
	refill         int   // free slots that wake blocked submitters
	pausedUntil    int64 // PauseOnRateLimit: nothing is taken before this (Unix ns)
	backoff        backoff
	ready          int // messages in lanes
	inflight       int
	spaceCh        chan struct{} // closed when space frees up; nil if nobody waits
	blocked        int           // submitters waiting for space
	waiting        int           // workers waiting for messages
	// waking counts workers signaled that have not run yet. Waking more
	// than there are cores only queues goroutines for the scheduler: a
	// burst of triggers woke one worker per message, and each waited
	// behind the others for a core (most of the trigger latency's tail).
	// The woken chain the wake-up instead while work remains.
	waking    int
	maxWaking int
	timer     Timer
	timerAt   time.Time
	timerGen  uint64
	started   bool
	closing   bool
	stopped   bool
	stopCause error
	runCtx    context.Context
	cancelRun context.CancelFunc
	sinkCtx   context.Context
	stopWatch func() bool

	wg        sync.WaitGroup
	done      chan struct{}
	abortOnce sync.Once
	canceled  atomic.Int64
}

// NewWorkerPool builds a pool in front of ch. Messages may be submitted
// before Start; nothing is sent until then.
func NewWorkerPool(ch Channel, cfg PoolConfig, opts ...PoolOption) (*Pool, error) {
	if ch == nil {
		return nil, errors.New("create worker pool: nil channel")
	}
	name := ch.Name()
	if cfg.Outcomes == nil {
		return nil, fmt.Errorf("create %s worker pool: Outcomes sink is required", name)
	}
	for _, f := range []struct {
		field string
		v     int64
	}{
		{"Workers", int64(cfg.Workers)}, {"BatchSize", int64(cfg.BatchSize)}, {"QueueSize", int64(cfg.QueueSize)},
		{"MaxAttempts", int64(cfg.MaxAttempts)}, {"BackoffBase", int64(cfg.BackoffBase)}, {"BackoffMax", int64(cfg.BackoffMax)},
		{"MaxRetryAfter", int64(cfg.MaxRetryAfter)}, {"SendTimeout", int64(cfg.SendTimeout)},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("create %s worker pool: %s is negative (%d)", name, f.field, f.v)
		}
	}
	cfg.Workers = orDefault(cfg.Workers, 1)
	cfg.BatchSize = orDefault(cfg.BatchSize, 1)
	cfg.QueueSize = orDefault(cfg.QueueSize, DefaultQueueSize)
	cfg.HighReserve = orDefault(cfg.HighReserve, max(cfg.QueueSize/4, 1))
	cfg.MaxAttempts = orDefault(cfg.MaxAttempts, DefaultMaxAttempts)
	cfg.BackoffBase = orDefault(cfg.BackoffBase, DefaultBackoffBase)
	cfg.BackoffMax = orDefault(cfg.BackoffMax, DefaultBackoffMax)
	cfg.MaxRetryAfter = orDefault(cfg.MaxRetryAfter, DefaultMaxRetryAfter)
	if cfg.BackoffMax < cfg.BackoffBase {
		return nil, fmt.Errorf("create %s worker pool: BackoffMax %v is below BackoffBase %v", name, cfg.BackoffMax, cfg.BackoffBase)
	}
	if cfg.QueueSize < cfg.BatchSize {
		return nil, fmt.Errorf("create %s worker pool: QueueSize %d is below BatchSize %d", name, cfg.QueueSize, cfg.BatchSize)
	}

	p := &Pool{
		ch:             ch,
		name:           name,
		cfg:            cfg,
		clock:          wallClock{},
		log:            slog.Default(),
		logEvery:       DefaultLogInterval,
		campaignLimits: map[string]*rate.Limiter{},
		sinkCtx:        context.Background(),
		done:           make(chan struct{}),
		maxWaking:      max(runtime.GOMAXPROCS(0), 1),
	}
	p.refill = max(cfg.BatchSize, cfg.QueueSize/8)
	p.backoff = backoff{base: cfg.BackoffBase, max: cfg.BackoffMax, maxRetryAfter: cfg.MaxRetryAfter}
	for _, o := range opts {
		o(p)
	}
	if p.backoff.rnd == nil {
		p.backoff.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if b, ok := p.account.(interface{ Burst() int }); ok {
		if l, ok := p.account.(interface{ Limit() rate.Limit }); !ok || l.Limit() != rate.Inf {
			if b.Burst() < cfg.BatchSize {
				return nil, fmt.Errorf("create %s worker pool: account limiter burst %d is below BatchSize %d", name, b.Burst(), cfg.BatchSize)
			}
		}
	}
	if p.vec == nil {
		m, err := NewMetrics(p.reg)
		if err != nil {
			return nil, fmt.Errorf("create %s worker pool: %w", name, err)
		}
		p.vec = m
	}
	if _, wall := p.clock.(wallClock); wall {
		p.allowAccount, _ = p.account.(interface{ AllowN(time.Time, int) bool })
	}
	p.metrics = newPoolMetrics(p.vec, name)
	p.log = p.log.With("channel", name)
	p.failures = &failureLog{log: p.log, every: p.logEvery, clock: p.clock, last: map[failureKey]*failureState{}}
	p.work.L = &p.mu
	for i := range p.lanes {
		p.lanes[i].byID = map[string]*campaignQueue{}
	}
	return p, nil
}

func orDefault[T int | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// Name is the channel's name.
func (p *Pool) Name() string { return p.name }

// Start launches the workers. Canceling ctx stops the pool as an expired
// Close would: in-flight sends are canceled and every queued message gets a
// canceled Outcome. Call Close in any case to wait for the workers.
func (p *Pool) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return fmt.Errorf("start %s pool: %w", p.name, ErrPoolClosed)
	}
	if p.started {
		return fmt.Errorf("start %s pool: already started", p.name)
	}
	p.started = true
	// The run context is canceled only by stop, after it marked the pool
	// stopped under the lock, so a worker that sees a canceled Send also sees
	// the pool stopped and does not take more work in between.
	p.sinkCtx = context.WithoutCancel(ctx)
	p.runCtx, p.cancelRun = context.WithCancel(p.sinkCtx)
	p.wg.Add(p.cfg.Workers)
	for range p.cfg.Workers {
		go p.runWorker()
	}
	go func() {
		p.wg.Wait()
		close(p.done)
	}()
	p.stopWatch = context.AfterFunc(ctx, func() { p.stop(context.Cause(ctx)) })
	return nil
}

// Close stops intake and drains: queued messages and pending retries are
// still sent until ctx ends. Then in-flight sends are canceled, and every
// message not yet delivered gets a canceled Outcome (expired if past its
// Deadline). Close returns after the last Outcome was handed to the sink; its
// error counts the canceled messages. Calling it again returns the same.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	started := p.started
	p.wakeAll()
	p.wakeSubmitters()
	p.mu.Unlock()

	if !started {
		p.stop(ErrPoolClosed)
	} else {
		select {
		case <-p.done:
		case <-ctx.Done():
			p.stop(ctx.Err())
			<-p.done
		}
		p.stopWatch()
	}
	p.mu.Lock()
	stopped, cause := p.stopped, p.stopCause
	if p.timer != nil { // a parked campaign's wake-up, now pointless
		p.timer.Stop()
		p.timer, p.timerAt = nil, time.Time{}
	}
	p.mu.Unlock()
	if stopped {
		p.abortOnce.Do(p.flush) // wait for a flush another goroutine started
	}
	if n := p.canceled.Load(); n > 0 {
		return fmt.Errorf("close %s pool: %d messages canceled: %w", p.name, n, cause)
	}
	return nil
}

// stop cancels in-flight sends and flushes every queued message as canceled.
func (p *Pool) stop(cause error) {
	p.mu.Lock()
	if !p.stopped {
		p.stopped, p.closing = true, true
		p.stopCause = cause
		if p.cancelRun != nil {
			p.cancelRun()
		}
		if p.timer != nil {
			p.timer.Stop()
			p.timer, p.timerAt = nil, time.Time{}
		}
		p.wakeAll()
		p.wakeSubmitters()
	}
	p.mu.Unlock()
	p.abortOnce.Do(p.flush)
}

func (p *Pool) flush() {
	p.mu.Lock()
	now := p.clock.Now()
	var outs []Outcome
	for li := range p.lanes {
		l := &p.lanes[li]
		for _, q := range l.ring {
			for q.items.n > 0 {
				outs = append(outs, p.canceledOutcome(q.items.pop(), now))
			}
			q.active = false
		}
		l.ring, l.next, l.queued = nil, 0, 0
		clear(l.byID)
	}
	for len(p.retries) > 0 {
		outs = append(outs, p.canceledOutcome(p.retries.pop(), now))
	}
	p.ready = 0
	p.updateDepth()
	ctx := p.sinkCtx
	p.mu.Unlock()
	if len(outs) > 0 {
		p.log.Info("worker pool stopped with messages undelivered", "canceled", len(outs))
		p.countOutcomes(outs)
		p.cfg.Outcomes.Outcomes(ctx, outs)
	}
}

// Submit queues msgs in lane, blocking while the queue is full. It returns
// how many messages (a prefix of msgs) the pool took: each of those will get
// exactly one Outcome. On ctx's end it returns ctx's error; after Close, ErrPoolClosed.
func (p *Pool) Submit(ctx context.Context, lane Lane, msgs ...*Message) (int, error) {
	if err := validateSubmit(lane, msgs); err != nil {
		return 0, fmt.Errorf("submit to %s pool: %w", p.name, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := p.clock.Now()
	taken := 0
	for {
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			return taken, fmt.Errorf("submit to %s pool: %w", p.name, ErrPoolClosed)
		}
		taken += p.enqueueLocked(lane, msgs[taken:], now)
		if taken == len(msgs) {
			p.mu.Unlock()
			return taken, nil
		}
		if p.spaceCh == nil {
			p.spaceCh = make(chan struct{})
		}
		space := p.spaceCh
		p.blocked++
		p.mu.Unlock()
		select {
		case <-space:
			p.mu.Lock()
			p.blocked--
			p.mu.Unlock()
		case <-ctx.Done():
			p.mu.Lock()
			p.blocked--
			p.mu.Unlock()
			return taken, ctx.Err()
		}
	}
}

// TrySubmit queues as many of msgs as fit without waiting. It returns how
// many (a prefix) it took, and ErrQueueFull if not all.
func (p *Pool) TrySubmit(lane Lane, msgs ...*Message) (int, error) {
	if err := validateSubmit(lane, msgs); err != nil {
		return 0, fmt.Errorf("submit to %s pool: %w", p.name, err)
	}
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return 0, fmt.Errorf("submit to %s pool: %w", p.name, ErrPoolClosed)
	}
	n := p.enqueueLocked(lane, msgs, now)
	if n < len(msgs) {
		return n, fmt.Errorf("submit to %s pool: %w", p.name, ErrQueueFull)
	}
	return n, nil
}

func validateSubmit(lane Lane, msgs []*Message) error {
	if lane >= NumLanes {
		return fmt.Errorf("unknown lane %d", lane)
	}
	for i, m := range msgs {
		if m == nil {
			return fmt.Errorf("message %d is nil", i)
		}
	}
	return nil
}

// enqueueLocked queues as many of msgs as fit and wakes enough workers.
func (p *Pool) enqueueLocked(lane Lane, msgs []*Message, now time.Time) int {
	limit := p.cfg.QueueSize
	if lane == LaneHigh {
		// Triggers must never wait behind a campaign that filled the queue.
		limit += p.cfg.HighReserve
	}
	n := min(len(msgs), limit-p.ready-len(p.retries))
	if n <= 0 {
		return 0
	}
	var q *campaignQueue
	for _, m := range msgs[:n] {
		if q == nil || q.id != m.Campaign {
			q = p.queueFor(lane, m.Campaign)
		}
		q.items.push(item{msg: m, submitted: now.UnixNano(), lane: lane})
	}
	p.lanes[lane].queued += n
	p.ready += n
	for wake := (n + p.cfg.BatchSize - 1) / p.cfg.BatchSize; wake > 0 && p.waiting > 0 && p.waking < p.maxWaking; wake-- {
		p.wakeOne()
	}
	p.updateDepth()
	return n
}

// queueFor returns the campaign's queue in lane, active in the round-robin ring.
func (p *Pool) queueFor(lane Lane, campaign string) *campaignQueue {
	l := &p.lanes[lane]
	q := l.byID[campaign]
	if q == nil {
		if n := len(p.freeQueues); n > 0 {
			q = p.freeQueues[n-1]
			p.freeQueues[n-1] = nil
			p.freeQueues = p.freeQueues[:n-1]
			p.freeCap -= len(q.items.buf)
		} else {
			q = &campaignQueue{}
		}
		q.id = campaign
		q.limiter = p.campaignLimits[campaign]
		q.parkedUntil = time.Time{}
		l.byID[campaign] = q
	}
	if !q.active {
		q.active = true
		l.ring = append(l.ring, q)
	}
	return q
}

// retire removes the empty queue at ring[i]; ring[i] is then the next campaign.
func (p *Pool) retire(l *lane, i int) {
	q := l.ring[i]
	copy(l.ring[i:], l.ring[i+1:])
	l.ring[len(l.ring)-1] = nil
	l.ring = l.ring[:len(l.ring)-1]
	q.active = false
	delete(l.byID, q.id)
	q.limiter = nil
	// Keep empty queues for reuse: campaigns drain and refill all the time,
	// and regrowing a ring each time was most of the pool's cost. Their
	// buffers are bounded to twice the queue size in total.
	if len(p.freeQueues) < 256 {
		if p.freeCap+len(q.items.buf) > 2*p.cfg.QueueSize {
			q.items = fifo{}
		}
		q.items.head = 0
		p.freeCap += len(q.items.buf)
		p.freeQueues = append(p.freeQueues, q)
	}
}

// SetCampaignRate limits a campaign's messages in this pool to r per second
// with the given burst. Call SetCampaignLimiter(id, nil) when the campaign ends.
func (p *Pool) SetCampaignRate(campaign string, r rate.Limit, burst int) error {
	if r < 0 || math.IsNaN(float64(r)) {
		return fmt.Errorf("set campaign %q rate: negative rate %v", campaign, r)
	}
	if burst < 1 && r != rate.Inf {
		return fmt.Errorf("set campaign %q rate: burst %d must be at least 1", campaign, burst)
	}
	p.SetCampaignLimiter(campaign, rate.NewLimiter(r, burst))
	return nil
}

// SetCampaignLimiter limits a campaign with lim, which may be shared with
// other pools (a campaign-wide throttle across channels); all of them must
// use the same Clock. A nil lim removes the limit.
func (p *Pool) SetCampaignLimiter(campaign string, lim *rate.Limiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if lim == nil {
		delete(p.campaignLimits, campaign)
	} else {
		p.campaignLimits[campaign] = lim
	}
	for li := range p.lanes {
		if q := p.lanes[li].byID[campaign]; q != nil {
			q.limiter, q.parkedUntil = lim, time.Time{}
		}
	}
	p.wakeAll()
}

// PoolStats is a snapshot of where a pool's messages are.
type PoolStats struct {
	Queued            [NumLanes]int // ready to send, by Lane
	Retrying          int           // waiting for a retry
	InFlight          int           // handed to Send
	IdleWorkers       int
	BlockedSubmitters int
	Closing           bool // Close has begun: Submit refuses, queued work drains
}

// Stats returns a snapshot.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Retrying: len(p.retries), InFlight: p.inflight, IdleWorkers: p.waiting, BlockedSubmitters: p.blocked, Closing: p.closing}
	for i := range p.lanes {
		s.Queued[i] = p.lanes[i].queued
	}
	return s
}

// wakeOne and wakeAll keep p.waiting exact (sync.Cond has no spurious
// wake-ups): it is the number of workers blocked and not yet woken, which
// Stats reports and tests use to know the pool is quiescent.
func (p *Pool) wakeOne() {
	if p.waiting > 0 {
		p.waiting--
		p.waking++
		p.work.Signal()
	}
}

func (p *Pool) wakeAll() {
	p.waking += p.waiting
	p.waiting = 0
	p.work.Broadcast()
}

func (p *Pool) wakeSubmitters() {
	if p.spaceCh != nil {
		close(p.spaceCh)
		p.spaceCh = nil
	}
}

func (p *Pool) updateDepth() {
	for i := range p.lanes {
		p.metrics.depth[i].Set(float64(p.lanes[i].queued))
	}
	p.metrics.depth[NumLanes].Set(float64(len(p.retries)))
	p.metrics.inflight.Set(float64(p.inflight))
}

// worker is one worker's reusable buffers: a worker allocates nothing per
// message once they have grown.
type worker struct {
	items   []item
	msgs    []*Message
	retry   []item
	out     []Outcome
	fb      []Feedback
	settled int // in-flight messages to release at the next lock
	// now is the time of the worker's last look at the clock (normally the
	// end of its last Send). The next take and Send start reuse it instead
	// of reading the clock again: on this machine time.Now costs ~100 ns,
	// a third of the pool's whole per-message budget at batch size 1.
	now time.Time
}

func (p *Pool) runWorker() {
	defer p.wg.Done()
	w := &worker{}
	for {
		ok := p.next(w)
		if len(w.out) > 0 {
			p.emit(w)
		}
		if !ok {
			return
		}
		if len(w.items) > 0 {
			p.send(w)
		}
	}
}

// next settles the previous batch and takes the next one, waiting for work.
// It reports false when the worker should exit.
func (p *Pool) next(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settle(w)
	w.items, w.msgs = w.items[:0], w.msgs[:0]
	now := w.now
	if now.IsZero() {
		now = p.clock.Now()
	}
	for {
		if p.stopped {
			return false
		}
		w.now = now
		p.take(w, now)
		if len(w.items) > 0 || len(w.out) > 0 {
			p.inflight += len(w.items)
			w.settled = len(w.items)
			if p.ready > 0 && p.waking < p.maxWaking {
				p.wakeOne() // promoted retries or more messages: chain the wake-up
			}
			p.updateDepth()
			return true
		}
		if p.closing && p.ready == 0 && len(p.retries) == 0 && p.inflight == 0 {
			p.wakeAll()
			return false
		}
		p.waiting++
		p.work.Wait() // whoever woke us took us off p.waiting
		p.waking--
		now = p.clock.Now()
	}
}

// settle releases the last batch and schedules its retries. Called locked.
func (p *Pool) settle(w *worker) {
	if w.settled > 0 {
		p.inflight -= w.settled
		w.settled = 0
		p.metrics.inflight.Set(float64(p.inflight))
	}
	if len(w.retry) > 0 {
		now := w.now
		for _, it := range w.retry {
			if p.stopped {
				w.out = append(w.out, p.canceledOutcome(it, now))
				continue
			}
			at := now.Add(p.backoff.delay(int(it.attempts), it.last.RetryAfter))
			if d := it.msg.Deadline; !d.IsZero() && !at.Before(d) {
				w.out = append(w.out, p.outcome(it, now, OutcomeExpired, ReasonExpired, it.last.Code, "",
					&Error{Reason: ReasonExpired, Permanent: true, Code: it.last.Code,
						Err: fmt.Errorf("retry in %v would pass the deadline: %w", at.Sub(now), it.last)}))
				continue
			}
			it.readyAt = at.UnixNano()
			p.retries.push(it)
			p.armTimer(at, now)
			if p.cfg.PauseOnRateLimit && it.last.Reason == ReasonRateLimited && it.last.RetryAfter > 0 {
				if until := now.Add(min(it.last.RetryAfter, p.cfg.MaxRetryAfter)).UnixNano(); until > p.pausedUntil {
					if p.pausedUntil <= now.UnixNano() { // log the start of a pause, not each extension
						p.log.Warn("provider rate limit: pausing the pool", "retry_after", it.last.RetryAfter, "code", it.last.Code)
					}
					p.pausedUntil = until
				}
			}
		}
		clear(w.retry)
		w.retry = w.retry[:0]
		p.updateDepth()
	}
	if p.closing && p.inflight == 0 && p.ready == 0 && len(p.retries) == 0 {
		p.wakeAll()
	}
}

// take fills w with the next batch: lanes in priority order, campaigns
// round-robin within a lane, rate-limited campaigns skipped until they have
// tokens. Expired messages become outcomes instead. Called locked.
func (p *Pool) take(w *worker, now time.Time) {
	if p.pausedUntil > now.UnixNano() {
		p.armTimer(time.Unix(0, p.pausedUntil), now)
		return
	}
	if len(p.retries) > 0 && p.retries[0].readyAt <= now.UnixNano() {
		p.promote(now.UnixNano())
	}
	want := p.cfg.BatchSize
	var wake time.Time
	for li := range p.lanes {
		l := &p.lanes[li]
		for visits := len(l.ring); visits > 0 && l.queued > 0 && len(w.items) < want; visits-- {
			if l.next >= len(l.ring) {
				l.next = 0
			}
			q := l.ring[l.next]
			if q.parkedUntil.After(now) {
				wake = earliest(wake, q.parkedUntil)
				l.next++
				continue
			}
			for q.items.n > 0 && isExpired(q.items.front(), now) {
				it := q.items.pop()
				l.queued--
				p.ready--
				w.out = append(w.out, p.outcome(it, now, OutcomeExpired, ReasonExpired, "", "", errExpired(it.msg)))
			}
			k := min(q.items.n, want-len(w.items))
			if k > 0 && q.limiter != nil {
				if k = p.allow(q, k, now); k == 0 {
					wake = earliest(wake, q.parkedUntil)
					l.next++
					continue
				}
			}
			for range k {
				it := q.items.pop()
				w.items = append(w.items, it)
				w.msgs = append(w.msgs, it.msg)
			}
			l.queued -= k
			p.ready -= k
			if q.items.n == 0 {
				p.retire(l, l.next)
			} else {
				l.next++
			}
		}
	}
	if !wake.IsZero() {
		p.armTimer(wake, now)
	}
	if len(p.retries) > 0 {
		p.armTimer(time.Unix(0, p.retries[0].readyAt), now)
	}
	// Wake blocked submitters only once a useful amount of space is free:
	// waking them per freed slot turns a full queue into a goroutine switch
	// per message.
	if free := p.cfg.QueueSize - p.ready - len(p.retries); p.spaceCh != nil && free > 0 &&
		(free >= p.refill || p.ready == 0) {
		p.wakeSubmitters()
	}
}

// allow takes up to k tokens from the campaign's limiter; with none, it parks
// the campaign until one is due. It never blocks: a throttled campaign must
// not hold a worker that another campaign could use.
func (p *Pool) allow(q *campaignQueue, k int, now time.Time) int {
	lim := q.limiter
	if lim.Limit() == rate.Inf {
		return k
	}
	tokens := lim.TokensAt(now)
	k = min(k, int(tokens))
	if k >= 1 && lim.AllowN(now, k) {
		return k
	}
	wait := time.Hour // a zero rate: look again later, or when SetCampaignLimiter changes it
	if r := float64(lim.Limit()); r > 0 {
		need := max(1-tokens, 0)
		wait = max(time.Duration(math.Ceil(need/r*float64(time.Second))), time.Microsecond)
	}
	q.parkedUntil = now.Add(wait)
	return 0
}

// promote moves due retries back to their campaign queues. Called locked.
func (p *Pool) promote(now int64) {
	for len(p.retries) > 0 && p.retries[0].readyAt <= now {
		it := p.retries.pop()
		q := p.queueFor(it.lane, it.msg.Campaign)
		q.items.push(it)
		p.lanes[it.lane].queued++
		p.ready++
	}
}

// armTimer makes sure a wake-up is due no later than at. Called locked.
func (p *Pool) armTimer(at, now time.Time) {
	if p.stopped || (!p.timerAt.IsZero() && !at.Before(p.timerAt)) {
		return
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timerGen++
	gen := p.timerGen
	p.timerAt = at
	p.timer = p.clock.AfterFunc(at.Sub(now), func() { p.onTimer(gen) })
}

func (p *Pool) onTimer(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen == p.timerGen {
		p.timer, p.timerAt = nil, time.Time{}
	}
	// One worker promotes and takes; it chains the wake-up if more is ready.
	p.wakeOne()
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

func isExpired(it *item, now time.Time) bool {
	return !it.msg.Deadline.IsZero() && !now.Before(it.msg.Deadline)
}

func errExpired(m *Message) error {
	return &Error{Reason: ReasonExpired, Permanent: true, Err: fmt.Errorf("deadline %s passed before sending", m.Deadline.UTC().Format(time.RFC3339))}
}

// send runs one batch through the account limiter and the channel and
// classifies every answer.
func (p *Pool) send(w *worker) {
	ctx := p.runCtx
	n := len(w.items)
	start := w.now
	if p.account != nil && (p.allowAccount == nil || !p.allowAccount.AllowN(start, n)) {
		err := p.account.WaitN(ctx, n)
		start = p.clock.Now()
		w.now = start
		if err != nil {
			now := start
			for _, it := range w.items {
				if ctx.Err() != nil {
					w.out = append(w.out, p.canceledOutcome(it, now))
					continue
				}
				// Not a cancellation: a misconfigured limiter. Count it as an
				// attempt so it ends in retries_exhausted instead of looping.
				it.attempts++
				p.transient(w, it, Transient(ReasonRateLimited, "", 0, fmt.Errorf("wait for account rate limit: %w", err)), now)
			}
			p.emit(w)
			return
		}
		p.dropExpired(w, start) // the limiter held the batch: it may be past a deadline now
		if len(w.items) == 0 {
			p.emit(w)
			return
		}
		n = len(w.items)
	}
	if p.cfg.Handoff != nil {
		if err := p.cfg.Handoff.Handoff(ctx, w.msgs); err != nil {
			now := p.clock.Now()
			w.now = now
			p.failures.record("hand-off refused; messages not sent", &Error{Reason: ReasonCanceled, Code: "handoff",
				Err: fmt.Errorf("hand off %d messages: %w", len(w.items), err)}, "")
			for _, it := range w.items {
				w.out = append(w.out, p.outcome(it, now, OutcomeCanceled, ReasonCanceled, "", "", &Error{Reason: ReasonCanceled, Err: err}))
			}
			p.emit(w)
			return
		}
	}
	sent := start
	if p.cfg.Handoff != nil {
		// The hand-off waits for the ledger; the request leaves after it.
		sent = p.clock.Now()
	}
	results, panicked := p.callSend(ctx, w.msgs)
	end := p.clock.Now()
	w.now = end
	p.metrics.latency.Observe(end.Sub(start).Seconds())

	if len(results) != n && !panicked {
		p.failures.record("channel broke its contract", &Error{Reason: ReasonUnknown, Code: "results",
			Err: fmt.Errorf("send %d messages: got %d results: %w", n, len(results), errShortResults)}, "")
	}
	accepted := 0
	for i := range w.items {
		it := w.items[i]
		it.attempts++
		it.sentAt = sent.UnixNano()
		var res Result
		switch {
		case panicked:
			res.Err = Permanent(ReasonUnknown, "panic", errPanic)
		case i < len(results):
			res = results[i]
		default:
			res.Err = Transient(ReasonUnknown, "", 0, errShortResults)
		}
		if res.Err == nil {
			accepted++
			w.out = append(w.out, p.outcome(it, end, OutcomeAccepted, "", "", res.ProviderID, nil))
			continue
		}
		ce := Classify(res.Err)
		if p.cfg.SendTimeout > 0 && ce.Reason == ReasonExpired && ctx.Err() == nil && errors.Is(ce, context.DeadlineExceeded) &&
			(it.msg.Deadline.IsZero() || end.Before(it.msg.Deadline)) {
			// Our SendTimeout fired, not the message's TTL: a timeout, worth retrying.
			ce = Transient(ReasonNetwork, ce.Code, 0, fmt.Errorf("send timed out after %v: %w", p.cfg.SendTimeout, ce.Err))
		}
		if ce.Permanent {
			p.metrics.attempt[2].Inc()
		} else {
			p.metrics.attempt[1].Inc()
		}
		p.failures.record("send failed", ce, it.msg.ID)
		switch {
		case ce.Permanent && (ce.Reason == ReasonDeadAddress || ce.Reason == ReasonUnsubscribed):
			w.out = append(w.out, p.outcome(it, end, OutcomeDeadAddress, ce.Reason, ce.Code, "", ce))
			m := it.msg
			w.fb = append(w.fb, Feedback{Channel: p.name, Address: feedbackAddress(m), UserID: m.UserID, UserKey: m.UserKey,
				Campaign: m.Campaign, MessageID: m.ID, Reason: ce.Reason, Code: ce.Code, At: end})
		case ce.Permanent && ce.Reason == ReasonExpired:
			w.out = append(w.out, p.outcome(it, end, OutcomeExpired, ReasonExpired, ce.Code, "", ce))
		case ce.Permanent:
			w.out = append(w.out, p.outcome(it, end, OutcomeFailed, ce.Reason, ce.Code, "", ce))
		case ctx.Err() != nil:
			w.out = append(w.out, p.canceledOutcome(it, end))
		default:
			p.transient(w, it, ce, end)
		}
	}
	if accepted > 0 {
		p.metrics.attempt[0].Add(float64(accepted))
	}
	p.emit(w)
}

// transient ends a message in retries_exhausted or queues it for a retry at
// the next settle.
func (p *Pool) transient(w *worker, it item, ce *Error, now time.Time) {
	if int(it.attempts) >= p.cfg.MaxAttempts {
		w.out = append(w.out, p.outcome(it, now, OutcomeRetriesExhausted, ce.Reason, ce.Code, "",
			&Error{Reason: ReasonRetriesExhausted, Permanent: true, Code: ce.Code, Err: fmt.Errorf("give up after %d attempts: %w", it.attempts, ce)}))
		return
	}
	it.last = ce
	w.retry = append(w.retry, it)
}

func (p *Pool) dropExpired(w *worker, now time.Time) {
	any := false
	for i := range w.items {
		if isExpired(&w.items[i], now) {
			any = true
			break
		}
	}
	if !any {
		return
	}
	kept := 0
	for _, it := range w.items {
		if isExpired(&it, now) {
			w.out = append(w.out, p.outcome(it, now, OutcomeExpired, ReasonExpired, "", "", errExpired(it.msg)))
			continue
		}
		w.items[kept], w.msgs[kept] = it, it.msg
		kept++
	}
	clear(w.items[kept:])
	clear(w.msgs[kept:])
	w.items, w.msgs = w.items[:kept], w.msgs[:kept]
}

func (p *Pool) callSend(ctx context.Context, msgs []*Message) (res []Result, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			// A provider bug must not take the daemon down; the batch fails
			// permanently so the same message cannot crash-loop a worker.
			p.log.Error("channel panicked during Send", "panic", fmt.Sprint(r), "batch", len(msgs))
			res, panicked = nil, true
		}
	}()
	if p.cfg.SendTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.SendTimeout)
		defer cancel()
	}
	return p.ch.Send(ctx, msgs), false
}

func (p *Pool) outcome(it item, now time.Time, status OutcomeStatus, reason Reason, code, providerID string, err error) Outcome {
	o := Outcome{Message: it.msg, Lane: it.lane, Status: status, Reason: reason, Code: code, ProviderID: providerID,
		Attempts: int(it.attempts), Latency: time.Duration(now.UnixNano() - it.submitted), At: now, Err: err}
	if it.sentAt != 0 {
		o.SentAt = time.Unix(0, it.sentAt)
	}
	return o
}

func (p *Pool) canceledOutcome(it item, now time.Time) Outcome {
	if isExpired(&it, now) {
		return p.outcome(it, now, OutcomeExpired, ReasonExpired, "", "", errExpired(it.msg))
	}
	p.canceled.Add(1)
	var code string
	if it.last != nil {
		code = it.last.Code
	}
	return p.outcome(it, now, OutcomeCanceled, ReasonCanceled, code, "", &Error{Reason: ReasonCanceled, Err: ErrPoolStopped})
}

// emit hands w's outcomes and feedback to the sinks and resets them.
func (p *Pool) emit(w *worker) {
	ctx := p.sinkCtx
	if len(w.fb) > 0 && p.feedback != nil {
		if err := p.feedback.RecordFeedback(ctx, w.fb); err != nil {
			// Dead addresses stay in the store until the next failure: worth
			// a log line, but not worth failing outcomes for.
			p.failures.record("record feedback failed", &Error{Reason: ReasonUnknown, Code: "feedback",
				Err: fmt.Errorf("record %d feedback records: %w", len(w.fb), err)}, "")
		}
	}
	clear(w.fb)
	w.fb = w.fb[:0]
	p.countOutcomes(w.out)
	p.cfg.Outcomes.Outcomes(ctx, w.out)
	clear(w.out)
	w.out = w.out[:0]
}

func (p *Pool) countOutcomes(outs []Outcome) {
	accepted := 0
	for i := range outs {
		if outs[i].Status == OutcomeAccepted {
			accepted++
			continue
		}
		p.metrics.failed(outs[i].Status, outs[i].Reason)
	}
	if accepted > 0 {
		p.metrics.accepted.Add(float64(accepted))
	}
}

// failureLog logs one line per kind of failure per interval, so a provider
// outage during a 10M campaign produces a few lines, not millions.
type failureLog struct {
	log   *slog.Logger
	every time.Duration
	clock Clock
	mu    sync.Mutex
	last  map[failureKey]*failureState
}

type failureKey struct {
	reason Reason
	code   string
}

type failureState struct {
	at         time.Time
	suppressed int
}

func (f *failureLog) record(msg string, ce *Error, messageID string) {
	now := f.clock.Now()
	k := failureKey{ce.Reason, ce.Code}
	f.mu.Lock()
	if len(f.last) > 1000 {
		clear(f.last) // a provider putting free text in Code must not grow this forever
	}
	s := f.last[k]
	if s != nil && now.Sub(s.at) < f.every {
		s.suppressed++
		f.mu.Unlock()
		return
	}
	suppressed := 0
	if s == nil {
		f.last[k] = &failureState{at: now}
	} else {
		suppressed, s.at, s.suppressed = s.suppressed, now, 0
	}
	f.mu.Unlock()
	f.log.Warn(msg, "reason", string(ce.Reason), "code", ce.Code, "permanent", ce.Permanent,
		"error", ce.Error(), "message_id", messageID, "suppressed_since_last", suppressed)
}

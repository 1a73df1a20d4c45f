package campaigns

import (
	"context"
	"encoding/json"
	"time"
)

// This file declares what the pipeline needs from its state layer. Two
// implementations are held to one contract (store/statetest): store/redisstate
// (shared between daemons, survives restarts) and store/memstate (one process).
// Keep it to interfaces and plain types: behaviour belongs to the
// implementations and is pinned down by the contract tests.

// StateError is a condition of the state layer that the pipeline acts on.
// Implementations wrap it ("claim batch: %w"); compare with errors.Is. Any
// other error from a state method is an infrastructure failure (Redis down, a
// timeout): the pipeline must pause and retry, never treat it as "not sent" or
// "sent".
type StateError string

func (e StateError) Error() string { return string(e) }

const (
	// ErrNotFound: no campaign record with that id.
	ErrNotFound StateError = "not found"
	// ErrConflict: Create found a record with the same id and a different definition.
	ErrConflict StateError = "conflicts with the existing definition"
	// ErrInvalidTransition: the lifecycle does not allow from → to.
	ErrInvalidTransition StateError = "invalid status transition"
	// ErrStatusChanged: compare-and-set lost: the record's status is not the expected one.
	ErrStatusChanged StateError = "status changed concurrently"
	// ErrHeld: another owner holds a live lease on the campaign.
	ErrHeld StateError = "campaign held by another owner"
	// ErrLeaseLost: the caller's campaign lease expired or was taken over (fenced
	// out). Stop sending for this campaign at once; Acquire again to continue.
	ErrLeaseLost StateError = "campaign lease lost"
	// ErrUnknownBatch: no open batch with that sequence number.
	ErrUnknownBatch StateError = "unknown batch"
	// ErrBatchFinal: the batch was already reported final; counts were not applied twice.
	ErrBatchFinal StateError = "batch already final"
	// ErrBatchOrder: a claimed batch must start after the last claimed one (members are visited in ascending key order).
	ErrBatchOrder StateError = "batch range not after the last claimed batch"
)

// ClaimState is the answer to claiming one per-message dedup key.
type ClaimState uint8

const (
	// Claimed: the key was free; the caller holds a fresh lease and may send.
	Claimed ClaimState = iota + 1
	// Duplicate: the message was confirmed within its window; do not send (reason "duplicate").
	Duplicate
	// Held: a live lease exists (another daemon, or an earlier attempt still in flight); do not send now.
	Held
	// InDoubt: an earlier lease expired without a confirm. The caller now holds a
	// fresh lease, but the earlier attempt may have reached the provider: re-send
	// with the same provider idempotency handle, or report "in_doubt" where the
	// channel has none (SMS).
	InDoubt
)

func (s ClaimState) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Duplicate:
		return "duplicate"
	case Held:
		return "held"
	case InDoubt:
		return "in_doubt"
	}
	return "unknown"
}

// DedupKey names one logical message for per-message dedup (flows, triggers,
// caller-given keys). Campaigns do not use per-message keys: see BatchLog.
type DedupKey struct {
	// Scope is the flow or trigger ("f:welcome"), or a caller-given dedup key ("k:order-123").
	Scope string
	// User is the recipient's 64-bit shard key; the record lives in the user's hash slot.
	User uint64
	// Channel is the channel name; empty dedups across channels.
	Channel string
}

// DedupLog claims messages before dispatch and confirms them after the
// provider accepted them. Every method is one batched round trip (per Redis
// node), never one per key.
type DedupLog interface {
	// Claim answers per key, in order. Claimed and InDoubt give the caller a
	// lease of length lease. The record lives for window (≥ lease) so that an
	// expired lease is still recognised as in doubt, and a confirm as a duplicate,
	// for as long as a duplicate would matter.
	Claim(ctx context.Context, keys []DedupKey, lease, window time.Duration) ([]ClaimState, error)
	// Confirm marks the keys sent; later claims within window answer Duplicate.
	Confirm(ctx context.Context, keys []DedupKey, window time.Duration) error
	// Release drops the caller's own unconfirmed leases (the send failed before
	// reaching the provider), so the message can be claimed again at once.
	// Confirmed records and other owners' leases are left alone.
	Release(ctx context.Context, keys []DedupKey) error
}

// AttemptDedup is a DedupLog that can scope claims to one attempt. A Claim
// can fail after it took some keys: its reply was lost, or on a Redis
// Cluster one node failed while the others answered. Retried, those keys
// read as a live lease, held until it ends and then in doubt, which SMS and
// email skip: the messages were lost though nothing was sent. The DedupLog
// that Attempt returns takes a lease of its own attempt as claimed. A
// caller uses one attempt (a fresh token) for the tries of one set of keys,
// and the confirm or release that follows; it must have sent nothing under
// it before a retry.
type AttemptDedup interface {
	DedupLog
	Attempt(token string) DedupLog
}

// Status is a campaign's lifecycle state:
// scheduled → running ⇄ paused → completed | cancelled | failed.
type Status string

const (
	StatusScheduled Status = "scheduled"
	StatusRunning   Status = "running"
	StatusPaused    Status = "paused"
	StatusCompleted Status = "completed"
	StatusCancelled Status = "cancelled"
	StatusFailed    Status = "failed"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusScheduled, StatusRunning, StatusPaused, StatusCompleted, StatusCancelled, StatusFailed:
		return true
	}
	return false
}

// CanTransition is the lifecycle table, the one place it is written down.
// completed and failed may go back to running: that is "retry failed", which
// re-runs only the recipients that failed transiently. cancelled is final.
func (s Status) CanTransition(to Status) bool {
	switch s {
	case StatusScheduled:
		return to == StatusRunning || to == StatusPaused || to == StatusCancelled
	case StatusRunning:
		return to == StatusPaused || to == StatusCompleted || to == StatusCancelled || to == StatusFailed
	case StatusPaused:
		return to == StatusRunning || to == StatusCancelled || to == StatusFailed
	case StatusCompleted, StatusFailed:
		return to == StatusRunning
	}
	return false
}

// CampaignRecord is a stored campaign: its definition is opaque JSON owned by
// the Campaign model; the store keeps status and timestamps beside it.
type CampaignRecord struct {
	ID         string
	Definition json.RawMessage // compacted JSON
	Status     Status
	// Reason says why the campaign is in its status when that is not the
	// obvious one (failed: "crash_loop", "unknown_segment"); "" otherwise.
	Reason string
	// Ring is the fleet ring the campaign runs on, "<ring version>:<shards>",
	// pinned when a daemon first starts it ("" before).
	Ring    string
	Created time.Time
	Updated time.Time
}

// CampaignStore keeps campaign records.
type CampaignStore interface {
	// Create stores a new record in StatusScheduled. It is idempotent on id: if
	// the id exists with the same definition (compared as compacted JSON) it
	// returns the existing record and created=false; with a different one,
	// ErrConflict.
	Create(ctx context.Context, id string, definition []byte) (rec CampaignRecord, created bool, err error)
	// Get returns the record or ErrNotFound.
	Get(ctx context.Context, id string) (CampaignRecord, error)
	// List returns up to limit records with id > after, in id order; fewer than
	// limit means the end.
	List(ctx context.Context, after string, limit int) ([]CampaignRecord, error)
	// Transition is a compare-and-set from → to: ErrInvalidTransition if the
	// lifecycle forbids it, ErrStatusChanged if the status is no longer from.
	Transition(ctx context.Context, id string, from, to Status) (CampaignRecord, error)
	// TransitionBecause is Transition that also records why (CampaignRecord.Reason);
	// Transition clears the reason.
	TransitionBecause(ctx context.Context, id string, from, to Status, reason string) (CampaignRecord, error)
	// PinRing records ring as the campaign's ring unless one is recorded
	// already, and returns the recorded one; ErrNotFound without a record.
	PinRing(ctx context.Context, id, ring string) (string, error)
}

// Lease is one owner's exclusive hold on a campaign's progress. Token is a
// fencing token, strictly increasing per campaign: every write checks it, so a
// daemon that lost its lease (paused by GC, partitioned) cannot write over the
// daemon that took over.
type Lease struct {
	Campaign string
	Owner    string
	Token    int64
}

// Bitmap is a set of message positions within a batch, in Redis bit order
// (bit i is byte i/8, mask 0x80>>(i%8)) so Redis can OR and count it natively.
type Bitmap []byte

// NewBitmap returns an empty bitmap for n positions.
func NewBitmap(n int) Bitmap { return make(Bitmap, (n+7)/8) }

// Set adds position i; the bitmap must have been made for more than i positions.
func (b Bitmap) Set(i int) { b[i>>3] |= 0x80 >> (i & 7) }

// Has reports whether position i is in the set (false past the end).
func (b Bitmap) Has(i int) bool { return i>>3 < len(b) && b[i>>3]&(0x80>>(i&7)) != 0 }

// Checkpoint is a campaign's durable cursor: every member with a user key ≤
// Key is final (sent, skipped with a reason, or listed as a failure). Valid is
// false until the first batch is final. Seq is the last batch it covers.
type Checkpoint struct {
	Seq   int64
	Key   uint64
	Valid bool
}

// Batch is a claimed batch above the checkpoint. Positions 0..Slots-1 are the
// batch's message slots; what slot i means is the pipeline's choice and must be
// reproducible from the campaign and the pinned shard generation (the
// pipeline gives each message one slot: member × channel × address, and one
// slot to a member × channel that has no message).
type Batch struct {
	Seq         int64
	First, Last uint64 // user-key range, inclusive
	Slots       int
	Token       int64 // fencing token of the lease that claimed it
	Final       bool
	Dispatched  Bitmap // handed to a provider: written before the request leaves
	Confirmed   Bitmap // accepted by the provider
	Done        Bitmap // settled: confirmed, or counted with a reason, or listed as a failure
}

// InDoubt reports whether slot i was handed to a provider but never
// answered: after a crash it may or may not have been delivered.
func (b Batch) InDoubt(i int) bool { return b.Dispatched.Has(i) && !b.Done.Has(i) }

// Resume is what Acquire hands the new owner.
type Resume struct {
	Lease      Lease
	Checkpoint Checkpoint
	// LastClaimed is the highest user key any batch covers (valid when HasClaimed):
	// new batches start after it.
	LastClaimed uint64
	HasClaimed  bool
	// Open are the batches above the checkpoint in Seq order, final or not. A
	// non-final batch claimed under an older Token belonged to a dead owner: its
	// positions are settled (Done), in doubt (InDoubt) or never sent (neither).
	Open []Batch
	// Crashes counts the consecutive earlier runs of the campaign that ended
	// without releasing the lease (their daemon died) and without recording
	// progress (a provider accepting a message, or the checkpoint moving): a
	// campaign that kills or wedges its daemon shows up here (crash-loop
	// quarantine).
	Crashes int
}

// Count is a counter per channel and outcome ("sent", or a reason), and
// per A/B group: Variant is the variant id, HoldoutVariant, or "" for a
// campaign without an A/B test (and for flows).
type Count struct {
	Channel string
	Reason  string
	Variant string
	N       int64
}

// Failure is a transient failure kept for "retry failed", one per address:
// a user with two device tokens whose second failed has one Failure with
// Address 1.
type Failure struct {
	User    uint64
	Channel string
	// Address is the index of the address among the member's addresses on
	// the channel (device tokens, web push subscriptions); 0 for channels
	// with one address.
	Address int
	Reason  string
}

// Flush is one group commit of the delivery ledger: the reports of several
// batches, applied atomically in one round trip. ID numbers a run's flushes
// (1, 2, ...): a store applies a flush ID at most once per lease, so a flush
// whose reply was lost (timeout, Redis restarted from its AOF) is simply sent
// again. ID 0 opts out of that check.
type Flush struct {
	ID      int64
	Reports []BatchReport
	// Progress: the flush records messages a provider accepted, so the run
	// is not crash-looping (Resume.Crashes starts again from zero).
	Progress bool
}

// BatchReport is what the pipeline learned about one batch. In ReportBatch,
// bitmaps are OR-ed into what is stored, so a batch may be reported in parts;
// in Record (the ledger), they are the batch's merged bitmaps from byte Base
// on and replace the stored bytes there: the lease holder is the only writer
// and knows what is stored, and a copy is cheap where an OR in the store is
// not. Counts and Failures are applied once per report. Final closes the
// batch: the checkpoint then advances past every final batch with no open
// batch before it.
type BatchReport struct {
	Seq  int64
	Base int // byte offset of the bitmaps (Record only)
	// Slots, when more than the batch was claimed with, grows it (Record
	// only): a redriven batch whose members changed in a newer shard
	// generation is laid out again.
	Slots      int
	Dispatched Bitmap
	Confirmed  Bitmap
	Done       Bitmap
	Counts     []Count
	Failures   []Failure
	Final      bool
}

// Progress is a campaign's persisted status (of one part, in a fleet).
type Progress struct {
	// Completed: every member of the part is final (CampaignLeaser.Complete).
	Completed bool
	// Retry: "retry failed" was asked for the campaign and this part has not
	// run its retry pass yet (Reopen; Complete clears it).
	Retry      bool
	Checkpoint Checkpoint
	Counts     []Count // sorted by channel, reason
	Failures   int64   // transient failures waiting for "retry failed"
	Owner      string  // holder of the live lease, "" if none
}

// CampaignLeaser gives one owner at a time the right to advance a campaign.
type CampaignLeaser interface {
	// Acquire takes the campaign's lease for ttl with a new fencing token and
	// returns where to resume; ErrHeld if another owner's lease is live. An owner
	// re-acquiring its own live lease (a restart with the same owner id) gets a
	// new token, which fences out its earlier incarnation.
	Acquire(ctx context.Context, campaign, owner string, ttl time.Duration) (Resume, error)
	// Renew extends the lease; ErrLeaseLost if it is no longer held. A lease
	// that ran out while nobody else acquired the campaign (the state store
	// was unreachable for longer than the ttl) is taken back with the same
	// token: nothing was fenced out.
	Renew(ctx context.Context, lease Lease, ttl time.Duration) error
	// Release gives the lease up (pause, completion) so another owner can acquire it at once.
	Release(ctx context.Context, lease Lease) error
	// Complete records that every member of the leased campaign (or part of
	// one, in a fleet) is final, and releases the lease; ErrLeaseLost if the
	// lease is no longer held. Progress then reports Completed.
	Complete(ctx context.Context, lease Lease) error
	// Reopen asks a completed campaign (or part) for a "retry failed" pass:
	// Progress then reports Retry and not Completed, until Complete. It needs
	// no lease: it only flags the part for whichever daemon runs it.
	Reopen(ctx context.Context, campaign string) error
}

// BatchLog records campaign progress at O(in-flight) memory: one record per
// open batch, none per message, and a cursor for everything before.
type BatchLog interface {
	// ClaimBatch records a new batch over user keys first..last (first > the last
	// claimed key, else ErrBatchOrder) with slots message positions, and returns
	// its sequence number. One round trip per batch. It is idempotent: claiming
	// again exactly the last claimed batch (same range, slots and lease) returns
	// its seq, so a claim whose reply was lost can be retried.
	ClaimBatch(ctx context.Context, lease Lease, first, last uint64, slots int) (seq int64, err error)
	// ReportBatch applies one report and returns the checkpoint after it. Not
	// idempotent (counts are added): use Record where a retry is possible.
	ReportBatch(ctx context.Context, lease Lease, r BatchReport) (Checkpoint, error)
	// Record applies a ledger flush atomically, in one round trip, and returns
	// the checkpoint after it. A flush with the ID of the last one applied
	// under this lease is not applied again (it answers the checkpoint), so
	// after an infrastructure error the same flush is retried as it is.
	Record(ctx context.Context, lease Lease, f Flush) (Checkpoint, error)
}

// FailureLog serves "retry failed".
type FailureLog interface {
	// Failures pages through the campaign's transient failures; cursor "" starts,
	// a returned next of "" ends. A page may be shorter than limit.
	Failures(ctx context.Context, campaign, cursor string, limit int) (page []Failure, next string, err error)
	// MarkRetried applies the outcome of retrying failures, atomically and under
	// the caller's lease: r.Retried leave the list, then r.Failures (those that
	// failed again) join it, and r.Counts are added (e.g. the old reason −1,
	// "sent" +1).
	MarkRetried(ctx context.Context, lease Lease, r RetryReport) error
}

// RetryReport is the outcome of a "retry failed" pass over some failures.
type RetryReport struct {
	Retried  []Failure
	Failures []Failure
	Counts   []Count
}

// CampaignSnapshot is what a daemon knows of a campaign it is running,
// written back by StateRestorer.Restore when the state store lost it.
type CampaignSnapshot struct {
	Record      CampaignRecord
	Lease       Lease
	Flush       int64 // ID of the last ledger flush applied under Lease
	Checkpoint  Checkpoint
	LastClaimed uint64
	HasClaimed  bool
	Seq         int64   // last claimed batch seq
	Open        []Batch // durable state of the batches above the checkpoint
	Counts      []Count
	Failures    []Failure
	// Completed: the part is done (a fleet part waiting for the others'),
	// written back as done and without a lease, so no daemon runs it again.
	Completed bool
}

// StateRestorer is implemented by state stores that can lose their data
// while the daemon runs (a Redis restarted without persistence, a failover
// to a replica that lagged). The engine detects the loss by the epoch marker
// and writes back what it knows.
type StateRestorer interface {
	// Epoch returns the store's epoch marker, creating one if there is none
	// (created=true: the store is new or lost everything since it was made).
	Epoch(ctx context.Context) (epoch string, created bool, err error)
	// Restore writes a campaign's record, lease and progress back. It leaves
	// alone a campaign the store still has (another daemon restored it first
	// or it was never lost) and reports restored=false then.
	Restore(ctx context.Context, s CampaignSnapshot, ttl time.Duration) (restored bool, err error)
}

// ProgressStore is the whole campaign-progress side of the state layer.
type ProgressStore interface {
	CampaignLeaser
	BatchLog
	FailureLog
	// Progress reads a campaign's checkpoint, counts and failure count.
	Progress(ctx context.Context, campaign string) (Progress, error)
}

// Entry is one intake request (a campaign to create, a trigger to fire).
type Entry struct {
	ID      string
	Payload []byte
}

// Intake is a durable queue of requests with consumer-group semantics: a read
// entry stays pending until acknowledged, and a dead consumer's pending
// entries can be reclaimed, so an enqueued request survives a restart.
type Intake interface {
	Enqueue(ctx context.Context, payload []byte) (id string, err error)
	// Read returns up to count entries never delivered to the group, waiting up
	// to block for the first one (block ≤ 0: do not wait). It never waits past
	// ctx's deadline; a cancel without a deadline may only be noticed when block
	// ends (Redis), so keep block to a few seconds.
	Read(ctx context.Context, consumer string, count int, block time.Duration) ([]Entry, error)
	// Ack marks entries done and forgets them.
	Ack(ctx context.Context, ids ...string) error
	// Reclaim moves up to count entries pending for at least minIdle (any
	// consumer, including a previous incarnation of this one) to consumer.
	Reclaim(ctx context.Context, consumer string, minIdle time.Duration, count int) ([]Entry, error)
}

// Delayed is one trigger waiting for its flow's delay. The payload is opaque
// to the store.
type Delayed struct {
	// ID names the item; scheduling an ID that is already held keeps the
	// first item, so a re-delivered trigger is not scheduled twice.
	ID      string
	Due     time.Time
	Payload []byte
}

// DelayQueue holds delayed triggers where a restart or a crash cannot lose
// them (Redis), or in process memory (memstate). Delivery is at least once:
// a claimed item that is not Done within its lease comes back, and the
// flow's per-message dedup keeps the re-delivery from sending twice.
type DelayQueue interface {
	// Schedule stores items; IDs already held are left as they are.
	Schedule(ctx context.Context, items []Delayed) error
	// ClaimDue hands out up to max items whose Due has passed on the store's
	// clock, earliest first, each leased for lease: until Done or the lease
	// ends, no other claimer gets it. Claimed items carry ID and Payload.
	ClaimDue(ctx context.Context, max int, lease time.Duration) ([]Delayed, error)
	// Done forgets items for good. Unknown IDs are ignored.
	Done(ctx context.Context, ids []string) error
	// Len is the number of items held, due or not, claimed or not.
	Len(ctx context.Context) (int64, error)
}

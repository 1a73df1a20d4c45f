// Package channels owns what every delivery channel shares: the Channel
// interface, the Message and its per-channel content, typed errors with a
// Reason and retry hints, and the worker pool that rate-limits, retries and
// reports outcomes. Providers live in subpackages (apns, fcm, email, sms,
// webpush, webhook), implement only their protocol, and import this package;
// this package never imports them, nor campaigns.
//
// # The worker pool
//
// NewWorkerPool puts a Pool in front of one Channel. Callers Submit messages
// into a lane (LaneHigh for triggers and transactional sends, LaneNormal for
// campaigns); Workers goroutines take batches of up to BatchSize and call
// Send. Every message the pool took ends in exactly one Outcome, handed to
// the PoolConfig.Outcomes sink: accepted, failed (permanent), dead_address,
// expired, retries_exhausted or canceled.
//
//   - Backpressure: the pool holds at most QueueSize messages (ready or
//     waiting for a retry). Submit blocks while it is full and returns ctx's
//     error when ctx ends, with the count of messages it took; TrySubmit never
//     blocks and returns ErrQueueFull.
//   - Order and fairness: a worker always serves LaneHigh first; within a lane
//     it goes round-robin across campaigns (Message.Campaign), so a 10M
//     campaign cannot starve a 1k one. A batch may be topped up from the next
//     campaign or lane.
//   - Rate limits: an account limiter (WithAccountLimiter, e.g. a Twilio
//     number's MPS, shared by every pool that sends through it) is waited on
//     per batch with WaitN. Campaign limits (SetCampaignRate) never block a
//     worker: a campaign without tokens is skipped and looked at again when
//     its next token is due.
//   - Retries: transient errors are retried after an exponential backoff with
//     equal jitter (BackoffBase doubling up to BackoffMax), at least the
//     provider's RetryAfter (capped by MaxRetryAfter), at most MaxAttempts
//     Send calls in all; then the outcome is retries_exhausted with the last
//     reason. A message waiting for a retry sits in a timer-driven heap, not in
//     a worker. Permanent errors are never retried.
//   - PauseOnRateLimit: a rate_limited answer with a RetryAfter pauses the
//     whole pool until then, for providers whose 429 means the account.
//   - Dead addresses (ReasonDeadAddress, ReasonUnsubscribed) end as
//     dead_address and produce one Feedback record through the FeedbackSink.
//   - Deadlines: a message is never handed to Send at or after its Deadline;
//     it ends expired, as does a transient failure whose retry would land
//     after the Deadline.
//   - Close(ctx) stops intake (Submit returns ErrPoolClosed) and drains:
//     queued messages and pending retries keep going until the pool is empty
//     or ctx ends. Then in-flight Sends are canceled and every message not yet
//     delivered ends canceled (or expired, if past its Deadline); a canceled
//     message with Attempts > 0 is in doubt. Close returns once every outcome
//     is delivered, with an error counting the canceled messages.
//   - Canceling the context given to Start is the same as a Close whose ctx
//     has already ended.
//
// Metrics (notifyd_channel_messages_total, _attempts_total, _queue_depth,
// _inflight, notifyd_provider_latency_seconds) go to an injected registry; a
// repeated failure is logged once per interval with a count of the repeats.
package channels

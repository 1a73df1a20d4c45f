// Package channelstest holds what every channel's tests share: assertions
// that a channel leaks no secret into errors or logs and classifies errors
// right (RequireReason, RequireRetryAfter), a log capture, fake Channels for
// testing the worker pool and what sits above it (Scripted answers per
// address and counts, FuncChannel, Noop for benchmarks), a FakeClock and a
// constant random source for deterministic backoff, an OutcomeSink that
// records, and SendThroughPool, which runs a provider through a real pool to
// show its errors end in the right outcome and feedback. Only tests import
// it; Eventually is how they wait (never sleep).
package channelstest

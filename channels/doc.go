// Package channels owns what every delivery channel shares: the Channel
// interface, the Message and its per-channel content, typed errors with a
// Reason and retry hints, and the worker pool that rate-limits, retries and
// reports outcomes. Providers live in subpackages (apns, fcm, email, sms,
// webpush, webhook), implement only their protocol, and import this package;
// this package never imports them, nor campaigns.
package channels

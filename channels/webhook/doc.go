// Package webhook delivers notifications as signed JSON HTTP requests through
// github.com/hashicorp/go-retryablehttp.
//
// It owns the webhook protocol only: building the request (JSON body,
// Idempotency-Key, Stripe-style signature), refusing redirects, and
// classifying every answer into a *channels.Error. It does not retry, sleep or
// rate-limit: the worker pool in package channels owns that, so retryablehttp
// runs with RetryMax 0 and a CheckRetry that never retries (see New).
//
// # Transport
//
// retryablehttp wraps an http.Client whose Transport routes by scheme:
// cleartext http:// requests that need no proxy go through internal/h1, a
// lean HTTP/1.1 client in which the calling goroutine writes the request in
// one write and reads its answer (net/http's Transport hands each request to
// a write loop and each answer from a read loop, two goroutines per
// connection: about half the CPU per request, measured with notifyd bench
// webhook); https (HTTP/2 when the receiver offers it) and proxied requests
// go through net/http. Config.Transport TransportNetHTTP sends everything
// through net/http. The lean transport can pipeline (Config.Pipeline, off by
// default): up to that many requests wait in line on one connection before
// another is opened, while the receiver answers fast (a line's answers less
// than 1 ms apart; a slower receiver gets a connection per request while
// MaxConnsPerHost allows, since requests in line wait behind every answer
// before theirs), requests that meet there leave in one write, and the oldest
// caller reads the line's answers and hands them out in order (no
// goroutine of the connection's own). A broken line fails its unanswered
// requests as network errors: in doubt, re-sent by the pool under the same
// Idempotency-Key. On the lean path Config.Timeout is the connection's
// deadline (with a timer only while a request waits for a free connection),
// so a request derives no context with a timer of its own; requests through
// net/http are bounded by a context with the timeout.
//
// Why the pool, not retryablehttp, is the one owner of retries: a retry
// inside Client.Do sleeps in the goroutine that sent the batch, so a worker
// (and its rate-limit reservation) is held for the whole backoff, the
// campaign's deadline and attempt budget are not consulted, Retry-After is
// honoured uncapped, and a 5xx retry calls CloseIdleConnections on the
// transport every worker shares. The pool re-queues the message with its
// backoff and the worker moves on. Measured (TestPoolOwnsRetries: 40
// messages, 4 workers, a 503 on each first attempt, 200 ms backoff): 0.2 s
// with the pool retrying, 2.0 s with retryablehttp retrying in Do.
// retryablehttp's policy is still what decides retryability of transport
// errors: ErrorPropagatedRetryPolicy says which failures no retry fixes
// (untrusted certificate, invalid header, scheme, redirect loop), and those
// are permanent here; 501 is permanent for the same reason.
//
// # Signature
//
// Every request carries
//
//	X-Notifyd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//
// Receivers call Verify(secret, header, body, time.Now(), 5*time.Minute):
// it compares in constant time, accepts any of several v1 entries (secret
// rotation) and refuses timestamps outside the tolerance (replays).
//
// # Classification
//
//	2xx                 accepted (X-Request-Id, if any, is the ProviderID)
//	3xx                 rejected, permanent (redirects are never followed)
//	401, 403            auth, permanent
//	410 (DeadStatuses)  dead_address, permanent: the pool prunes the endpoint
//	413                 invalid, permanent
//	408                 unavailable, transient, Retry-After honoured (capped)
//	429                 rate_limited, transient, Retry-After honoured (capped)
//	other 4xx (incl. 404) rejected, permanent
//	501                 rejected, permanent (as retryablehttp's policy)
//	other 5xx           unavailable, transient, Retry-After honoured (capped)
//	network / timeout   network, transient
//	certificate, header, scheme errors   network, permanent (code not_retryable)
//
// Error strings and logs name only scheme and host of a URL: webhook URLs
// often carry their credential in the userinfo, query or path.
package webhook

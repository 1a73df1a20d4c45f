// Package apns sends push notifications to Apple Push Notification service
// over HTTP/2 with github.com/sideshow/apns2, using token (.p8, ES256 JWT) or
// certificate (.p12/.pem) auth, over several connections (one apns2 client
// and HTTP/2 transport each, least-loaded first) with many streams each.
//
// It owns the APNs protocol only: building the payload (an append-based
// encoder, not a map per push) and headers, picking a connection, and
// classifying every answer into a *channels.Error (apns2 reports rejections
// in its Response, not as an error, and drops Retry-After, which a wrapping
// RoundTripper recovers). It does not retry, sleep or rate-limit; the worker
// pool in package channels does.
//
// The dialer wraps each TLS connection in a write-coalescing conn: x/net's
// HTTP/2 client flushes twice per request, and merging those flushes cut the
// client's CPU per push by about a quarter in TestAPNsLoad.
// testdata/load.sh compares the Sender with h2load against the sandbox.
package apns

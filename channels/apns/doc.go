// Package apns sends push notifications to Apple Push Notification service
// over HTTP/2, using token (.p8, ES256 JWT) or certificate (.p12/.pem) auth,
// over several connections (least-loaded first) with many streams each.
//
// It owns the APNs protocol only: building the payload (an append-based
// encoder, not a map per push) and headers, picking a connection, and
// classifying every answer into a *channels.Error. It does not retry, sleep
// or rate-limit; the worker pool in package channels does.
//
// # Two transports
//
// TransportDirect (the default) sends each push on internal/h2, a lean
// HTTP/2 client built on x/net/http2's Framer and hpack: the push's frames
// are encoded straight into the connection's write buffer (constant headers
// HPACK-indexed, per-push ones never-indexed), one writer goroutine per
// connection sends what accumulated, one reader hands each answer to the
// waiting Send worker, and a worker keeps several pushes in flight so it
// is woken about once per burst of answers. It exists because the general
// path cannot go below ~10 µs of CPU per push: apns2.Client.PushWithContext
// alone (json.Marshal re-validating our payload, http.NewRequest parsing the
// URL, header canonicalisation, http.Client.Do, a json.Decoder per answer)
// costs about that, and x/net/http2's client adds a goroutine and header
// maps per request. In TestAPNsLoad the direct path costs a fifth to a
// quarter of the apns2 path's CPU per push (2 allocations instead of 66),
// about what h2load itself (C, nghttp2) spends per request.
//
// TransportAPNs2 pushes with apns2.Client over x/net/http2's Transport,
// through a write-coalescing conn (x/net flushes twice per request); it is
// kept for A/B runs and as a fallback. apns2 stays the APNs library on both
// paths for what it is for: token.Token signs and refreshes the JWT,
// certificate loads .p12/.pem, and its push types, priorities and reasons
// (and apns2.Response, which classify reads) are shared, so both paths
// classify identically. apns2 reports rejections in its Response and drops
// Retry-After, which a wrapping RoundTripper recovers on that path.
//
// testdata/load.sh compares the Sender (either transport) with h2load
// against the out-of-process sandbox.
package apns

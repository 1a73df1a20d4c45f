// Package h2 is a lean HTTP/2 client for APNs-shaped traffic: POST requests
// with small bodies, small answers (a status, a few headers, at most a tiny
// JSON body) and thousands of concurrent streams on one long-lived TLS
// connection.
//
// It exists because the general client (net/http over x/net/http2) costs
// tens of microseconds of CPU per request in this shape: an *http.Request and
// header maps per request, a goroutine per request, a flush per frame. Here a
// request is encoded straight into the connection's write buffer under the
// lock that assigns its stream id, one writer goroutine sends whatever
// accumulated (group commit, no timers), and one reader goroutine per
// connection hands each finished answer to its waiting caller. Start and
// Wait are separate, so a caller can keep several requests in flight and be
// woken once for a burst of answers.
//
// Framing is golang.org/x/net/http2's Framer and header compression its hpack
// package; this package owns only the client's connection state machine:
// settings, stream slots, flow control both ways, GOAWAY, health pings and
// shutdown. It knows nothing about APNs beyond which response headers to
// keep (see Response).
package h2

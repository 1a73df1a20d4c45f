// Package email delivers notifications over SMTP with
// github.com/wneessen/go-mail.
//
// It owns the SMTP side only: a bounded pool of authenticated sessions that
// each carry many messages (MAIL/RCPT/DATA per message, no NOOP or RSET on
// the success path; with PIPELINING, RFC 2920, the end of one message and the
// next envelope share one write, so a message costs one round trip and is
// still confirmed only by its own 250 reply; with CHUNKING, RFC 3030, as
// well, up to MessagesPerWrite whole transactions (RSET, MAIL, RCPT, BDAT
// LAST and the content) share one write and their replies one wait, each
// message still confirmed by its own reply; see wire.go), building multipart/alternative
// messages (written straight into a pooled buffer, see compose.go: the
// quoted-printable encoding of the lines a body shares with the previous
// message is copied, not redone, and the "=_" boundary needs no search of the
// bodies) with a stable
// Message-ID (<IdempotencyKey@domain>) and RFC 8058 one-click unsubscribe
// headers, and classifying every SMTP reply into a *channels.Error. It does
// not retry, sleep or rate-limit: the worker pool in package channels owns
// that. A pooled session the server closed while idle is reopened once,
// transparently, because nothing was handed over at MAIL FROM.
//
// TLS is explicit: TLSStartTLS (mandatory STARTTLS, the default),
// TLSStartTLSOpportunistic, TLSImplicit (SMTPS) or TLSNone (local relays).
//
// # Classification
//
//	5xx on RCPT, X.1.x / 5.2.1 (or 550/551/553 without an enhanced code)  dead_address, permanent
//	malformed recipient address (never sent)                              dead_address, permanent
//	530/534/535/538, 5.7.8, "authenticate" refusals, AUTH unavailable     auth, permanent
//	5.3.4 / 5.2.3 / 5.6.x                                                 invalid, permanent
//	other 5xx                                                             rejected, permanent
//	421                                                                   unavailable, transient (session closed)
//	450, 452, 4.7.x                                                       rate_limited, transient
//	other 4xx                                                             unavailable, transient
//	no reply (EOF, reset, timeout), TLS verification, no STARTTLS         network, transient
package email

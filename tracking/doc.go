// Package tracking is the public side of engagement: the signed tokens that
// go into emails and SMS status callback URLs, the rewriting of an email's
// links and its open pixel, and the HTTP handler that receives what comes
// back (Twilio status callbacks, pixel loads, link clicks, RFC 8058
// one-click unsubscribes).
//
// It owns the wire format of tokens and the checks that make the public
// endpoints safe: every token is HMAC-SHA256 signed with a key from the
// daemon's config; a click redirects only to a URL whose signature binds it
// to the campaign that sent it (so the endpoint is no open redirect); Twilio
// callbacks are checked against X-Twilio-Signature with twilio-go's
// RequestValidator; unsubscribing takes a POST (a GET only shows a
// confirmation page, since mail scanners fetch links).
//
// It must not know where events go: it hands them to a Recorder (the daemon
// appends them to the delivery log, counts them in the campaign's state and
// writes unsubscribes to the feedback stream). It is served on its own
// listener, never the admin API's, and takes no admin token.
package tracking

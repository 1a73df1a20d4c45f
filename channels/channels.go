package channels

import (
	"context"
	"encoding/json"
	"time"
)

// Channel is one provider's protocol. It sends a batch and answers per message;
// it does not rate-limit, retry or sleep: the worker pool owns all of that.
//
// Send must return exactly len(batch) results, in batch order. A nil
// Result.Err means the provider accepted the message. Any other error should
// be (or wrap) an *Error so the pool can classify it; an unclassified error is
// treated as transient.
type Channel interface {
	Name() string
	Send(ctx context.Context, batch []*Message) []Result
}

// Names of the channels notifyd ships. A Channel's Name is one of these.
const (
	APNs    = "apns"
	FCM     = "fcm"
	Email   = "email"
	SMS     = "sms"
	WebPush = "webpush"
	Webhook = "webhook"
)

// Message is one rendered message to one address. Exactly one of the content
// pointers matching the channel is set.
type Message struct {
	// ID is unique per message within the daemon (e.g. campaign/user/channel/ordinal).
	ID string
	// IdempotencyKey is the provider-side idempotency handle: APNs apns-collapse-id
	// fallback / apns-id, email Message-ID, webhook Idempotency-Key. It is stable
	// across re-sends of the same logical message so an in-doubt re-send collapses.
	IdempotencyKey string
	// Campaign is the campaign or flow id, for metrics and per-campaign limits.
	Campaign string
	// Variant is the campaign's A/B variant the message renders ("" when
	// the campaign has none), for the delivery log.
	Variant string
	// UserID is the recipient's external id; UserKey its 64-bit shard key.
	UserID  string
	UserKey uint64

	// To is the address: APNs/FCM device token, email address, E.164 phone
	// number, or (webhook) the recipient id. Web push uses Subscription.
	To           string
	Subscription *Subscription

	// Deadline is when the message expires (its TTL). The pool does not hand a
	// message to a provider after it; providers pass it on where the protocol
	// has a field for it (apns-expiration, FCM ttl, web push TTL).
	Deadline time.Time
	// Arrived is when the request that caused this message reached notifyd (a
	// trigger's arrival); zero for campaign messages. Trigger latency is
	// measured from it to the provider request.
	Arrived time.Time
	// High marks time-sensitive messages (APNs priority 10, FCM high priority, web push Urgency high).
	High bool

	// Locale is the locale variant the content was rendered with ("" for
	// the default content), for the delivery log.
	Locale string
	// Track is the campaign's engagement tracking opt-in (email: open
	// pixel, click links, one-click unsubscribe); providers that track
	// apply it when the daemon has a tracking endpoint.
	Track Track

	// Ref is the submitter's own handle, carried untouched to the Outcome so the
	// submitter can route it back (the pool and providers never read it).
	// Store a pointer: a pointer in an interface costs no allocation.
	Ref any

	Push    *Push
	Mail    *Mail
	Text    *Text
	WebPush *WebPushContent
	Hook    *Hook
}

// Track says which engagement events a message's content reports back
// (package tracking).
type Track uint8

const (
	// TrackOpens adds an open pixel to an email's HTML.
	TrackOpens Track = 1 << iota
	// TrackClicks sends an email's http(s) links through signed click URLs.
	TrackClicks
	// TrackUnsubscribe adds RFC 8058 one-click unsubscribe headers.
	TrackUnsubscribe
)

// Subscription is a browser's web push subscription (RFC 8030/8291).
type Subscription struct {
	Endpoint string
	P256dh   string // base64url, the user agent's public key
	Auth     string // base64url, the 16-byte auth secret
}

// Push is rendered APNs/FCM content.
type Push struct {
	Title    string
	Body     string
	Sound    string
	Badge    *int
	DeepLink string
	ImageURL string
	// Data is custom data: a JSON object (or empty). APNs merges it into the
	// payload's top level; FCM sends it as its string-valued data map
	// (non-string values are JSON-encoded).
	Data       json.RawMessage
	CollapseID string
	ThreadID   string
	// PushType is the APNs push type ("alert" when empty).
	PushType string
}

// Mail is rendered email content.
type Mail struct {
	From            string
	ReplyTo         string
	Subject         string
	HTML            string
	Text            string
	Headers         map[string]string
	ListUnsubscribe string // a URL or mailto: for the List-Unsubscribe header
	// ListUnsubscribeOneClick adds List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058).
	ListUnsubscribeOneClick bool
}

// Text is rendered SMS content.
type Text struct {
	Body string
	// From overrides the sender number or messaging service for this message.
	From string
	// Encoding is "GSM-7" or "UCS-2"; Segments the number of SMS parts.
	Encoding string
	Segments int
}

// WebPushContent is rendered web push content; it travels encrypted as JSON.
type WebPushContent struct {
	Title string
	Body  string
	Icon  string
	URL   string
	Tag   string
}

// Hook is a rendered webhook request.
type Hook struct {
	Method  string
	URL     string
	Headers map[string]string
	Body    []byte
	// BodyIsJSON says the renderer already checked Body is valid JSON, so
	// a sender need not scan it again (about a microsecond per message).
	BodyIsJSON bool
}

// Result is a provider's answer for one message.
type Result struct {
	// ProviderID is what the provider calls the message (apns-id, FCM message
	// name, Twilio SID, SMTP Message-ID), when it says.
	ProviderID string
	// Err is nil when the provider accepted the message.
	Err error
}

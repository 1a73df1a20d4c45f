package campaigns

import (
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/templates"
)

// Consent is what a member recorded for one channel.
type Consent uint8

const (
	ConsentUnknown Consent = iota // nothing recorded
	ConsentGranted
	ConsentDenied
)

// Member is one segment member as the pipeline reads it. A MemberIter fills
// members in place, reusing their slices; strings may point into the shard
// mapping and are valid only while the generation the iterator pinned is held.
type Member struct {
	Key    uint64
	ID     string
	Email  string
	Phone  string
	APNs   []string
	FCM    []string
	WebSub []channels.Subscription
	// Consent per channel kind: email, sms, push (apns and fcm), webpush.
	EmailConsent, SMSConsent, PushConsent, WebPushConsent Consent
	// Profile is what templates read (id, locale, zone, attributes).
	Profile templates.Profile
	// Scope names the message for dedup and provider idempotency when it is
	// not the campaign (a flow's re-entry window, a caller's key); "" for campaigns.
	Scope string
	// Arrived is when the trigger reached notifyd; zero for campaigns.
	Arrived time.Time
	// Event is what a trigger carried (event.* in templates); nil for campaigns.
	Event map[string]any
	// Err is set when the member's row could not be read (a corrupt block):
	// the member leaves with reason "corrupt_row" and the error is reported.
	Err error
}

// MemberIter walks one segment of a pinned shard generation in ascending
// user-key order.
type MemberIter interface {
	// Next fills dst[:n] with the next members and returns n; 0 with a nil
	// error means the segment is exhausted.
	Next(dst []Member) (n int, err error)
	// Close releases the generation the iterator pinned.
	Close() error
}

// MemberSource is the co-located shard, as the pipeline needs it.
type MemberSource interface {
	// Members pins the newest generation and iterates segment's members with a
	// user key greater than after (all members when hasAfter is false).
	Members(segment string, after uint64, hasAfter bool) (MemberIter, error)
	// Generation is the newest published generation number.
	Generation() uint64
	// Pin pins the newest generation for point lookups by user key ("retry failed").
	Pin() (PinnedSource, error)
}

// PinnedSource looks members up by user key in one pinned generation.
type PinnedSource interface {
	// LookupKey fills dst with the member whose user key is key; false if
	// the generation has no such member (it left the shard).
	LookupKey(key uint64, dst *Member) (bool, error)
	// LookupID fills dst with the member whose external id is id (a trigger's user).
	LookupID(id string, dst *Member) (bool, error)
	// Close releases the generation.
	Close() error
}

package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"sort"
	"sync"
)

// ChannelStats is what one fake received, counted by idempotency handle: the
// identity under which a provider (or, without one, the recipient) would see
// two arrivals as the same message. Distinct, Duplicates and MaxCopies count
// accepted (2xx / 250) arrivals only: a request the fake refused delivered
// nothing, so its retry is not a second copy.
type ChannelStats struct {
	// Received counts every request (message, for SMTP) the fake answered.
	Received int64 `json:"received"`
	// Accepted counts those it answered with success.
	Accepted int64 `json:"accepted"`
	// Distinct is the number of distinct handles among accepted arrivals.
	Distinct int64 `json:"distinct"`
	// Duplicates is accepted arrivals beyond the first per handle.
	Duplicates int64 `json:"duplicates"`
	// MaxCopies is the most accepted arrivals of one handle (0 when none).
	MaxCopies int64 `json:"max_copies"`
	// Handle names what the handle is made of on this channel.
	Handle string `json:"handle"`
	// Keyed is true when the handle is an idempotency key the sender put on
	// the wire (apns-id, Message-ID, Idempotency-Key), false when the fake
	// derives it from the address and content because the protocol as
	// notifyd speaks it carries none.
	Keyed bool `json:"keyed"`
	// Repeated lists handles with more than one accepted copy, most copies
	// first, at most TallyRepeatedLimit of them.
	Repeated []HandleCopies `json:"repeated,omitempty"`
}

// HandleCopies is one handle that arrived more than once.
type HandleCopies struct {
	Handle  string `json:"handle"`
	Address string `json:"address"`
	Copies  int64  `json:"copies"`
}

// TallyRepeatedLimit bounds ChannelStats.Repeated, so /stats stays small
// after a drill that re-sent thousands of messages.
const TallyRepeatedLimit = 50

// Channel names of the tally, the daemon's channel names.
var tallyChannels = []string{"apns", "fcm", "email", "sms", "webpush", "webhook"}

// handleKinds says what each channel's handle is made of (ChannelStats.Handle).
var handleKinds = map[string]struct {
	kind  string
	keyed bool
}{
	"apns":    {"apns-id header (the sender derives it from Message.IdempotencyKey)", true},
	"fcm":     {"token + sha256(notification, data): FCM v1 as notifyd sends it carries no idempotency key", false},
	"email":   {"Message-ID header (<IdempotencyKey@domain>)", true},
	"sms":     {"To + sha256(Body): Twilio's Messages API has no idempotency key", false},
	"webpush": {"subscription + sha256(decrypted payload): RFC 8030 has no idempotency key (Topic is the campaign's tag)", false},
	"webhook": {"Idempotency-Key header", true},
}

// Tally counts what the fakes received per channel and per handle. Feed it
// from each fake's Recorder.SetObserver(t.Observer(channel)).
type Tally struct {
	mu sync.Mutex
	ch map[string]*tallyChannel
}

type tallyChannel struct {
	received, accepted, duplicates, maxCopies int64
	copies                                    map[string]int64
	repeated                                  map[string]string // handle -> address, for handles with copies > 1
}

// NewTally returns an empty tally over the six channels.
func NewTally() *Tally {
	t := &Tally{}
	t.Reset()
	return t
}

// Reset zeroes every count.
func (t *Tally) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ch = make(map[string]*tallyChannel, len(tallyChannels))
	for _, name := range tallyChannels {
		t.ch[name] = &tallyChannel{copies: map[string]int64{}, repeated: map[string]string{}}
	}
}

// Observer returns the Recorder observer for channel's fake.
func (t *Tally) Observer(channel string) func(Received) {
	return func(rec Received) { t.Add(channel, rec) }
}

// Add counts one arrival on channel.
func (t *Tally) Add(channel string, rec Received) {
	ok := rec.Status/100 == 2
	var h string
	if ok {
		h = Handle(channel, rec)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.ch[channel]
	if c == nil {
		return
	}
	c.received++
	if !ok {
		return
	}
	c.accepted++
	n := c.copies[h] + 1
	c.copies[h] = n
	if n > 1 {
		c.duplicates++
		c.repeated[h] = rec.Address
	}
	c.maxCopies = max(c.maxCopies, n)
}

// Snapshot returns the counts per channel.
func (t *Tally) Snapshot() map[string]ChannelStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]ChannelStats, len(t.ch))
	for name, c := range t.ch {
		k := handleKinds[name]
		s := ChannelStats{Received: c.received, Accepted: c.accepted, Distinct: int64(len(c.copies)), Duplicates: c.duplicates,
			MaxCopies: c.maxCopies, Handle: k.kind, Keyed: k.keyed}
		for h, addr := range c.repeated {
			s.Repeated = append(s.Repeated, HandleCopies{Handle: h, Address: addr, Copies: c.copies[h]})
		}
		sort.Slice(s.Repeated, func(i, j int) bool {
			a, b := s.Repeated[i], s.Repeated[j]
			return a.Copies > b.Copies || a.Copies == b.Copies && a.Handle < b.Handle
		})
		if len(s.Repeated) > TallyRepeatedLimit {
			s.Repeated = s.Repeated[:TallyRepeatedLimit]
		}
		out[name] = s
	}
	return out
}

// Handle is the idempotency handle of one arrival on channel (see
// ChannelStats.Handle for what each is made of). It reads what the sender
// actually put on the wire: channels/apns sends apns-id = UUIDv5 of
// Message.IdempotencyKey, channels/email Message-ID <key@domain>,
// channels/webhook Idempotency-Key; channels/fcm, channels/sms and
// channels/webpush send no key, so the handle is the address plus a digest
// of the content (which is stable across re-sends of one rendering).
func Handle(channel string, rec Received) string {
	switch channel {
	case "apns":
		if id := rec.Headers["apns-id"]; id != "" {
			return id
		}
	case "email":
		if id := rec.Headers["Message-Id"]; id != "" {
			return id
		}
	case "webhook":
		if k := rec.Headers["Idempotency-Key"]; k != "" {
			return k
		}
	case "fcm":
		var req struct {
			Message struct {
				Token        string            `json:"token"`
				Notification json.RawMessage   `json:"notification"`
				Data         map[string]string `json:"data"`
			} `json:"message"`
		}
		if json.Unmarshal(rec.Body, &req) == nil {
			// The TTL and expiration fields change with the send time, so
			// only the content counts.
			data, _ := json.Marshal(req.Message.Data) // sorted keys
			return rec.Address + "/" + digest(req.Message.Notification, data)
		}
	case "sms":
		if form, err := url.ParseQuery(string(rec.Body)); err == nil {
			return form.Get("To") + "/" + digest([]byte(form.Get("Body")))
		}
	}
	return rec.Address + "/" + digest(rec.Body)
}

func digest(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

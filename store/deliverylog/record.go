package deliverylog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// Record is one line of the delivery log: one final outcome of one message
// (Event "outcome"), or a later event about it. Its parquet tags are the
// lake's schema (docs/delivery-log.md); the golden test pins them.
// Timestamps are Unix microseconds, 0 when unknown (null in Parquet).
type Record struct {
	// MessageID is notifyd's id of the message, stable across re-sends:
	// campaign:userkey-hex:channel:n, or f:flow:scope:userkey-hex:channel:n.
	MessageID string `parquet:"message_id"`
	// Event is "outcome" for a delivery outcome, "delivery" for a
	// provider's later delivery report and "engagement" for the
	// recipient's opens, clicks and unsubscribes.
	Event string `parquet:"event,dict"`
	// Kind is "campaign" or "flow".
	Kind string `parquet:"kind,dict"`
	// Campaign is the campaign or flow id.
	Campaign string `parquet:"campaign_id,dict"`
	// Trigger names a flow's trigger (its idempotency key or arrival); empty for campaigns.
	Trigger string `parquet:"trigger_id,optional"`
	UserID  string `parquet:"user_id"`
	// UserKey is the recipient's 64-bit shard key (its bits as INT64).
	UserKey int64  `parquet:"user_key"`
	Channel string `parquet:"channel,dict"`
	// Address is the device token, email, phone or endpoint as configured:
	// hashed, truncated, plain or omitted (empty).
	Address    string `parquet:"address,optional"`
	ProviderID string `parquet:"provider_message_id,optional"`
	// Outcome is accepted, failed, dead_address, expired, retries_exhausted
	// or canceled (event outcome); delivered or undelivered (delivery);
	// opened, clicked or unsubscribed (engagement).
	Outcome      string `parquet:"outcome,dict"`
	Reason       string `parquet:"reason,dict,optional"`
	ProviderCode string `parquet:"provider_code,dict,optional"`
	Attempt      int32  `parquet:"attempt"`
	Variant      string `parquet:"variant,dict,optional"`
	Locale       string `parquet:"locale,dict,optional"`
	QueuedAt     int64  `parquet:"queued_at,optional,timestamp(microsecond)"`
	SentAt       int64  `parquet:"sent_at,optional,timestamp(microsecond)"`
	AnsweredAt   int64  `parquet:"answered_at,timestamp(microsecond)"`
	// Daemon and Shard are the daemon that wrote the record and its shard
	// (from the segment's header, not repeated per record on disk).
	Daemon string `parquet:"daemon,dict"`
	Shard  int32  `parquet:"shard"`
	// Segment and Seq locate the record in the log (segment id, ordinal in
	// it): a unique key for the row, and what exports are named after.
	Segment int64 `parquet:"segment"`
	Seq     int32 `parquet:"seq"`
	// Link is the target of a clicked link (outcome clicked), as the
	// message's HTML had it; empty for every other record.
	Link string `parquet:"link,optional"`
}

// Micros converts a time to the record's timestamps (0 for the zero time).
func Micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

const (
	frameHeader   = 8       // u32 length, u32 CRC-32C
	maxFrame      = 1 << 20 // no record comes near; a larger length is corruption
	kindHeader    = 'H'
	kindRecord    = 'R'
	recordVersion = 1
)

var errShortPayload = errors.New("payload ends inside a field")

// appendRecord appends r's payload (without frame header) to b. Daemon,
// Shard, Segment and Seq are not stored per record.
func appendRecord(b []byte, r *Record) []byte {
	b = append(b, kindRecord, recordVersion)
	for _, s := range [...]string{r.MessageID, r.Event, r.Kind, r.Campaign, r.Trigger, r.UserID, r.Channel, r.Address,
		r.ProviderID, r.Outcome, r.Reason, r.ProviderCode, r.Variant, r.Locale} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(r.UserKey))
	b = binary.AppendUvarint(b, uint64(r.Attempt))
	b = binary.AppendVarint(b, r.QueuedAt)
	b = binary.AppendVarint(b, r.SentAt)
	b = binary.AppendVarint(b, r.AnsweredAt)
	if r.Link != "" {
		// Fields added after version 1 follow as (tag, length, bytes), only
		// when set: a reader that predates them ignores them, and older
		// records end before them.
		b = append(b, extLink)
		b = binary.AppendUvarint(b, uint64(len(r.Link)))
		b = append(b, r.Link...)
	}
	return b
}

// Tags of the fields added after version 1.
const extLink = 1

// decodeExtensions reads the tagged fields after version 1's. An unknown
// tag or a field that does not fit ends the reading: bytes a later version
// wrote are ignored, never an error.
func decodeExtensions(b []byte, r *Record, copyOut bool) {
	for len(b) > 1 {
		tag := b[0]
		n, k := binary.Uvarint(b[1:])
		if k <= 0 || n > uint64(len(b)-1-k) {
			return
		}
		v := b[1+k : 1+k+int(n)]
		b = b[1+k+int(n):]
		if tag == extLink {
			if copyOut {
				r.Link = string(v)
			} else {
				r.Link = unsafe.String(unsafe.SliceData(v), len(v))
			}
		}
	}
}

// decoder reads a payload's fields in order.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShortPayload
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShortPayload
		return 0
	}
	d.b = d.b[n:]
	return v
}

// str returns the next string; copy says whether to copy it out of the
// payload (false: it aliases the buffer, valid until the buffer is reused).
func (d *decoder) str(copyOut bool) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errShortPayload
		return ""
	}
	s := d.b[:n]
	d.b = d.b[n:]
	if n == 0 {
		return ""
	}
	if copyOut {
		return string(s)
	}
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// decodeRecord fills r from a record payload.
func decodeRecord(p []byte, r *Record, copyOut bool) error {
	if len(p) < 2 || p[0] != kindRecord {
		return fmt.Errorf("decode record: not a record frame")
	}
	if p[1] != recordVersion {
		return fmt.Errorf("decode record: version %d, want %d", p[1], recordVersion)
	}
	d := decoder{b: p[2:]}
	for _, s := range [...]*string{&r.MessageID, &r.Event, &r.Kind, &r.Campaign, &r.Trigger, &r.UserID, &r.Channel, &r.Address,
		&r.ProviderID, &r.Outcome, &r.Reason, &r.ProviderCode, &r.Variant, &r.Locale} {
		*s = d.str(copyOut)
	}
	r.UserKey = int64(d.uvarint())
	r.Attempt = int32(d.uvarint())
	r.QueuedAt = d.varint()
	r.SentAt = d.varint()
	r.AnsweredAt = d.varint()
	if d.err != nil {
		return fmt.Errorf("decode record: %w", d.err)
	}
	r.Link = ""
	decodeExtensions(d.b, r, copyOut)
	return nil
}

// segmentHeader is the first frame of every segment.
type segmentHeader struct {
	Daemon  string
	Shard   int32
	Created int64 // Unix microseconds
}

func appendHeader(b []byte, h segmentHeader) []byte {
	b = append(b, kindHeader, recordVersion)
	b = binary.AppendUvarint(b, uint64(len(h.Daemon)))
	b = append(b, h.Daemon...)
	b = binary.AppendVarint(b, int64(h.Shard))
	b = binary.AppendVarint(b, h.Created)
	return b
}

func decodeHeader(p []byte) (segmentHeader, error) {
	var h segmentHeader
	if len(p) < 2 || p[0] != kindHeader {
		return h, errors.New("decode segment header: first frame is not a header")
	}
	d := decoder{b: p[2:]}
	h.Daemon = d.str(true)
	h.Shard = int32(d.varint())
	h.Created = d.varint()
	if d.err != nil {
		return h, fmt.Errorf("decode segment header: %w", d.err)
	}
	return h, nil
}

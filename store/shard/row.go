package shard

import (
	"encoding/binary"
	"math"
	"strings"
	"time"
)

// Row is one verified row of a generation. It is a small value: pass it
// around freely, but only while the generation is pinned, because its strings
// point into the mapping. The zero Row reads as empty.
//
// Row satisfies the templates package's Profile interface (ID, Locale,
// TimeZone, Attr) without importing it.
type Row struct {
	r *Reader
	// rec is the row record, a string so that fields are substrings of it
	// without conversions.
	rec string
	// pos packs the row index (bits 0-31) and the offset of the first
	// attribute in rec (bits 32-63), decoded once by Reader.Row. Packed, Row
	// is four words in three fields, which the compiler keeps in registers
	// across calls and returns (larger structs go through the stack).
	pos uint64
}

func (row Row) index() uint32 { return uint32(row.pos) }

// Record layout (docs/shard-format.md, "Row record"): a fixed header of four
// bytes, then the email at a fixed offset, so that the address a campaign
// resolves for most members needs no decoding at all.
const (
	recEmailLen = 1 // u8: email length, 0..254
	recIDLen    = 2 // u8: id length - 1 (ids are 1..256 bytes)
	recPhoneLen = 3 // u8: phone length, 0..16
	recFixed    = 4 // first email byte
)

// readUvarint decodes a uvarint of a record that checkRecord already walked,
// so it cannot run past the record. It has no call in it, so the compiler
// inlines it into every accessor, and the one-byte case (almost every
// length, reference and tag) is a load, a compare and a branch.
func readUvarint(b string, i int) (v uint64, next int) {
	v = uint64(b[i])
	i++
	if v < 0x80 {
		return v, i
	}
	v &= 0x7f
	for s := uint(7); ; s += 7 {
		c := b[i]
		i++
		v |= uint64(c&0x7f) << (s & 63)
		if c < 0x80 {
			return v, i
		}
	}
}

func readStr(b string, i int) (string, int) {
	n, i := readUvarint(b, i)
	return b[i : i+int(n)], i + int(n)
}

func skipStr(b string, i int) int {
	n, i := readUvarint(b, i)
	return i + int(n)
}

// Index returns the row index (the value segment bitmaps hold).
func (row Row) Index() uint32 { return row.index() }

// Key returns the 64-bit user key (XXH64 of the id); rows are sorted by it.
func (row Row) Key() uint64 {
	if row.r == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(row.r.keys[uint64(row.index())*8:])
}

// Consent returns what the row recorded for one channel.
func (row Row) Consent(ch ConsentChannel) Consent {
	if len(row.rec) == 0 {
		return ConsentUnknown
	}
	return Consent(row.rec[0] >> (2 * ch) & 3)
}

// Consents returns the consent of every channel.
func (row Row) Consents() Consents {
	return Consents{Email: row.Consent(ConsentEmail), SMS: row.Consent(ConsentSMS), Push: row.Consent(ConsentPush), WebPush: row.Consent(ConsentWebPush)}
}

// Email returns the email address, "" if none.
func (row Row) Email() string {
	if len(row.rec) < recFixed {
		return ""
	}
	return row.rec[recFixed : recFixed+int(row.rec[recEmailLen])]
}

// ID returns the external user id.
func (row Row) ID() string {
	if len(row.rec) < recFixed {
		return ""
	}
	at := recFixed + int(row.rec[recEmailLen])
	return row.rec[at : at+int(row.rec[recIDLen])+1]
}

// Phone returns the E.164 phone number, "" if none.
func (row Row) Phone() string {
	if len(row.rec) < recFixed {
		return ""
	}
	at := recFixed + int(row.rec[recEmailLen]) + int(row.rec[recIDLen]) + 1
	return row.rec[at : at+int(row.rec[recPhoneLen])]
}

// attrsAt returns the offset of the first attribute of a verified record:
// past the locale and time zone references.
func attrsAt(rec string) int {
	_, i := readUvarint(rec, refsAt(rec))
	_, i = readUvarint(rec, i)
	return i
}

// refsAt returns the offset of the locale reference: right after the phone.
func refsAt(rec string) int {
	_ = rec[recPhoneLen] // one bounds check for the three lengths
	return recFixed + int(rec[recEmailLen]) + int(rec[recIDLen]) + 1 + int(rec[recPhoneLen])
}

func (row Row) dictRef(skip int) string {
	if len(row.rec) < recFixed {
		return ""
	}
	v, i := readUvarint(row.rec, refsAt(row.rec))
	if skip == 1 {
		v, _ = readUvarint(row.rec, i)
	}
	if v == 0 {
		return ""
	}
	return row.r.str(v - 1)
}

// Locale returns the BCP 47 locale, "" if none.
func (row Row) Locale() string { return row.dictRef(0) }

// TimeZone returns the IANA time zone name, "" if none.
func (row Row) TimeZone() string { return row.dictRef(1) }

func skipList(b string, i, per int) int {
	n, i := readUvarint(b, i)
	for range int(n) * per {
		i = skipStr(b, i)
	}
	return i
}

func appendList(dst []string, b string, i int) []string {
	n, i := readUvarint(b, i)
	for range n {
		var s string
		s, i = readStr(b, i)
		dst = append(dst, s)
	}
	return dst
}

// APNsTokens appends the row's APNs device tokens (hex) to dst.
func (row Row) APNsTokens(dst []string) []string {
	if b := row.pushRecord(); b != "" {
		return appendList(dst, b, 0)
	}
	return dst
}

// FCMTokens appends the row's FCM registration tokens to dst.
func (row Row) FCMTokens(dst []string) []string {
	if b := row.pushRecord(); b != "" {
		return appendList(dst, b, skipList(b, 0, 1))
	}
	return dst
}

// WebPush appends the row's web push subscriptions to dst.
func (row Row) WebPush(dst []WebPushSubscription) []WebPushSubscription {
	b := row.pushRecord()
	if b == "" {
		return dst
	}
	n, i := readUvarint(b, skipList(b, skipList(b, 0, 1), 1))
	for range n {
		var s WebPushSubscription
		s.Endpoint, i = readStr(b, i)
		s.P256dh, i = readStr(b, i)
		s.Auth, i = readStr(b, i)
		dst = append(dst, s)
	}
	return dst
}

// pushRecord returns the row's push record ("" when it has no push address).
func (row Row) pushRecord() string {
	if row.r == nil {
		return ""
	}
	return row.r.push(row.index())
}

// attrRange returns the offsets in rec of the first attribute and of the
// end of the attributes (the end of the record).
func (row Row) attrRange() (int, int) { return int(row.pos >> 32), len(row.rec) }

// find returns the type and payload offset of attribute id. Attributes are
// sorted by id, so the walk stops at the first id >= the one sought.
func (row Row) find(id AttrID) (typ uint64, at int, ok bool) {
	b := row.rec
	for i, end := row.attrRange(); i < end; {
		tag, j := readUvarint(b, i)
		if got := AttrID(tag >> 3); got >= id {
			return tag & 7, j, got == id
		}
		i = skipValue(b, j, tag&7)
	}
	return 0, 0, false
}

// varintsOf packs, 4 bits per type tag, how many varints a payload of that
// type is: dictionary strings and ints one, times two, bools none (floats
// and inline strings are handled apart).
const varintsOf = 1<<(4*tagDictString) | 1<<(4*tagInt) | 2<<(4*tagTime)

// skipValue returns the offset after a payload of type typ at i.
func skipValue(b string, i int, typ uint64) int {
	switch typ {
	case tagFloat:
		return i + 8
	case tagInlineString:
		n, i := readUvarint(b, i)
		return i + int(n)
	}
	for k := varintsOf >> (4 * (typ & 7)) & 15; k > 0; i++ {
		if b[i] < 0x80 {
			k--
		}
	}
	return i
}

func (row Row) value(typ uint64, i int) Value {
	b := row.rec
	switch typ {
	case tagDictString:
		v, _ := readUvarint(b, i)
		return Value{kind: KindString, s: row.r.str(v)}
	case tagInlineString:
		s, _ := readStr(b, i)
		return Value{kind: KindString, s: s}
	case tagInt:
		v, _ := readUvarint(b, i)
		return Value{kind: KindInt, n: unzigzag(v)}
	case tagFloat:
		return Value{kind: KindFloat, n: int64(le64(b, i))}
	case tagFalse:
		return Value{kind: KindBool}
	case tagTrue:
		return Value{kind: KindBool, n: 1}
	case tagTime:
		s, i := readUvarint(b, i)
		ns, _ := readUvarint(b, i)
		return Value{kind: KindTime, n: unzigzag(s), ns: int32(ns)}
	}
	return Value{}
}

// AttrValue returns attribute id without boxing.
func (row Row) AttrValue(id AttrID) (Value, bool) {
	typ, at, ok := row.find(id)
	if !ok {
		return Value{}, false
	}
	return row.value(typ, at), true
}

// AttrKind returns the type attribute id has on this row (KindNone if absent).
func (row Row) AttrKind(id AttrID) ValueKind {
	v, _ := row.AttrValue(id)
	return v.kind
}

// StringAttr returns attribute id if it is a string on this row. It is the
// template hot path (first_name and the like), so the walk of find is
// written out here: one call per attribute read instead of two.
func (row Row) StringAttr(id AttrID) (string, bool) {
	b := row.rec
	for i, end := row.attrRange(); i < end; {
		tag, j := readUvarint(b, i)
		if got := AttrID(tag >> 3); got >= id {
			switch {
			case got != id:
			case tag&7 == tagDictString:
				v, _ := readUvarint(b, j)
				return row.r.str(v), true
			case tag&7 == tagInlineString:
				s, _ := readStr(b, j)
				return s, true
			}
			return "", false
		}
		i = skipValue(b, j, tag&7)
	}
	return "", false
}

// IntAttr returns attribute id if it is an int on this row.
func (row Row) IntAttr(id AttrID) (int64, bool) {
	typ, at, ok := row.find(id)
	if !ok || typ != tagInt {
		return 0, false
	}
	v, _ := readUvarint(row.rec, at)
	return unzigzag(v), true
}

// FloatAttr returns attribute id if it is a float on this row.
func (row Row) FloatAttr(id AttrID) (float64, bool) {
	typ, at, ok := row.find(id)
	if !ok || typ != tagFloat {
		return 0, false
	}
	return math.Float64frombits(le64(row.rec, at)), true
}

// BoolAttr returns attribute id if it is a bool on this row.
func (row Row) BoolAttr(id AttrID) (bool, bool) {
	typ, _, ok := row.find(id)
	if !ok || (typ != tagTrue && typ != tagFalse) {
		return false, false
	}
	return typ == tagTrue, true
}

// TimeAttr returns attribute id (UTC) if it is a time on this row.
func (row Row) TimeAttr(id AttrID) (time.Time, bool) {
	typ, at, ok := row.find(id)
	if !ok || typ != tagTime {
		return time.Time{}, false
	}
	s, at := readUvarint(row.rec, at)
	ns, _ := readUvarint(row.rec, at)
	return time.Unix(unzigzag(s), int64(ns)).UTC(), true
}

// Attr returns the attribute's value as string, int64, float64, bool or
// time.Time (UTC); ok=false when the row has no such attribute. It boxes;
// hot loops should resolve an AttrID once and use the typed getters.
func (row Row) Attr(name string) (any, bool) {
	if row.r == nil {
		return nil, false
	}
	id, ok := row.r.attrIndex[name]
	if !ok {
		return nil, false
	}
	v, ok := row.AttrValue(id)
	if !ok {
		return nil, false
	}
	return v.Any(), true
}

// Attrs calls fn for each attribute of the row in id order until fn returns
// false.
func (row Row) Attrs(fn func(name string, v Value) bool) {
	b := row.rec
	for i, end := row.attrRange(); i < end; {
		tag, j := readUvarint(b, i)
		if !fn(row.r.attrNames[tag>>3], row.value(tag&7, j)) {
			return
		}
		i = skipValue(b, j, tag&7)
	}
}

// le64 reads a little-endian u64 at b[i:] (float payloads).
func le64(b string, i int) uint64 {
	_ = b[i+7]
	return uint64(b[i]) | uint64(b[i+1])<<8 | uint64(b[i+2])<<16 | uint64(b[i+3])<<24 |
		uint64(b[i+4])<<32 | uint64(b[i+5])<<40 | uint64(b[i+6])<<48 | uint64(b[i+7])<<56
}

// Profile copies the row into p, strings cloned so that p outlives the pin.
// Segments are not filled in: membership lives in the bitmaps (Segment).
func (row Row) Profile(p *Profile) {
	p.Reset()
	clone := strings.Clone
	p.ID, p.Email, p.Phone = clone(row.ID()), clone(row.Email()), clone(row.Phone())
	p.Locale, p.TimeZone = clone(row.Locale()), clone(row.TimeZone())
	p.Consent = row.Consents()
	for _, t := range row.APNsTokens(nil) {
		p.APNs = append(p.APNs, clone(t))
	}
	for _, t := range row.FCMTokens(nil) {
		p.FCM = append(p.FCM, clone(t))
	}
	for _, s := range row.WebPush(nil) {
		p.WebPush = append(p.WebPush, WebPushSubscription{clone(s.Endpoint), clone(s.P256dh), clone(s.Auth)})
	}
	row.Attrs(func(name string, v Value) bool {
		if v.kind == KindString {
			v.s = clone(v.s)
		}
		p.Attributes = append(p.Attributes, Attribute{Name: clone(name), Value: v})
		return true
	})
}

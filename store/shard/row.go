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
	r   *Reader
	rec []byte
	i   uint32
	// Offsets in rec of the id, the attribute count and the APNs count,
	// decoded from the record header by Reader.Row.
	id, attrs, tokens uint32
}

// readUvarint decodes a uvarint of a record that checkRecord already walked.
// The one-byte case (most lengths and references) stays inlined.
func readUvarint(b []byte, i int) (uint64, int) {
	if c := b[i]; c < 0x80 {
		return uint64(c), i + 1
	}
	return readUvarintSlow(b, i)
}

// readUvarintSlow stays out of line: inlined, its loop would bloat every
// field accessor for a case that is rare in practice.
//
//go:noinline
func readUvarintSlow(b []byte, i int) (uint64, int) {
	var v uint64
	var s uint
	for {
		c := b[i]
		i++
		if c < 0x80 {
			return v | uint64(c)<<s, i
		}
		v |= uint64(c&0x7f) << s
		s += 7
	}
}

func readStr(b []byte, i int) (string, int) {
	n, i := readUvarint(b, i)
	return bstr(b[i : i+int(n)]), i + int(n)
}

func skipStr(b []byte, i int) int {
	n, i := readUvarint(b, i)
	return i + int(n)
}

// Index returns the row index (the value segment bitmaps hold).
func (row Row) Index() uint32 { return row.i }

// Key returns the 64-bit user key (XXH64 of the id); rows are sorted by it.
func (row Row) Key() uint64 {
	if row.r == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(row.r.keys[uint64(row.i)*8:])
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

func (row Row) dictRef(skip int) string {
	if len(row.rec) == 0 {
		return ""
	}
	i := row.idAt()
	for range 3 {
		i = skipStr(row.rec, i)
	}
	v, i := readUvarint(row.rec, i)
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

func (row Row) idAt() int { return int(row.id) }

// ID returns the external user id.
func (row Row) ID() string {
	if len(row.rec) == 0 {
		return ""
	}
	s, _ := readStr(row.rec, row.idAt())
	return s
}

// Email returns the email address, "" if none.
func (row Row) Email() string {
	if len(row.rec) == 0 {
		return ""
	}
	s, _ := readStr(row.rec, skipStr(row.rec, row.idAt()))
	return s
}

// Phone returns the E.164 phone number, "" if none.
func (row Row) Phone() string {
	if len(row.rec) == 0 {
		return ""
	}
	s, _ := readStr(row.rec, skipStr(row.rec, skipStr(row.rec, row.idAt())))
	return s
}

func (row Row) tokensAt() int { return int(row.tokens) }

func skipList(b []byte, i, per int) int {
	n, i := readUvarint(b, i)
	for range int(n) * per {
		i = skipStr(b, i)
	}
	return i
}

func appendList(dst []string, b []byte, i int) []string {
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
	if len(row.rec) == 0 {
		return dst
	}
	return appendList(dst, row.rec, row.tokensAt())
}

// FCMTokens appends the row's FCM registration tokens to dst.
func (row Row) FCMTokens(dst []string) []string {
	if len(row.rec) == 0 {
		return dst
	}
	return appendList(dst, row.rec, skipList(row.rec, row.tokensAt(), 1))
}

// WebPush appends the row's web push subscriptions to dst.
func (row Row) WebPush(dst []WebPushSubscription) []WebPushSubscription {
	if len(row.rec) == 0 {
		return dst
	}
	n, i := readUvarint(row.rec, skipList(row.rec, skipList(row.rec, row.tokensAt(), 1), 1))
	for range n {
		var s WebPushSubscription
		s.Endpoint, i = readStr(row.rec, i)
		s.P256dh, i = readStr(row.rec, i)
		s.Auth, i = readStr(row.rec, i)
		dst = append(dst, s)
	}
	return dst
}

func (row Row) attrsAt() int { return int(row.attrs) }

// find returns the tag and payload offset of attribute id.
func (row Row) find(id AttrID) (tag uint64, at int, ok bool) {
	if len(row.rec) == 0 {
		return 0, 0, false
	}
	b := row.rec
	n, i := readUvarint(b, row.attrsAt())
	for range n {
		tag, i = readUvarint(b, i)
		switch got := AttrID(tag >> 3); {
		case got == id:
			return tag & 7, i, true
		case got > id: // attributes are sorted by id
			return 0, 0, false
		}
		i = skipValue(b, i, tag&7)
	}
	return 0, 0, false
}

func skipValue(b []byte, i int, typ uint64) int {
	switch typ {
	case tagDictString, tagInt:
		_, i = readUvarint(b, i)
	case tagInlineString:
		i = skipStr(b, i)
	case tagFloat:
		i += 8
	case tagTime:
		_, i = readUvarint(b, i)
		_, i = readUvarint(b, i)
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
		return Value{kind: KindFloat, n: int64(binary.LittleEndian.Uint64(b[i:]))}
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

// StringAttr returns attribute id if it is a string on this row.
func (row Row) StringAttr(id AttrID) (string, bool) {
	typ, at, ok := row.find(id)
	switch {
	case !ok:
		return "", false
	case typ == tagDictString:
		v, _ := readUvarint(row.rec, at)
		return row.r.str(v), true
	case typ == tagInlineString:
		s, _ := readStr(row.rec, at)
		return s, true
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
	return math.Float64frombits(binary.LittleEndian.Uint64(row.rec[at:])), true
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
	if len(row.rec) == 0 {
		return
	}
	b := row.rec
	n, i := readUvarint(b, row.attrsAt())
	for range n {
		var tag uint64
		tag, i = readUvarint(b, i)
		if !fn(row.r.attrNames[tag>>3], row.value(tag&7, i)) {
			return
		}
		i = skipValue(b, i, tag&7)
	}
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

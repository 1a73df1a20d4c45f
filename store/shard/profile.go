package shard

import (
	"crypto/ecdh"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Consent is what a profile recorded for one channel. The zero value means
// nothing was recorded, which policies treat differently from a refusal.
type Consent uint8

const (
	ConsentUnknown Consent = 0
	ConsentDenied  Consent = 1
	ConsentGranted Consent = 2
)

func (c Consent) String() string {
	switch c {
	case ConsentUnknown:
		return "unknown"
	case ConsentDenied:
		return "denied"
	case ConsentGranted:
		return "granted"
	}
	return fmt.Sprintf("Consent(%d)", uint8(c))
}

// ConsentOf maps a recorded boolean to Consent.
func ConsentOf(granted bool) Consent {
	if granted {
		return ConsentGranted
	}
	return ConsentDenied
}

// Channel consent slots, in the bit order of the record's consent byte.
type ConsentChannel uint8

const (
	ConsentEmail ConsentChannel = iota
	ConsentSMS
	ConsentPush
	ConsentWebPush
)

// Consents holds the per-channel consent of one profile.
type Consents struct {
	Email, SMS, Push, WebPush Consent
}

func (c Consents) byte() byte {
	return byte(c.Email) | byte(c.SMS)<<2 | byte(c.Push)<<4 | byte(c.WebPush)<<6
}

// WebPushSubscription is one browser subscription (RFC 8030 endpoint and the
// RFC 8291 keys, base64url as browsers report them).
type WebPushSubscription struct {
	Endpoint string
	P256dh   string
	Auth     string
}

// ValueKind is the type of an attribute value.
type ValueKind uint8

const (
	KindNone ValueKind = iota
	KindString
	KindInt
	KindFloat
	KindBool
	KindTime
)

func (k ValueKind) String() string {
	return [...]string{"none", "string", "int", "float", "bool", "time"}[min(int(k), 5)]
}

// Value is a typed attribute value; build one with StringValue, IntValue,
// FloatValue, BoolValue or TimeValue.
type Value struct {
	kind ValueKind
	s    string
	n    int64 // int; float bits; bool 0/1; time seconds
	ns   int32 // time nanoseconds
}

func StringValue(s string) Value { return Value{kind: KindString, s: s} }
func IntValue(i int64) Value     { return Value{kind: KindInt, n: i} }
func FloatValue(f float64) Value { return Value{kind: KindFloat, n: int64(math.Float64bits(f))} }
func TimeValue(t time.Time) Value {
	return Value{kind: KindTime, n: t.Unix(), ns: int32(t.Nanosecond())}
}
func BoolValue(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.n = 1
	}
	return v
}

func (v Value) Kind() ValueKind { return v.kind }

// Any returns the value as string, int64, float64, bool or time.Time (UTC).
func (v Value) Any() any {
	switch v.kind {
	case KindString:
		return v.s
	case KindInt:
		return v.n
	case KindFloat:
		return math.Float64frombits(uint64(v.n))
	case KindBool:
		return v.n != 0
	case KindTime:
		return time.Unix(v.n, int64(v.ns)).UTC()
	}
	return nil
}

// Attribute is one named value of a profile.
type Attribute struct {
	Name  string
	Value Value
}

// Profile is one input row for the Writer. Only ID is required.
type Profile struct {
	ID         string
	Email      string
	Phone      string
	APNs       []string
	FCM        []string
	WebPush    []WebPushSubscription
	Locale     string
	TimeZone   string
	Consent    Consents
	Attributes []Attribute
	Segments   []string
}

// Reset clears p for reuse, keeping its slices' capacity.
func (p *Profile) Reset() {
	*p = Profile{
		APNs:       p.APNs[:0],
		FCM:        p.FCM[:0],
		WebPush:    p.WebPush[:0],
		Attributes: p.Attributes[:0],
		Segments:   p.Segments[:0],
	}
}

// SetAttr sets or replaces an attribute.
func (p *Profile) SetAttr(name string, v Value) {
	for i := range p.Attributes {
		if p.Attributes[i].Name == name {
			p.Attributes[i].Value = v
			return
		}
	}
	p.Attributes = append(p.Attributes, Attribute{Name: name, Value: v})
}

// Validate reports the first field of p that a delivery could not use. Time
// zones are checked by the Writer (it caches the zone database lookups).
func (p *Profile) Validate() error {
	if p.ID == "" {
		return errors.New("id: required")
	}
	if err := checkText(p.ID, 256); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if p.Email != "" {
		if err := checkEmail(p.Email); err != nil {
			return fmt.Errorf("email %q: %w", p.Email, err)
		}
	}
	if p.Phone != "" && !isE164(p.Phone) {
		return fmt.Errorf("phone %q: not E.164 (+ then 2-15 digits)", p.Phone)
	}
	for i, t := range p.APNs {
		if !isHexToken(t) {
			return fmt.Errorf("apns[%d]: not a hex device token (64-200 hex digits)", i)
		}
	}
	for i, t := range p.FCM {
		if t == "" || len(t) > 4096 || strings.ContainsAny(t, " \t\r\n\"") {
			return fmt.Errorf("fcm[%d]: empty, too long or containing whitespace", i)
		}
	}
	for i, s := range p.WebPush {
		if err := checkWebPush(s); err != nil {
			return fmt.Errorf("webpush[%d]: %w", i, err)
		}
	}
	if p.Locale != "" && !isLocale(p.Locale) {
		return fmt.Errorf("locale %q: not a BCP 47 tag", p.Locale)
	}
	for _, c := range [...]Consent{p.Consent.Email, p.Consent.SMS, p.Consent.Push, p.Consent.WebPush} {
		if c > ConsentGranted {
			return fmt.Errorf("consent: invalid value %d", c)
		}
	}
	for i, a := range p.Attributes {
		if err := checkName(a.Name); err != nil {
			return fmt.Errorf("attribute %q: %w", a.Name, err)
		}
		if a.Value.kind < KindString || a.Value.kind > KindTime {
			return fmt.Errorf("attribute %q: no value", a.Name)
		}
		if a.Value.kind == KindString && len(a.Value.s) > maxStringLen {
			return fmt.Errorf("attribute %q: string longer than %d bytes", a.Name, maxStringLen)
		}
		if a.Value.kind == KindFloat {
			if f := math.Float64frombits(uint64(a.Value.n)); math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("attribute %q: float is not finite", a.Name)
			}
		}
		if a.Value.kind == KindString && !utf8.ValidString(a.Value.s) {
			return fmt.Errorf("attribute %q: invalid UTF-8", a.Name)
		}
		for _, b := range p.Attributes[:i] {
			if b.Name == a.Name {
				return fmt.Errorf("attribute %q: given twice", a.Name)
			}
		}
	}
	for i, s := range p.Segments {
		if err := checkName(s); err != nil {
			return fmt.Errorf("segment %q: %w", s, err)
		}
		for _, o := range p.Segments[:i] {
			if o == s {
				return fmt.Errorf("segment %q: listed twice", s)
			}
		}
	}
	return nil
}

func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errors.New("invalid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

func checkName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	return checkText(s, maxNameLen)
}

func checkEmail(s string) error {
	if err := checkText(s, 254); err != nil {
		return err
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " <>,;\"") || !strings.Contains(s[at+1:], ".") {
		return errors.New("not an address of the form local@domain.tld")
	}
	return nil
}

func isE164(s string) bool {
	if len(s) < 3 || len(s) > 16 || s[0] != '+' || s[1] == '0' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHexToken(s string) bool {
	if len(s) < 64 || len(s) > 200 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isLocale(s string) bool {
	if len(s) > 35 {
		return false
	}
	for i, part := range strings.Split(s, "-") {
		if len(part) == 0 || len(part) > 8 || (i == 0 && (len(part) < 2 || len(part) > 3)) {
			return false
		}
		for j := 0; j < len(part); j++ {
			c := part[j] | 0x20
			if !('a' <= c && c <= 'z' || '0' <= part[j] && part[j] <= '9' && i > 0) {
				return false
			}
		}
	}
	return true
}

func checkWebPush(s WebPushSubscription) error {
	u, err := url.Parse(s.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("endpoint: not an http(s) URL")
	}
	if len(s.Endpoint) > 2048 {
		return errors.New("endpoint: longer than 2048 bytes")
	}
	k, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s.P256dh, "="))
	if err != nil || len(k) != 65 || k[0] != 4 {
		return errors.New("p256dh: not a base64url uncompressed P-256 point (65 bytes)")
	}
	// Length and prefix are not enough: a key off the curve passes them and
	// then fails every send (the ECDH of RFC 8291 refuses it).
	if _, err := ecdh.P256().NewPublicKey(k); err != nil {
		return errors.New("p256dh: not a point on P-256")
	}
	a, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s.Auth, "="))
	if err != nil || len(a) != 16 {
		return errors.New("auth: not a base64url 16-byte secret")
	}
	return nil
}

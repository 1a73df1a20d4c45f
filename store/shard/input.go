package shard

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Format names an input format for ReadProfiles.
type Format string

const (
	FormatJSONL Format = "jsonl"
	FormatCSV   Format = "csv"
)

// maxLine bounds one input line so a file without newlines cannot exhaust
// memory.
const maxLine = 16 << 20

// LineError is a bad input line: the build fails on it rather than dropping
// the profile.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ReadProfiles decodes profiles from r and calls fn for each, with its line
// number. The *Profile is reused between calls. The first bad line stops the
// read with a *LineError.
func ReadProfiles(r io.Reader, format Format, fn func(line int, p *Profile) error) error {
	switch format {
	case FormatJSONL:
		return readJSONL(r, fn)
	case FormatCSV:
		return readCSV(r, fn)
	}
	return fmt.Errorf("read profiles: unknown format %q (jsonl or csv)", format)
}

type jsonConsent struct {
	Email   *bool `json:"email"`
	SMS     *bool `json:"sms"`
	Push    *bool `json:"push"`
	WebPush *bool `json:"webpush"`
}

type jsonWebPush struct {
	Endpoint string `json:"endpoint"`
	P256dh   string `json:"p256dh"`
	Auth     string `json:"auth"`
}

type jsonProfile struct {
	ID         *string        `json:"id"`
	Email      string         `json:"email"`
	Phone      string         `json:"phone"`
	APNs       []string       `json:"apns"`
	FCM        []string       `json:"fcm"`
	WebPush    []jsonWebPush  `json:"webpush"`
	Locale     string         `json:"locale"`
	TimeZone   string         `json:"timezone"`
	Consent    *jsonConsent   `json:"consent"`
	Attributes map[string]any `json:"attributes"`
	Segments   []string       `json:"segments"`
}

func consentPtr(b *bool) Consent {
	if b == nil {
		return ConsentUnknown
	}
	return ConsentOf(*b)
}

// DecodeJSONProfile decodes one JSON Lines profile into p. Unknown fields are
// errors (a typo must not silently drop data).
func DecodeJSONProfile(line []byte, p *Profile) error {
	var jp jsonProfile
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&jp); err != nil {
		return fmt.Errorf("decode profile: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decode profile: trailing data after the JSON object")
	}
	if jp.ID == nil {
		return errors.New(`decode profile: missing "id"`)
	}
	p.Reset()
	p.ID, p.Email, p.Phone = *jp.ID, jp.Email, jp.Phone
	p.APNs = append(p.APNs, jp.APNs...)
	p.FCM = append(p.FCM, jp.FCM...)
	for _, w := range jp.WebPush {
		p.WebPush = append(p.WebPush, WebPushSubscription(w))
	}
	p.Locale, p.TimeZone = jp.Locale, jp.TimeZone
	if c := jp.Consent; c != nil {
		p.Consent = Consents{consentPtr(c.Email), consentPtr(c.SMS), consentPtr(c.Push), consentPtr(c.WebPush)}
	}
	names := make([]string, 0, len(jp.Attributes))
	for n := range jp.Attributes {
		names = append(names, n)
	}
	// Sorted so that attribute ids, and hence the file, are reproducible.
	slices.Sort(names)
	for _, n := range names {
		v, ok, err := jsonValue(jp.Attributes[n])
		if err != nil {
			return fmt.Errorf("attribute %q: %w", n, err)
		}
		if ok {
			p.Attributes = append(p.Attributes, Attribute{Name: n, Value: v})
		}
	}
	p.Segments = append(p.Segments, jp.Segments...)
	return nil
}

func jsonValue(v any) (Value, bool, error) {
	switch x := v.(type) {
	case nil:
		return Value{}, false, nil
	case bool:
		return BoolValue(x), true, nil
	case string:
		if t, ok := parseTime(x); ok {
			return TimeValue(t), true, nil
		}
		return StringValue(x), true, nil
	case json.Number:
		return parseNumber(string(x))
	}
	return Value{}, false, fmt.Errorf("unsupported JSON type %T (use string, number, bool or an RFC 3339 time string)", v)
}

func parseNumber(s string) (Value, bool, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return IntValue(i), true, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return Value{}, false, fmt.Errorf("number %q out of range", s)
	}
	return FloatValue(f), true, nil
}

// parseTime accepts RFC 3339 date-times ("2024-01-02T03:04:05Z", with
// optional fraction and offset); such strings are stored as times.
func parseTime(s string) (time.Time, bool) {
	if len(s) < 20 || len(s) > 35 || s[4] != '-' || (s[10] != 'T' && s[10] != 't') {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// utf8BOM starts many spreadsheet exports; it is an encoding marker, not data.
var utf8BOM = []byte("\xef\xbb\xbf")

// invalidUTF8At is the offset of the first byte of b that is not valid UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

func readJSONL(r io.Reader, fn func(int, *Profile) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var p Profile
	var long []byte
	for line := 1; ; line++ {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], b...)
			for err == bufio.ErrBufferFull && len(long) <= maxLine {
				b, err = br.ReadSlice('\n')
				long = append(long, b...)
			}
			if len(long) > maxLine {
				return &LineError{Line: line, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
			}
			b = long
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read profiles: %w", err)
		}
		if line == 1 {
			b = bytes.TrimPrefix(b, utf8BOM)
		}
		if t := bytes.TrimSpace(b); len(t) > 0 {
			// encoding/json turns invalid UTF-8 into U+FFFD silently; the CSV
			// reader refuses it, and so does the spec: say where it is.
			if !utf8.Valid(t) {
				return &LineError{Line: line, Err: fmt.Errorf("not valid UTF-8 at byte %d", invalidUTF8At(t)+1)}
			}
			if derr := DecodeJSONProfile(t, &p); derr != nil {
				return &LineError{Line: line, Err: derr}
			}
			if ferr := fn(line, &p); ferr != nil {
				return &LineError{Line: line, Err: ferr}
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// CSV columns. Multi-valued cells are ';'-separated; a web push cell holds
// endpoint|p256dh|auth per subscription; consent cells are true, false or
// empty (not recorded). Attribute columns are attr:NAME (type inferred) or
// attr:NAME:TYPE with TYPE one of string, int, float, bool, time.
var csvFixed = [...]string{"id", "email", "phone", "apns", "fcm", "webpush", "locale", "timezone",
	"consent_email", "consent_sms", "consent_push", "consent_webpush", "segments"}

// CSVColumns returns the CSV header for the given attribute columns
// ("NAME" or "NAME:TYPE").
func CSVColumns(attrs ...string) []string {
	cols := append([]string(nil), csvFixed[:]...)
	for _, a := range attrs {
		cols = append(cols, "attr:"+a)
	}
	return cols
}

type csvAttr struct {
	col  int
	name string
	kind ValueKind // KindNone: infer
}

func readCSV(r io.Reader, fn func(int, *Profile) error) error {
	br := bufio.NewReaderSize(r, 1<<20)
	if b, err := br.Peek(len(utf8BOM)); err == nil && bytes.Equal(b, utf8BOM) {
		_, _ = br.Discard(len(utf8BOM))
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return &LineError{Line: 1, Err: fmt.Errorf("read CSV header: %w", err)}
	}
	fixed := map[string]int{}
	var attrs []csvAttr
	for i, h := range head {
		h = strings.TrimSpace(h)
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		if name, ok := strings.CutPrefix(h, "attr:"); ok {
			a := csvAttr{col: i, name: name}
			if n, typ, ok := strings.Cut(name, ":"); ok {
				a.name = n
				switch typ {
				case "string":
					a.kind = KindString
				case "int":
					a.kind = KindInt
				case "float":
					a.kind = KindFloat
				case "bool":
					a.kind = KindBool
				case "time":
					a.kind = KindTime
				default:
					return &LineError{Line: 1, Err: fmt.Errorf("column %q: unknown type %q (string, int, float, bool, time)", h, typ)}
				}
			}
			if err := checkName(a.name); err != nil {
				return &LineError{Line: 1, Err: fmt.Errorf("column %q: %w", h, err)}
			}
			attrs = append(attrs, a)
			continue
		}
		if !slices.Contains(csvFixed[:], h) {
			return &LineError{Line: 1, Err: fmt.Errorf("unknown column %q (known: %s, attr:NAME[:TYPE])", h, strings.Join(csvFixed[:], ", "))}
		}
		if _, dup := fixed[h]; dup {
			return &LineError{Line: 1, Err: fmt.Errorf("column %q given twice", h)}
		}
		fixed[h] = i
	}
	if _, ok := fixed["id"]; !ok {
		return &LineError{Line: 1, Err: errors.New(`missing required column "id"`)}
	}
	var p Profile
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			// FieldPos panics unless Read succeeded: the error is checked first.
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return &LineError{Line: pe.StartLine, Err: pe.Err}
			}
			return fmt.Errorf("read profiles: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if err := csvProfile(rec, fixed, attrs, &p); err != nil {
			return &LineError{Line: line, Err: err}
		}
		if err := fn(line, &p); err != nil {
			return &LineError{Line: line, Err: err}
		}
	}
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ";")
}

func csvProfile(rec []string, fixed map[string]int, attrs []csvAttr, p *Profile) error {
	p.Reset()
	get := func(col string) string {
		if i, ok := fixed[col]; ok {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	p.ID, p.Email, p.Phone = get("id"), get("email"), get("phone")
	if p.ID == "" {
		return errors.New(`empty "id"`)
	}
	p.APNs = append(p.APNs, splitList(get("apns"))...)
	p.FCM = append(p.FCM, splitList(get("fcm"))...)
	for i, s := range splitList(get("webpush")) {
		parts := strings.Split(s, "|")
		if len(parts) != 3 {
			// The cell is not echoed: a push endpoint is a capability URL.
			return fmt.Errorf("webpush[%d]: want endpoint|p256dh|auth", i)
		}
		p.WebPush = append(p.WebPush, WebPushSubscription{parts[0], parts[1], parts[2]})
	}
	p.Locale, p.TimeZone = get("locale"), get("timezone")
	for _, c := range []struct {
		col string
		dst *Consent
	}{{"consent_email", &p.Consent.Email}, {"consent_sms", &p.Consent.SMS}, {"consent_push", &p.Consent.Push}, {"consent_webpush", &p.Consent.WebPush}} {
		switch v := get(c.col); v {
		case "":
		case "true":
			*c.dst = ConsentGranted
		case "false":
			*c.dst = ConsentDenied
		default:
			return fmt.Errorf("%s %q: want true, false or empty", c.col, v)
		}
	}
	p.Segments = append(p.Segments, splitList(get("segments"))...)
	for _, a := range attrs {
		cell := rec[a.col]
		if cell == "" {
			continue
		}
		v, err := csvValue(cell, a.kind)
		if err != nil {
			return fmt.Errorf("attribute %q: %w", a.name, err)
		}
		p.Attributes = append(p.Attributes, Attribute{Name: a.name, Value: v})
	}
	return nil
}

func csvValue(s string, kind ValueKind) (Value, error) {
	switch kind {
	case KindString:
		return StringValue(s), nil
	case KindInt:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return Value{}, fmt.Errorf("%q is not an int", s)
		}
		return IntValue(i), nil
	case KindFloat:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return Value{}, fmt.Errorf("%q is not a finite float", s)
		}
		return FloatValue(f), nil
	case KindBool:
		switch s {
		case "true":
			return BoolValue(true), nil
		case "false":
			return BoolValue(false), nil
		}
		return Value{}, fmt.Errorf("%q is not true or false", s)
	case KindTime:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Value{}, fmt.Errorf("%q is not an RFC 3339 time", s)
		}
		return TimeValue(t), nil
	}
	// Inference: int, float, bool, RFC 3339 time, else string.
	if v, ok, err := parseNumber(s); err == nil && ok && (s[0] == '-' || s[0] == '+' || s[0] == '.' || ('0' <= s[0] && s[0] <= '9')) {
		return v, nil
	}
	if s == "true" || s == "false" {
		return BoolValue(s == "true"), nil
	}
	if t, ok := parseTime(s); ok {
		return TimeValue(t), nil
	}
	return StringValue(s), nil
}

// AppendJSON appends p as one JSON Lines object (no newline) in the shape
// DecodeJSONProfile reads. Times are written in RFC 3339 UTC, floats always
// with a fraction or exponent so they read back as floats.
func AppendJSON(b []byte, p *Profile) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, p.ID)
	field := func(name, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = appendJSONString(b, v)
		}
	}
	list := func(name string, vs []string) {
		if len(vs) == 0 {
			return
		}
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":[`...)
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
		}
		b = append(b, ']')
	}
	field("email", p.Email)
	field("phone", p.Phone)
	list("apns", p.APNs)
	list("fcm", p.FCM)
	if len(p.WebPush) > 0 {
		b = append(b, `,"webpush":[`...)
		for i, s := range p.WebPush {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"endpoint":`...)
			b = appendJSONString(b, s.Endpoint)
			b = append(b, `,"p256dh":`...)
			b = appendJSONString(b, s.P256dh)
			b = append(b, `,"auth":`...)
			b = appendJSONString(b, s.Auth)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	field("locale", p.Locale)
	field("timezone", p.TimeZone)
	if p.Consent != (Consents{}) {
		b = append(b, `,"consent":{`...)
		first := true
		for _, c := range []struct {
			name string
			v    Consent
		}{{"email", p.Consent.Email}, {"sms", p.Consent.SMS}, {"push", p.Consent.Push}, {"webpush", p.Consent.WebPush}} {
			if c.v == ConsentUnknown {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, '"')
			b = append(b, c.name...)
			b = append(b, `":`...)
			b = strconv.AppendBool(b, c.v == ConsentGranted)
		}
		b = append(b, '}')
	}
	if len(p.Attributes) > 0 {
		b = append(b, `,"attributes":{`...)
		for i, a := range p.Attributes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a.Name)
			b = append(b, ':')
			b = appendJSONValue(b, a.Value)
		}
		b = append(b, '}')
	}
	list("segments", p.Segments)
	return append(b, '}')
}

func appendJSONValue(b []byte, v Value) []byte {
	switch v.kind {
	case KindString:
		return appendJSONString(b, v.s)
	case KindInt:
		return strconv.AppendInt(b, v.n, 10)
	case KindFloat:
		f := math.Float64frombits(uint64(v.n))
		start := len(b)
		b = strconv.AppendFloat(b, f, 'g', -1, 64)
		if !bytes.ContainsAny(b[start:], ".eE") {
			b = append(b, ".0"...)
		}
		return b
	case KindBool:
		return strconv.AppendBool(b, v.n != 0)
	case KindTime:
		b = append(b, '"')
		b = time.Unix(v.n, int64(v.ns)).UTC().AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	}
	return append(b, "null"...)
}

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// CSVRecord returns p as a CSV record for the header CSVColumns(attrs...);
// attrs are "NAME" or "NAME:TYPE" as in the header.
func CSVRecord(p *Profile, attrs []string) []string {
	consent := func(c Consent) string {
		switch c {
		case ConsentGranted:
			return "true"
		case ConsentDenied:
			return "false"
		}
		return ""
	}
	var wp []string
	for _, s := range p.WebPush {
		wp = append(wp, s.Endpoint+"|"+s.P256dh+"|"+s.Auth)
	}
	rec := []string{p.ID, p.Email, p.Phone, strings.Join(p.APNs, ";"), strings.Join(p.FCM, ";"),
		strings.Join(wp, ";"), p.Locale, p.TimeZone, consent(p.Consent.Email), consent(p.Consent.SMS),
		consent(p.Consent.Push), consent(p.Consent.WebPush), strings.Join(p.Segments, ";")}
	for _, a := range attrs {
		name, _, _ := strings.Cut(a, ":")
		cell := ""
		for _, at := range p.Attributes {
			if at.Name == name {
				cell = string(strings.Trim(string(appendJSONValue(nil, at.Value)), `"`))
				if at.Value.kind == KindString {
					cell = at.Value.s
				}
			}
		}
		rec = append(rec, cell)
	}
	return rec
}

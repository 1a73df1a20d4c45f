package apns

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/notifyd/notifyd/channels"
)

// Payload limits from Apple's "Sending notification requests to APNs".
const (
	maxPayload     = 4096
	maxVoIPPayload = 5120
	maxCollapseID  = 64
)

var (
	errDataNotObject = errors.New("push data is not a JSON object")
	errDataHasAPS    = errors.New(`push data must not set the reserved "aps" key`)
)

// appendPayload appends the APNs JSON payload for p to dst. It is an
// append-based encoder on purpose: it runs once per push on the hot path,
// where building a map[string]any and calling json.Marshal costs several
// allocations and microseconds.
//
// Data's top-level members are spliced into the payload's top level; DeepLink
// and ImageURL travel as the custom keys "link" and "image" (unless Data sets
// them) with mutable-content so a notification service extension can act.
func appendPayload(dst []byte, p *channels.Push, pushType string) ([]byte, error) {
	inner, err := dataMembers(p.Data)
	if err != nil {
		return dst, err
	}
	background := pushType == "background"
	dst = append(dst, `{"aps":{`...)
	n := len(dst)
	if p.Title != "" || p.Body != "" {
		dst = append(dst, `"alert":{`...)
		m := len(dst)
		if p.Title != "" {
			dst = append(dst, `"title":`...)
			dst = appendString(dst, p.Title)
		}
		if p.Body != "" {
			if len(dst) > m {
				dst = append(dst, ',')
			}
			dst = append(dst, `"body":`...)
			dst = appendString(dst, p.Body)
		}
		dst = append(dst, '}')
	}
	comma := func() {
		if len(dst) > n {
			dst = append(dst, ',')
		}
	}
	if p.Badge != nil {
		comma()
		dst = append(dst, `"badge":`...)
		dst = strconv.AppendInt(dst, int64(*p.Badge), 10)
	}
	if p.Sound != "" {
		comma()
		dst = append(dst, `"sound":`...)
		dst = appendString(dst, p.Sound)
	}
	if p.ThreadID != "" {
		comma()
		dst = append(dst, `"thread-id":`...)
		dst = appendString(dst, p.ThreadID)
	}
	if background {
		comma()
		dst = append(dst, `"content-available":1`...)
	}
	if p.ImageURL != "" && !background {
		comma()
		dst = append(dst, `"mutable-content":1`...)
	}
	dst = append(dst, '}')
	if p.DeepLink != "" && !hasTopLevelKey(inner, "link") {
		dst = append(dst, `,"link":`...)
		dst = appendString(dst, p.DeepLink)
	}
	if p.ImageURL != "" && !hasTopLevelKey(inner, "image") {
		dst = append(dst, `,"image":`...)
		dst = appendString(dst, p.ImageURL)
	}
	if len(inner) > 0 {
		dst = append(dst, ',')
		dst = append(dst, inner...)
	}
	return append(dst, '}'), nil
}

// dataMembers validates Data as a JSON object without "aps" and returns the
// text between its braces (trimmed), ready to splice.
func dataMembers(data json.RawMessage) ([]byte, error) {
	d := trimSpace(data)
	if len(d) == 0 || string(d) == "null" {
		return nil, nil
	}
	if d[0] != '{' || !json.Valid(d) {
		return nil, errDataNotObject
	}
	inner := trimSpace(d[1 : len(d)-1])
	if hasTopLevelKey(inner, "aps") {
		return nil, errDataHasAPS
	}
	return inner, nil
}

// hasTopLevelKey reports whether the members of a valid JSON object (the text
// between its braces) include key.
func hasTopLevelKey(members []byte, key string) bool {
	depth := 0
	expectKey := true
	for i := 0; i < len(members); i++ {
		switch c := members[i]; c {
		case '"':
			j := i + 1
			for j < len(members) && members[j] != '"' {
				if members[j] == '\\' {
					j++
				}
				j++
			}
			if depth == 0 && expectKey && keyEquals(members[i:min(j+1, len(members))], key) {
				return true
			}
			i = j
			expectKey = false
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			if depth == 0 {
				expectKey = true
			}
		}
	}
	return false
}

// keyEquals compares a quoted JSON key with key, decoding escapes (rare) so
// "ap\u0073" cannot smuggle in a second "aps".
func keyEquals(quoted []byte, key string) bool {
	raw := quoted[1 : len(quoted)-1]
	if !bytes.ContainsRune(raw, '\\') {
		return string(raw) == key
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == key
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json it replaces
// invalid UTF-8 with U+FFFD and escapes U+2028/U+2029; unlike it, it leaves
// <, > and & alone (APNs payloads are not embedded in HTML).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if i += plainRun(s[i:]); i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// plainRun returns how many leading bytes of s are printable ASCII other
// than '"' and '\\', which JSON takes as they are. It tests eight bytes at a
// time (push titles and bodies are mostly such runs); that made appendString
// about three times faster on them.
func plainRun(s string) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// With no byte >= 0x80 (x&highs), a byte's high bit is set after
		// subtracting only if it was below 0x20, or was '"' or '\\' (zero
		// after the XOR).
		if ((x-ones*0x20)|(x^ones*'"'-ones)|(x^ones*'\\'-ones)|x)&highs != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			break
		}
	}
	return i
}

// appendUUID appends a name-based UUID (RFC 9562 version 5 layout over a
// SHA-1 digest) so every re-send of one logical message carries the same
// apns-id, and APNs/our logs can tie attempts together.
func appendUUID(dst []byte, sum [20]byte) []byte {
	sum[6] = (sum[6] & 0x0f) | 0x50
	sum[8] = (sum[8] & 0x3f) | 0x80
	for i := 0; i < 16; i++ {
		switch i {
		case 4, 6, 8, 10:
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[sum[i]>>4], hexDigits[sum[i]&0xf])
	}
	return dst
}

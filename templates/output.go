package templates

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"
)

// outMode is how an interpolation is written into its field.
type outMode int

const (
	modePlain      outMode = iota // push/SMS text: verbatim
	modeLine                      // subjects, addresses, headers: line breaks become spaces
	modeHTML                      // email HTML: HTML-escaped unless marked safe
	modeJSONString                // inside a JSON string literal: escaped string contents
	modeJSONValue                 // where a JSON value goes: a complete JSON value
)

// Values filters mark so the output stage knows they need no further escaping.
type (
	safeHTML string // output of escape: already HTML-escaped
	rawText  string // output of raw: the author opts out of HTML escaping
	jsonText string // output of json: a complete JSON value
)

// liquidTimeFormat is how the liquid engine prints a bare time value.
const liquidTimeFormat = "2006-01-02 15:04:05 -0700"

// appendString appends v's Liquid text form (what {{ v }} prints without escaping).
func appendString(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return dst
	case string:
		return append(dst, v...)
	case safeHTML:
		return append(dst, v...)
	case rawText:
		return append(dst, v...)
	case jsonText:
		return append(dst, v...)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case float64:
		return appendFloat(dst, v)
	case bool:
		return strconv.AppendBool(dst, v)
	case time.Time:
		return v.AppendFormat(dst, liquidTimeFormat)
	case []byte:
		return append(dst, v...)
	case []any:
		for _, e := range v {
			dst = appendString(dst, e)
		}
		return dst
	case []string:
		for _, e := range v {
			dst = append(dst, e...)
		}
		return dst
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			dst = appendString(dst, rv.Index(i).Interface())
		}
		return dst
	}
	return fmt.Append(dst, v)
}

// appendFloat prints 1234568 rather than Go's 1.234568e+06: arithmetic
// filters return floats, and marketers print their results.
func appendFloat(dst []byte, f float64) []byte {
	if a := math.Abs(f); a == 0 || (a >= 1e-6 && a < 1e21) {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// toString is a filter's view of its input as text.
func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	case safeHTML:
		return string(v)
	case rawText:
		return string(v)
	case jsonText:
		return string(v)
	}
	return string(appendString(nil, v))
}

// emit writes one interpolation's value in mode.
func emit(dst []byte, v any, mode outMode) ([]byte, error) {
	switch mode {
	case modePlain:
		return appendString(dst, v), nil
	case modeLine:
		start := len(dst)
		dst = appendString(dst, v)
		for i := start; i < len(dst); i++ {
			if dst[i] == '\r' || dst[i] == '\n' {
				dst[i] = ' '
			}
		}
		return dst, nil
	case modeHTML:
		switch v := v.(type) {
		case safeHTML:
			return append(dst, v...), nil
		case rawText:
			return append(dst, v...), nil
		case string:
			return appendHTMLEscaped(dst, v), nil
		case int, int64, float64, bool, nil:
			return appendString(dst, v), nil
		}
		return appendHTMLEscaped(dst, toString(v)), nil
	case modeJSONString:
		switch v := v.(type) {
		case string:
			return appendJSONEscaped(dst, v), nil
		case int, int64, float64, bool, nil:
			return appendString(dst, v), nil
		}
		return appendJSONEscaped(dst, toString(v)), nil
	case modeJSONValue:
		return appendJSONValue(dst, v)
	}
	return dst, fmt.Errorf("emit value: unknown output mode %d", mode)
}

func appendJSONValue(dst []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		dst = append(dst, '"')
		return append(appendJSONEscaped(dst, v), '"'), nil
	case jsonText:
		return append(dst, v...), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return append(dst, "null"...), nil
		}
		return strconv.AppendFloat(dst, v, 'g', -1, 64), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case safeHTML, rawText, time.Time:
		dst = append(dst, '"')
		return append(appendJSONEscaped(dst, toString(v)), '"'), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("encode JSON value: %w", err)
	}
	return append(dst, b...), nil
}

const hexDigits = "0123456789abcdef"

// appendJSONEscaped writes s as JSON string contents; invalid UTF-8 becomes
// U+FFFD as encoding/json does, so a hostile profile value cannot break the
// document.
func appendJSONEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}

// appendHTMLEscaped matches html.EscapeString without allocating.
func appendHTMLEscaped(dst []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '\'':
			esc = "&#39;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '"':
			esc = "&#34;"
		default:
			continue
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		last = i + 1
	}
	return append(dst, s[last:]...)
}

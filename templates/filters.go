package templates

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"math"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/osteele/liquid/values"
	"github.com/osteele/tuesday"
)

// maxValueBytes caps any string a filter builds. Filters such as replace can
// grow text polynomially in the length of a filter chain; this stops that
// before it costs memory, whatever the field's own cap.
const maxValueBytes = 1 << 20

// filterFunc is a notifyd filter. The fast path and the liquid engine both
// call these, so a template renders identically on either path. st is the
// recipient's render state; only contextual filters read it.
type filterFunc func(st *state, in any, args []any) (any, error)

type filterDef struct {
	fn       filterFunc
	min, max int // argument count
	// contextual filters read the recipient (time zone, locale, clock).
	contextual bool
}

// nativeFilters lists the filters notifyd implements (and overrides in the
// liquid engine).
func nativeFilters() []string {
	return []string{
		"default", "upcase", "downcase", "capitalize", "strip", "lstrip", "rstrip",
		"strip_newlines", "newline_to_br", "append", "prepend", "remove", "remove_first",
		"replace", "replace_first", "truncate", "truncatewords", "slice", "join",
		"url_encode", "url_decode", "escape", "escape_once", "raw", "json", "date", "money", "number",
	}
}

// engineOnlyFilter reports the liquid engine's standard filters that notifyd
// keeps as they are; a template using one runs on the engine.
func engineOnlyFilter(name string) bool {
	switch name {
	case "compact", "concat", "map", "reverse", "sort", "sort_natural", "first", "last", "uniq",
		"abs", "ceil", "floor", "modulo", "minus", "plus", "times", "divided_by", "round",
		"size", "split", "strip_html":
		return true
	}
	return false
}

func lookupFilter(name string) (filterDef, bool) {
	str := func(f func(string) string) filterFunc {
		return func(_ *state, in any, _ []any) (any, error) { return f(toString(in)), nil }
	}
	switch name {
	case "default":
		return filterDef{fn: filterDefault, min: 1, max: 1}, true
	case "upcase":
		return filterDef{fn: str(strings.ToUpper)}, true
	case "downcase":
		return filterDef{fn: str(strings.ToLower)}, true
	case "capitalize":
		return filterDef{fn: str(capitalize)}, true
	case "strip":
		return filterDef{fn: str(strings.TrimSpace)}, true
	case "lstrip":
		return filterDef{fn: str(func(s string) string { return strings.TrimLeftFunc(s, unicode.IsSpace) })}, true
	case "rstrip":
		return filterDef{fn: str(func(s string) string { return strings.TrimRightFunc(s, unicode.IsSpace) })}, true
	case "strip_newlines":
		return filterDef{fn: str(func(s string) string { return strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(s) })}, true
	case "newline_to_br":
		return filterDef{fn: str(func(s string) string { return strings.ReplaceAll(s, "\n", "<br />\n") })}, true
	case "append":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) { return toString(in) + toString(a[0]), nil }, min: 1, max: 1}, true
	case "prepend":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) { return toString(a[0]) + toString(in), nil }, min: 1, max: 1}, true
	case "remove":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) { return replace(toString(in), toString(a[0]), "", -1) }, min: 1, max: 1}, true
	case "remove_first":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) { return replace(toString(in), toString(a[0]), "", 1) }, min: 1, max: 1}, true
	case "replace":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) {
			return replace(toString(in), toString(a[0]), argString(a, 1, ""), -1)
		}, min: 1, max: 2}, true
	case "replace_first":
		return filterDef{fn: func(_ *state, in any, a []any) (any, error) {
			return replace(toString(in), toString(a[0]), argString(a, 1, ""), 1)
		}, min: 1, max: 2}, true
	case "truncate":
		return filterDef{fn: filterTruncate, max: 2}, true
	case "truncatewords":
		return filterDef{fn: filterTruncateWords, max: 2}, true
	case "slice":
		return filterDef{fn: filterSlice, min: 1, max: 2}, true
	case "join":
		return filterDef{fn: filterJoin, max: 1}, true
	case "url_encode":
		return filterDef{fn: str(url.QueryEscape)}, true
	case "url_decode":
		return filterDef{fn: func(_ *state, in any, _ []any) (any, error) {
			s, err := url.QueryUnescape(toString(in))
			if err != nil {
				return nil, fmt.Errorf("url_decode: %w", err)
			}
			return s, nil
		}}, true
	case "escape":
		return filterDef{fn: func(_ *state, in any, _ []any) (any, error) { return safeHTML(html.EscapeString(toString(in))), nil }}, true
	case "escape_once":
		return filterDef{fn: func(_ *state, in any, _ []any) (any, error) {
			return safeHTML(html.EscapeString(html.UnescapeString(toString(in)))), nil
		}}, true
	case "raw":
		return filterDef{fn: func(_ *state, in any, _ []any) (any, error) { return rawText(toString(in)), nil }}, true
	case "json":
		return filterDef{fn: filterJSON}, true
	case "date":
		return filterDef{fn: filterDate, max: 1, contextual: true}, true
	case "money":
		return filterDef{fn: filterMoney, max: 2, contextual: true}, true
	case "number":
		return filterDef{fn: filterNumber, max: 2, contextual: true}, true
	}
	return filterDef{}, false
}

// invokeFilter charges a filter's work to st's budget, runs it and enforces
// maxValueBytes on what it built. Both render paths call it, so a template
// costs the same steps on either.
func invokeFilter(name string, def filterDef, st *state, in any, args []any) (any, error) {
	if len(args) < def.min || len(args) > def.max {
		return nil, fmt.Errorf("filter %s: want %d to %d arguments, got %d", name, def.min, def.max, len(args))
	}
	if err := st.charge(nativeCost(in, args)); err != nil {
		return nil, err
	}
	if r, ok := in.(values.Range); ok {
		// Charged above, so the range is within the budget: notifyd's
		// filters see it as the list it stands for.
		in = r.AsArray()
	}
	out, err := def.fn(st, in, args)
	if err != nil {
		return nil, err
	}
	switch s := out.(type) {
	case string:
		if len(s) > maxValueBytes {
			return nil, errTooLarge
		}
	case safeHTML:
		if len(s) > maxValueBytes {
			return nil, errTooLarge
		}
	}
	return out, nil
}

func argString(a []any, i int, def string) string {
	if i < len(a) && a[i] != nil {
		return toString(a[i])
	}
	return def
}

func argInt(a []any, i int, def int) (int, error) {
	if i >= len(a) || a[i] == nil {
		return def, nil
	}
	switch v := a[i].(type) {
	case int:
		return v, nil
	case int64:
		return int(v), nil
	case float64:
		return int(v), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("want an integer argument, got %q", v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want an integer argument, got %T", a[i])
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case string:
		return v == ""
	case int, int64, float64, time.Time:
		return false
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return rv.Len() == 0
	}
	return false
}

func filterDefault(_ *state, in any, a []any) (any, error) {
	if isEmpty(in) {
		return a[0], nil
	}
	return in, nil
}

// capitalize follows Shopify Liquid: first character upper case, the rest lower case.
func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + strings.ToLower(s[n:])
}

func replace(s, old, repl string, n int) (any, error) {
	if old != "" && n < 0 && len(repl) > len(old) {
		if grow := int64(strings.Count(s, old)) * int64(len(repl)-len(old)); int64(len(s))+grow > maxValueBytes {
			return nil, errTooLarge
		}
	}
	if old == "" {
		// strings.Replace with an empty old inserts between every rune; Liquid
		// leaves the string alone.
		return s, nil
	}
	return strings.Replace(s, old, repl, n), nil
}

// filterTruncate counts characters (runes), not bytes, so it never cuts a
// multi-byte character in half.
func filterTruncate(_ *state, in any, a []any) (any, error) {
	s := toString(in)
	n, err := argInt(a, 0, 50)
	if err != nil {
		return nil, fmt.Errorf("truncate: %w", err)
	}
	el := argString(a, 1, "...")
	if utf8.RuneCountInString(s) <= n {
		return s, nil
	}
	keep := max(n-utf8.RuneCountInString(el), 0)
	i := 0
	for k := 0; k < keep && i < len(s); k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + el, nil
}

func filterTruncateWords(_ *state, in any, a []any) (any, error) {
	s := toString(in)
	n, err := argInt(a, 0, 15)
	if err != nil {
		return nil, fmt.Errorf("truncatewords: %w", err)
	}
	n = max(n, 1)
	el := argString(a, 1, "...")
	words := strings.Fields(s)
	if len(words) <= n {
		return s, nil
	}
	return strings.Join(words[:n], " ") + el, nil
}

func filterSlice(_ *state, in any, a []any) (any, error) {
	start, err := argInt(a, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("slice: %w", err)
	}
	length, err := argInt(a, 1, 1)
	if err != nil {
		return nil, fmt.Errorf("slice: %w", err)
	}
	rs := []rune(toString(in))
	if start < 0 {
		start += len(rs)
	}
	if start < 0 || start >= len(rs) || length <= 0 {
		return "", nil
	}
	end := min(start+length, len(rs))
	return string(rs[start:end]), nil
}

func filterJoin(_ *state, in any, a []any) (any, error) {
	sep := argString(a, 0, " ")
	rv := reflect.ValueOf(in)
	if in == nil {
		return "", nil
	}
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return toString(in), nil
	}
	var b []byte
	for i := range rv.Len() {
		e := rv.Index(i).Interface()
		if e == nil {
			continue
		}
		if len(b) > 0 {
			b = append(b, sep...)
		}
		b = appendString(b, e)
		if len(b) > maxValueBytes {
			return nil, errTooLarge
		}
	}
	return string(b), nil
}

func filterJSON(_ *state, in any, _ []any) (any, error) {
	switch v := in.(type) {
	case safeHTML:
		in = string(v)
	case rawText:
		in = string(v)
	case jsonText:
		return v, nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	return jsonText(b), nil
}

// dateLayouts are the zone-less and zoned forms the date filter parses.
func parseDate(s string, loc *time.Location) (time.Time, bool) {
	for _, layout := range [...]string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02", time.RFC1123Z, time.RFC1123} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// filterDate formats in the recipient's time zone. Zone-less date strings
// are read in that zone too: "2024-05-01" is a calendar day, not UTC midnight.
func filterDate(st *state, in any, a []any) (any, error) {
	format := argString(a, 0, "")
	if format == "" {
		format = "%a, %b %d, %y"
	}
	loc := st.location()
	var t time.Time
	switch v := in.(type) {
	case nil:
		return nil, nil
	case time.Time:
		t = v
	case int:
		t = time.Unix(int64(v), 0)
	case int64:
		t = time.Unix(v, 0)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return in, nil
		}
		t = time.Unix(int64(v), 0)
	default:
		s := strings.TrimSpace(toString(in))
		switch strings.ToLower(s) {
		case "now", "today":
			t = st.clock()
		default:
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				t = time.Unix(n, 0)
				break
			}
			var ok bool
			if t, ok = parseDate(s, loc); !ok {
				return in, nil
			}
		}
	}
	out, err := tuesday.Strftime(format, t.In(loc))
	if err != nil {
		return nil, fmt.Errorf("date: %w", err)
	}
	return out, nil
}

func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case float64:
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}

func filterMoney(st *state, in any, a []any) (any, error) {
	amount, ok := toFloat(in)
	if !ok {
		if in == nil {
			return nil, nil
		}
		return nil, errors.New("money: not a number")
	}
	code := strings.ToUpper(argString(a, 0, ""))
	if code == "" {
		code = st.currency()
	}
	locale := argString(a, 1, "")
	if locale == "" {
		locale = st.locale()
	}
	return formatMoney(amount, code, locale), nil
}

func filterNumber(st *state, in any, a []any) (any, error) {
	n, ok := toFloat(in)
	if !ok {
		if in == nil {
			return nil, nil
		}
		return nil, errors.New("number: not a number")
	}
	decimals := 0
	if n != math.Trunc(n) {
		decimals = 2
	}
	if len(a) > 0 && a[0] != nil {
		d, err := argInt(a, 0, decimals)
		if err != nil {
			return nil, fmt.Errorf("number: %w", err)
		}
		decimals = min(max(d, 0), 10)
	}
	locale := argString(a, 1, "")
	if locale == "" {
		locale = st.locale()
	}
	return formatNumber(n, decimals, localeFormatFor(locale)), nil
}

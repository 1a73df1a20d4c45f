package campaigns

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
)

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// errUnknownField marks a key the target type has no field for.
var errUnknownField = errors.New("unknown field")

// locateJSON finds where body fails to decode into a value of type t and
// returns the dotted path (content.sms.evil, triggers[2].occurred_at): the
// first unknown field, or the first value whose own UnmarshalJSON refuses
// it, with that error. encoding/json names an unknown field by its leaf
// only and gives a custom unmarshaler's error no path at all, which made
// these errors name "evil" or "body". It runs only after a failed decode.
func locateJSON(body []byte, t reflect.Type) (path string, err error, ok bool) {
	return walkJSON(bytes.TrimSpace(body), t, "")
}

func walkJSON(raw []byte, t reflect.Type, path string) (string, error, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil, false
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return path, err, true
		}
		return "", nil, false
	}
	switch t.Kind() {
	case reflect.Struct:
		if raw[0] != '{' {
			return "", nil, false
		}
		return eachMember(raw, path, func(key string, v []byte, p string) (string, error, bool) {
			f, ok := jsonField(t, key)
			if !ok {
				return p, errUnknownField, true
			}
			return walkJSON(v, f.Type, p)
		})
	case reflect.Map:
		if raw[0] != '{' {
			return "", nil, false
		}
		return eachMember(raw, path, func(_ string, v []byte, p string) (string, error, bool) {
			return walkJSON(v, t.Elem(), p)
		})
	case reflect.Slice, reflect.Array:
		if raw[0] != '[' {
			return "", nil, false
		}
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return "", nil, false
		}
		for i, it := range items {
			if p, err, ok := walkJSON(it, t.Elem(), path+"["+strconv.Itoa(i)+"]"); ok {
				return p, err, ok
			}
		}
	}
	return "", nil, false
}

// eachMember calls fn for an object's members in input order.
func eachMember(raw []byte, path string, fn func(key string, v []byte, p string) (string, error, bool)) (string, error, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return "", nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", nil, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", nil, false
		}
		p := joinPath(path, key)
		if p, err, ok := fn(key, v, p); ok {
			return p, err, ok
		}
	}
	return "", nil, false
}

// joinPath appends key to path: .key for a plain name, ["key"] quoted for
// anything else (empty, dotted, spaces), so a path is never ambiguous and
// never reads "content..x".
func joinPath(path, key string) string {
	plain := key != ""
	for _, r := range key {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			plain = false
			break
		}
	}
	switch {
	case !plain:
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	}
	return path + "." + key
}

// jsonField finds the field encoding/json would fill for key (exact tag or
// name first, then case-insensitively), looking into embedded structs.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	folded := false
	var visit func(t reflect.Type) (reflect.StructField, bool)
	visit = func(t reflect.Type) (reflect.StructField, bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					if sf, ok := visit(ft); ok {
						return sf, true
					}
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if name == key {
				return f, true
			}
			if !folded && strings.EqualFold(name, key) {
				fold, folded = f, true
			}
		}
		return reflect.StructField{}, false
	}
	if f, ok := visit(t); ok {
		return f, true
	}
	return fold, folded
}

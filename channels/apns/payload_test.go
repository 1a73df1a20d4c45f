package apns

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/notifyd/notifyd/channels"
)

func TestAppendPayload(t *testing.T) {
	badge, zero := 5, 0
	tests := []struct {
		name     string
		push     channels.Push
		pushType string
		want     string
		wantErr  string
	}{
		{name: "empty alert", push: channels.Push{}, pushType: "alert", want: `{"aps":{}}`},
		{name: "title only", push: channels.Push{Title: "Hi"}, pushType: "alert", want: `{"aps":{"alert":{"title":"Hi"}}}`},
		{name: "body only", push: channels.Push{Body: "B"}, pushType: "alert", want: `{"aps":{"alert":{"body":"B"}}}`},
		{name: "badge zero clears the badge", push: channels.Push{Badge: &zero}, pushType: "alert", want: `{"aps":{"badge":0}}`},
		{
			name:     "all fields in a stable order",
			push:     channels.Push{Title: "T", Body: "B", Sound: "s.caf", Badge: &badge, ThreadID: "th", DeepLink: "app://x", ImageURL: "https://i/x.png", Data: json.RawMessage(` {"k":"v", "n":[1,2]} `)},
			pushType: "alert",
			want:     `{"aps":{"alert":{"title":"T","body":"B"},"badge":5,"sound":"s.caf","thread-id":"th","mutable-content":1},"link":"app://x","image":"https://i/x.png","k":"v", "n":[1,2]}`,
		},
		{name: "background", push: channels.Push{Data: json.RawMessage(`{"sync":1}`)}, pushType: "background", want: `{"aps":{"content-available":1},"sync":1}`},
		{name: "data overrides link and image", push: channels.Push{DeepLink: "a", ImageURL: "b", Data: json.RawMessage(`{"link":"mine","image":"mine"}`)}, pushType: "alert", want: `{"aps":{"mutable-content":1},"link":"mine","image":"mine"}`},
		{name: "nested aps in data is fine", push: channels.Push{Data: json.RawMessage(`{"x":{"aps":1}}`)}, pushType: "alert", want: `{"aps":{},"x":{"aps":1}}`},
		{name: "null data", push: channels.Push{Title: "t", Data: json.RawMessage(`null`)}, pushType: "alert", want: `{"aps":{"alert":{"title":"t"}}}`},
		{name: "empty data object", push: channels.Push{Title: "t", Data: json.RawMessage(`{}`)}, pushType: "alert", want: `{"aps":{"alert":{"title":"t"}}}`},
		{name: "escapes", push: channels.Push{Title: "a\"b\\c\nd\te\x01 \u2028 <&>"}, pushType: "alert", want: `{"aps":{"alert":{"title":"a\"b\\c\nd\te\u0001 \u2028 <&>"}}}`},
		{name: "invalid utf-8 is replaced", push: channels.Push{Body: "ok\xffok"}, pushType: "alert", want: `{"aps":{"alert":{"body":"ok\ufffdok"}}}`},
		{name: "data array", push: channels.Push{Data: json.RawMessage(`[1]`)}, pushType: "alert", wantErr: "not a JSON object"},
		{name: "data broken", push: channels.Push{Data: json.RawMessage(`{"a":`)}, pushType: "alert", wantErr: "not a JSON object"},
		{name: "data sets aps through an escape", push: channels.Push{Data: json.RawMessage(`{"ap\u0073":{}}`)}, pushType: "alert", wantErr: "reserved"},
		{name: "data sets aps", push: channels.Push{Data: json.RawMessage(`{"x":1,"aps":{}}`)}, pushType: "alert", wantErr: "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := appendPayload(nil, &tc.push, tc.pushType)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("\n got %s\nwant %s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Fatalf("not valid JSON: %s", got)
			}
		})
	}
}

func TestAPNsIDIsStableUUID(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	tests := []struct{ name, a, b string }{
		{"short keys differ", "k1", "k2"},
		{"long keys differ", strings.Repeat("x", 300) + "1", strings.Repeat("x", 300) + "2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ida, idb := apnsID(tc.a), apnsID(tc.b)
			if !uuid.MatchString(ida) || !uuid.MatchString(idb) {
				t.Fatalf("not version-5 UUIDs: %s %s", ida, idb)
			}
			if ida != apnsID(tc.a) {
				t.Fatal("same key gave different ids")
			}
			if ida == idb {
				t.Fatal("different keys gave the same id")
			}
		})
	}
}

// FuzzAppendString checks the string encoder against encoding/json's
// decoder: whatever goes in comes back (with invalid UTF-8 replaced).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x1f\u2028\u2029", "ünïcødé 🎉", "bad\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, out, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); back != want && utf8.ValidString(s) {
			t.Fatalf("round trip %q -> %s -> %q", s, out, back)
		}
	})
}

// FuzzAppendPayload feeds arbitrary Data: the payload is valid JSON whenever
// it is accepted, and "aps" is never duplicated at the top level.
func FuzzAppendPayload(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"aps":1}`, `{"x":{"aps":1}}`, `[1]`, `{"a":"\"aps\""}`, ` {"k" : "v" } `} {
		f.Add("title", s)
	}
	f.Fuzz(func(t *testing.T, title, data string) {
		out, err := appendPayload(nil, &channels.Push{Title: title, DeepLink: "l", Data: json.RawMessage(data)}, "alert")
		if err != nil {
			return
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(out, &top); err != nil {
			t.Fatalf("payload %s for data %q: %v", out, data, err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		_, _ = dec.Token()
		apsSeen := 0
		for dec.More() {
			k, _ := dec.Token()
			if k == "aps" {
				apsSeen++
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
		if apsSeen != 1 {
			t.Fatalf("aps appears %d times in %s", apsSeen, out)
		}
	})
}

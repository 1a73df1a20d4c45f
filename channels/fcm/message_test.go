package fcm

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
)

func TestDataMap(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    map[string]string
		wantErr string
	}{
		{name: "empty", raw: "", want: nil},
		{name: "null", raw: " null ", want: nil},
		{name: "strings stay", raw: `{"a":"x","b":"with \"quote\""}`, want: map[string]string{"a": "x", "b": `with "quote"`}},
		{name: "others JSON-encoded and compacted", raw: `{"n": 1.5, "o": { "k" : [1, 2] }, "t": true, "z": null}`,
			want: map[string]string{"n": "1.5", "o": `{"k":[1,2]}`, "t": "true", "z": "null"}},
		{name: "array", raw: `[1,2]`, wantErr: "not a JSON object"},
		{name: "reserved from", raw: `{"from":"x"}`, wantErr: "reserved"},
		{name: "reserved gcm prefix", raw: `{"gcm.n":"x"}`, wantErr: "reserved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dataMap(json.RawMessage(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
		want time.Duration
	}{
		{"empty", "", 0},
		{"seconds", "7", 7 * time.Second},
		{"negative", "-3", 0},
		{"capped at a day", "999999", 24 * time.Hour},
		{"http date", now.Add(90 * time.Second).Format(http1123), 90 * time.Second},
		{"date in the past", now.Add(-time.Minute).Format(http1123), 0},
		{"garbage", "soon", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.v, now); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestInvalidIndex(t *testing.T) {
	tests := []struct {
		msg  string
		n    int
		want int
	}{
		{"invalid message at index 3: invalid image URL", 5, 3},
		{"invalid message at index 9: x", 5, -1},
		{"messages must not be nil or empty", 5, -1},
	}
	for _, tc := range tests {
		t.Run(tc.msg, func(t *testing.T) {
			if got := invalidIndex(errString(tc.msg), tc.n); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func BenchmarkBuildMessage(b *testing.B) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := &channels.Message{To: "tok", Deadline: now.Add(time.Hour), High: true, Push: &channels.Push{
		Title: "Hello", Body: "World", CollapseID: "c", Data: json.RawMessage(`{"k":"v","n":1}`),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildMessage(m, now, ""); err != nil {
			b.Fatal(err)
		}
	}
}

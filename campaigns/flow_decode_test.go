package campaigns_test

import (
	"errors"
	"testing"

	"github.com/notifyd/notifyd/campaigns"
)

// TestDecodeTriggersShape is issue 12 item 14: whether a body is a batch is
// decided by its top-level key, not by the string "triggers" anywhere in it.
func TestDecodeTriggersShape(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantN     int
		wantField string // "" = no error
	}{
		{name: "single", body: `{"flow":"w","user_id":"u-1"}`, wantN: 1},
		{name: "single mentioning triggers in a value", body: `{"flow":"w","user_id":"u-1","properties":{"note":"see \"triggers\""}}`, wantN: 1},
		{name: "single with a triggers property", body: `{"flow":"w","user_id":"u-1","properties":{"triggers":[1,2]}}`, wantN: 1},
		{name: "single with the word as its idempotency key", body: `{"flow":"w","user_id":"u-1","idempotency_key":"\"triggers\""}`, wantN: 1},
		{name: "batch", body: `{"triggers":[{"flow":"w","user_id":"u-1"},{"flow":"w","user_id":"u-2"}]}`, wantN: 2},
		{name: "empty batch", body: `{"triggers":[]}`, wantField: "triggers"},
		{name: "bad entry in a batch", body: `{"triggers":[{"flow":"w","user_id":"u-1"},{"flow":"w"}]}`, wantField: "triggers[1].user_id"},
		{name: "bad single", body: `{"flow":"w"}`, wantField: "user_id"},
		{name: "batch and single fields together", body: `{"triggers":[{"flow":"w","user_id":"u-1"}],"user_id":"u-2"}`, wantField: "triggers"},
		{name: "unknown field", body: `{"flow":"w","user_id":"u-1","bogus":1}`, wantField: "bogus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := campaigns.DecodeTriggers([]byte(tc.body))
			if tc.wantField != "" {
				var fe *campaigns.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.wantField {
					t.Fatalf("DecodeTriggers = %v, want a FieldError on %s", err, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != tc.wantN {
				t.Fatalf("got %d triggers, want %d", len(list), tc.wantN)
			}
		})
	}
}

package campaigns_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/campaigns"
)

// TestDecodeErrorQuality is part of issue 12 item 13: errors name the
// field and the JSON a caller should send, never Go types, and a duration
// that overflows says so.
func TestDecodeErrorQuality(t *testing.T) {
	const base = `"id":"c1","segment":"all","channels":["sms"],"content":{"sms":{"body":"hi"}}`
	tests := []struct {
		name      string
		body      string
		wantField string
		wantMsg   string
	}{
		{name: "ttl overflows", body: `{` + base + `,"ttl":1e20}`, wantField: "body", wantMsg: "out of range"},
		{name: "whole body of the wrong type", body: `[1,2]`, wantField: "body", wantMsg: "want an object"},
		{name: "string for a list", body: `{"id":"c1","segment":"all","channels":"sms"}`, wantField: "channels", wantMsg: "want an array"},
		{name: "number for a string", body: `{"id":7}`, wantField: "id", wantMsg: "want a string"},
		{name: "string for vars", body: `{` + base + `,"vars":"x"}`, wantField: "vars", wantMsg: "want an object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := campaigns.DecodeCampaign([]byte(tc.body))
			var fe *campaigns.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.wantField || !strings.Contains(fe.Msg, tc.wantMsg) {
				t.Fatalf("DecodeCampaign = %v, want field %q and %q", err, tc.wantField, tc.wantMsg)
			}
			for _, leak := range []string{"campaigns.", "interface {}", "[]string", "map["} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error exposes a Go type (%s): %v", leak, err)
				}
			}
		})
	}
}

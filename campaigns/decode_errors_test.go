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
		{name: "ttl overflows", body: `{` + base + `,"ttl":1e20}`, wantField: "ttl", wantMsg: "out of range"},
		{name: "bad duration names its field", body: `{` + base + `,"ttl":"5 parsecs"}`, wantField: "ttl", wantMsg: "parse duration"},
		{name: "bad time names its field", body: `{` + base + `,"send_at":"tomorrow"}`, wantField: "send_at", wantMsg: "want an RFC 3339 time"},
		{name: "unknown nested field has its path", body: `{"id":"c1","segment":"all","channels":["sms"],"content":{"sms":{"body":"hi","evil":1}}}`, wantField: "content.sms.evil", wantMsg: "unknown field"},
		{name: "unknown field in a locale", body: `{"id":"c1","segment":"all","channels":["sms"],"content":{"sms":{"body":"hi"},"locales":{"fr":{"sms":{"evil":1}}}}}`, wantField: "content.locales.fr.sms.evil", wantMsg: "unknown field"},
		{name: "dotted key is quoted", body: `{"id":"c1","segment":"all","channels":["sms"],"content":{".x":1}}`, wantField: `content[".x"]`, wantMsg: "unknown field"},
		{name: "empty key is not an empty segment", body: `{"id":"c1","segment":"all","channels":["sms"],"content":{"":{"body":"x"}}}`, wantField: `content[""]`, wantMsg: "unknown field"},
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

// TestDecodeErrorPathsFlowsAndTriggers: the same paths for flows and for a
// trigger inside a batch.
func TestDecodeErrorPathsFlowsAndTriggers(t *testing.T) {
	_, err := campaigns.DecodeFlow([]byte(`{"id":"f","trigger":{"event":"e","evil":1},"channels":["sms"],"content":{"sms":{"body":"x"}}}`))
	if fe, ok := errors.AsType[*campaigns.FieldError](err); !ok || fe.Field != "trigger.evil" {
		t.Fatalf("DecodeFlow = %v, want field trigger.evil", err)
	}
	_, err = campaigns.DecodeFlow([]byte(`{"id":"f","trigger":{"event":"e"},"delay":"soon","channels":["sms"],"content":{"sms":{"body":"x"}}}`))
	if fe, ok := errors.AsType[*campaigns.FieldError](err); !ok || fe.Field != "delay" {
		t.Fatalf("DecodeFlow = %v, want field delay", err)
	}
	_, err = campaigns.DecodeTriggers([]byte(`{"triggers":[{"user_id":"u"},{"user_id":"v","occurred_at":"yesterday"}]}`))
	if fe, ok := errors.AsType[*campaigns.FieldError](err); !ok || fe.Field != "triggers[1].occurred_at" {
		t.Fatalf("DecodeTriggers = %v, want field triggers[1].occurred_at", err)
	}
}

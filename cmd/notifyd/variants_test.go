package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCampaignTableShowsVariants(t *testing.T) {
	body := `{"id":"ab","status":"completed","segment":"all","channels":["sms"],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z",
 "counts":{"sms":{"sent":7,"holdout":1}},
 "variants":{"A":{"sms":{"sent":4}},"B":{"sms":{"sent":3}},"holdout":{"sms":{"holdout":1}}},
 "winner":{"phase":"sent","due":"2026-01-01T02:00:00Z","variant":"A","campaign":"ab.winner"}}`
	var b bytes.Buffer
	if err := campaignTable(&b, []byte(body)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"A sent as ab.winner (sent)", "VARIANT A", "VARIANT B", "VARIANT holdout"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "VARIANT A"), strings.Index(out, "VARIANT B"); i > j {
		t.Errorf("variants out of order:\n%s", out)
	}
}

package channels

import (
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		v     string
		limit time.Duration
		want  time.Duration
	}{
		{"empty", "", 0, 0},
		{"seconds", "120", 0, 2 * time.Minute},
		{"spaces", " 7 ", 0, 7 * time.Second},
		{"zero", "0", 0, 0},
		{"negative", "-5", 0, 0},
		{"capped seconds", "999999", time.Hour, time.Hour},
		{"http date", "Fri, 27 Nov 2026 12:01:30 GMT", 0, 90 * time.Second},
		{"past date", "Fri, 27 Nov 2026 11:00:00 GMT", 0, 0},
		{"capped date", "Sat, 28 Nov 2026 12:00:00 GMT", time.Minute, time.Minute},
		{"garbage", "soon", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseRetryAfter(tc.v, now, tc.limit); got != tc.want {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

package tailview

import (
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/daemon"
)

func TestViewShowsVariants(t *testing.T) {
	s := &daemon.Snapshot{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Campaigns: map[string]daemon.CampaignSnapshot{
		"ab": {ID: "ab", Status: "running", Tally: daemon.Tally{Sent: 9}, Variants: map[string]daemon.Tally{
			"A":       {Sent: 5},
			"B":       {Sent: 4, Failed: map[string]int64{"provider_rejected": 1}},
			"holdout": {Skipped: map[string]int64{"holdout": 2}},
		}},
	}}
	screen := strings.Join(Screen(s, 120, ""), "\n")
	for _, want := range []string{"variant A", "sent 5", "variant B", "failed 1", "variant holdout", "skipped 2"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
	line := Line(s)
	for _, want := range []string{"variant=A sent=5 failed=0 skipped=0", "variant=B sent=4 failed=1", "variant=holdout sent=0 failed=0 skipped=2"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
}

package daemon

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
)

type noCampaigns struct{}

func (noCampaigns) List(context.Context, string, int) ([]campaigns.CampaignRecord, error) {
	return nil, nil
}

// TestLiveViewAndMetricsSplitByVariant: an A/B campaign's counts reach the
// live view and notifyd_campaign_variant_recipients per group; a campaign
// without variants adds no series.
func TestLiveViewAndMetricsSplitByVariant(t *testing.T) {
	f := newHubFixture(t, EventsConfig{})
	ab := smsStatus("ab", campaigns.StatusRunning, map[string]int64{"sent": 9, "provider_rejected": 1, "holdout": 2})
	ab.Variants = map[string]map[string]map[string]int64{
		"A":       {channels.SMS: {"sent": 5}},
		"B":       {channels.SMS: {"sent": 4, "provider_rejected": 1}},
		"holdout": {channels.SMS: {"holdout": 2}},
	}
	f.camps.set(ab, true)
	f.camps.set(smsStatus("plain", campaigns.StatusRunning, map[string]int64{"sent": 3}), true)
	f.camps.running = []string{"ab", "plain"}
	f.hub.Sample(context.Background())
	s := f.hub.Latest()
	v := s.Campaigns["ab"].Variants
	for _, tc := range []struct {
		name      string
		got, want int64
	}{
		{"A sent", v["A"].Sent, 5},
		{"B sent", v["B"].Sent, 4},
		{"B failed", v["B"].FailedTotal(), 1},
		{"holdout skipped", v["holdout"].Skipped[campaigns.ReasonHoldout], 2},
		{"holdout is a skip of the campaign", s.Campaigns["ab"].Skipped[campaigns.ReasonHoldout], 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %d, want %d", tc.got, tc.want)
			}
		})
	}
	if s.Campaigns["plain"].Variants != nil {
		t.Fatalf("a campaign without variants has %v", s.Campaigns["plain"].Variants)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newOpsCollector(f.hub, noCampaigns{}, func() (ShardSnapshot, map[string]uint64, bool) { return ShardSnapshot{}, nil, false },
		nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "notifyd_campaign_variant_recipients" {
			continue
		}
		for _, m := range mf.Metric {
			got[label(m, "campaign")+"/"+label(m, "variant")+"/"+label(m, "outcome")] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"ab/A/sent": 5, "ab/A/failed": 0, "ab/A/skipped": 0,
		"ab/B/sent": 4, "ab/B/failed": 1, "ab/B/skipped": 0,
		"ab/holdout/sent": 0, "ab/holdout/failed": 0, "ab/holdout/skipped": 2,
	}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s = %v, want %v", k, got[k], n)
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

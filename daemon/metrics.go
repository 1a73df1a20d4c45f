package daemon

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/shard"
)

// teeRegisterer registers every collector on two registries: the daemon's
// (served on /metrics) and the events hub's private one, which holds only
// the channel metrics so the hub can read them every second without running
// the scrape-time collectors below.
type teeRegisterer struct{ main, live prometheus.Registerer }

func (t teeRegisterer) Register(c prometheus.Collector) error {
	if err := t.main.Register(c); err != nil {
		return err
	}
	if err := t.live.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			t.main.Unregister(c)
			return err
		}
	}
	return nil
}

func (t teeRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t teeRegisterer) Unregister(c prometheus.Collector) bool {
	t.live.Unregister(c)
	return t.main.Unregister(c)
}

// campaignLister is the part of the campaign store the status gauge reads.
type campaignLister interface {
	List(ctx context.Context, after string, limit int) ([]campaigns.CampaignRecord, error)
}

// maxListedCampaigns bounds one scrape's walk over the stored campaigns
// (a few pipelined round trips per 500); past it the gauge says so.
const maxListedCampaigns = 20000

// opsCollector reports campaign and shard state at scrape time, so none of
// it costs the send path anything.
//
// Cardinality: a campaign id appears only in notifyd_campaign_progress_ratio
// and notifyd_campaign_variant_recipients, and only while the campaign is in
// the live view (active, or finished less than EventsConfig.Linger ago) —
// one series per concurrently visible campaign, and three per A/B group of
// one (at most MaxVariants + 1 groups). Outcome counts are per channel and reason, never per campaign:
// notifyd_campaign_messages_total{campaign,channel,reason} would leave ~80
// series behind per campaign forever, which over a year of daily sends
// is what takes a Prometheus down.
type opsCollector struct {
	hub    *EventHub
	store  campaignLister
	shard  ShardInfoFunc
	delays campaigns.DelayQueue // nil: not reported
	log    *slog.Logger

	campaigns  *prometheus.Desc
	listed     *prometheus.Desc
	progress   *prometheus.Desc
	recipients *prometheus.Desc
	variants   *prometheus.Desc
	fallbacks  *prometheus.Desc
	generation *prometheus.Desc
	rows       *prometheus.Desc
	segments   *prometheus.Desc
	streams    *prometheus.Desc
	delayed    *prometheus.Desc
}

func newOpsCollector(hub *EventHub, store campaignLister, shard ShardInfoFunc, delays campaigns.DelayQueue, log *slog.Logger) *opsCollector {
	return &opsCollector{
		hub: hub, store: store, shard: shard, delays: delays, log: log,
		campaigns: prometheus.NewDesc("notifyd_campaigns", "Stored campaigns by lifecycle status.", []string{"status"}, nil),
		listed: prometheus.NewDesc("notifyd_campaigns_listed_complete",
			"1 if notifyd_campaigns covers every stored campaign, 0 if the walk stopped at its cap or failed.", nil, nil),
		progress: prometheus.NewDesc("notifyd_campaign_progress_ratio",
			"Share of the campaign's members whose messages are all final (from its checkpoints; before the first, settled messages over members × channels), for campaigns in the live view.", []string{"campaign", "status"}, nil),
		variants: prometheus.NewDesc("notifyd_campaign_variant_recipients",
			"Recipient positions settled per A/B group (variant id, or holdout) and outcome (sent, failed, skipped), for A/B campaigns in the live view.",
			[]string{"campaign", "variant", "outcome"}, nil),
		recipients: prometheus.NewDesc("notifyd_campaign_recipients_total",
			"Recipient positions settled by campaigns run on this daemon, by channel and reason (sent, or why not).", []string{"channel", "reason"}, nil),
		fallbacks: prometheus.NewDesc("notifyd_campaign_fallbacks_total",
			"Members of fallback campaigns run on this daemon who moved on from a step (push, email, ...) to the next, by step and cause.", []string{"step", "cause"}, nil),
		generation: prometheus.NewDesc("notifyd_shard_generation", "Generation of the newest mapped shard file.", nil, nil),
		rows:       prometheus.NewDesc("notifyd_shard_rows", "Members (rows) in the newest mapped shard file.", nil, nil),
		segments:   prometheus.NewDesc("notifyd_shard_segments", "Segments in the newest mapped shard file.", nil, nil),
		streams:    prometheus.NewDesc("notifyd_events_streams", "Open GET /v1/events streams.", nil, nil),
		delayed: prometheus.NewDesc("notifyd_flow_delayed_triggers",
			"Delayed triggers held in the delay queue (shared by every daemon on the same Redis), due or not.", nil, nil),
	}
}

func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.campaigns, c.listed, c.progress, c.variants, c.recipients, c.fallbacks, c.generation, c.rows, c.segments, c.streams, c.delayed} {
		ch <- d
	}
}

func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectStatuses(ch)
	if snap := c.hub.Latest(); snap != nil {
		for id, cs := range snap.Campaigns {
			if cs.Progress != nil {
				ch <- prometheus.MustNewConstMetric(c.progress, prometheus.GaugeValue, *cs.Progress, id, cs.Status)
			}
			for v, t := range cs.Variants {
				ch <- prometheus.MustNewConstMetric(c.variants, prometheus.GaugeValue, float64(t.Sent), id, v, "sent")
				ch <- prometheus.MustNewConstMetric(c.variants, prometheus.GaugeValue, float64(t.FailedTotal()), id, v, "failed")
				ch <- prometheus.MustNewConstMetric(c.variants, prometheus.GaugeValue, float64(t.SkippedTotal()), id, v, "skipped")
			}
		}
	}
	for k, n := range c.hub.RecipientTotals() {
		ch <- prometheus.MustNewConstMetric(c.recipients, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	for k, n := range c.hub.FallbackTotals() {
		ch <- prometheus.MustNewConstMetric(c.fallbacks, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	if info, segs, ok := c.shard(); ok {
		ch <- prometheus.MustNewConstMetric(c.generation, prometheus.GaugeValue, float64(info.Generation))
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(info.Rows))
		ch <- prometheus.MustNewConstMetric(c.segments, prometheus.GaugeValue, float64(len(segs)))
	}
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(c.hub.Subscribers()))
	if c.delays != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n, err := c.delays.Len(ctx)
		cancel()
		if err != nil {
			c.log.Warn("count delayed triggers for metrics", "error", err)
		} else {
			ch <- prometheus.MustNewConstMetric(c.delayed, prometheus.GaugeValue, float64(n))
		}
	}
}

// collectStatuses counts stored campaigns by status. Every status is
// reported, zeros included, so a panel's "running" line drops to 0 rather
// than vanishing.
func (c *opsCollector) collectStatuses(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts := map[campaigns.Status]int{}
	for _, s := range []campaigns.Status{campaigns.StatusScheduled, campaigns.StatusRunning, campaigns.StatusPaused,
		campaigns.StatusCompleted, campaigns.StatusCancelled, campaigns.StatusFailed} {
		counts[s] = 0
	}
	complete, after, seen := 1.0, "", 0
	for {
		page, err := c.store.List(ctx, after, 500)
		if err != nil {
			c.log.Warn("metrics: list campaigns", "error", err)
			complete = 0
			break
		}
		for _, rec := range page {
			if strings.HasPrefix(rec.ID, campaigns.FlowPrefix) {
				continue // a flow stored among campaigns by an earlier version
			}
			counts[rec.Status]++
		}
		seen += len(page)
		if len(page) < 500 {
			break
		}
		if seen >= maxListedCampaigns {
			complete = 0
			break
		}
		after = page[len(page)-1].ID
	}
	statuses := make([]string, 0, len(counts))
	for s := range counts {
		statuses = append(statuses, string(s))
	}
	sort.Strings(statuses)
	for _, s := range statuses {
		ch <- prometheus.MustNewConstMetric(c.campaigns, prometheus.GaugeValue, float64(counts[campaigns.Status(s)]), s)
	}
	ch <- prometheus.MustNewConstMetric(c.listed, prometheus.GaugeValue, complete)
}

// warmCollector reports the warm-up of the shard generation in service
// (shard.Store WithWarmUp): how long it took, and how many blocks failed
// verification (their rows are skipped as corrupt_row).
type warmCollector struct {
	warmed       func() (shard.WarmReport, bool)
	seconds, bad *prometheus.Desc
}

func newWarmCollector(warmed func() (shard.WarmReport, bool)) *warmCollector {
	return &warmCollector{warmed: warmed,
		seconds: prometheus.NewDesc("notifyd_shard_warmup_seconds", "How long verifying every block of the shard generation in service took (absent until done, or with shard.lazy_verify).", nil, nil),
		bad:     prometheus.NewDesc("notifyd_shard_corrupt_blocks", "Blocks of the shard generation in service that failed verification in its warm-up: their rows are skipped as corrupt_row.", nil, nil),
	}
}

func (c *warmCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.seconds; ch <- c.bad }

func (c *warmCollector) Collect(ch chan<- prometheus.Metric) {
	rep, ok := c.warmed()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.GaugeValue, rep.Took.Seconds())
	ch <- prometheus.MustNewConstMetric(c.bad, prometheus.GaugeValue, float64(rep.Bad))
}

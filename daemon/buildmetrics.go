package daemon

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels"
)

// sreCollector reports, at scrape time, what deploy/prometheus-rules.yaml
// pages on beyond the send-path counters: the build (notifyd_build_info,
// so an alert can name the version), whether Redis answers
// (notifyd_redis_up, the readiness probe's ping with a short deadline of
// its own, so a scrape never waits on a dead Redis for long) and each
// channel queue's capacity (notifyd_channel_queue_capacity, the
// denominator of queue saturation).
type sreCollector struct {
	redis    redis.UniversalClient // nil: state in memory, no series
	capacity map[string]int

	build, redisUp, queueCap *prometheus.Desc
	version, commit          string
}

// queueSizes is each channel's configured pool queue_size (0: the default).
func newSRECollector(rc redis.UniversalClient, queueSizes map[string]int) *sreCollector {
	c := &sreCollector{
		redis:    rc,
		capacity: map[string]int{},
		build: prometheus.NewDesc("notifyd_build_info", "Always 1; labels name the module version, VCS commit and Go version of the running binary.",
			[]string{"version", "commit", "goversion"}, nil),
		redisUp: prometheus.NewDesc("notifyd_redis_up", "1 if every Redis node (every master of a cluster) answered PING within 1s at scrape time, else 0.", nil, nil),
		queueCap: prometheus.NewDesc("notifyd_channel_queue_capacity",
			"Messages a channel's pool holds at most (ready plus awaiting retry): the ceiling of the sum of notifyd_channel_queue_depth over lanes.", []string{"channel"}, nil),
		version: "(devel)", commit: "unknown",
	}
	for name, n := range queueSizes {
		c.capacity[name] = n
		if n == 0 {
			c.capacity[name] = channels.DefaultQueueSize
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			c.version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				c.commit = s.Value
			}
		}
	}
	return c
}

func (c *sreCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.build
	ch <- c.redisUp
	ch <- c.queueCap
}

func (c *sreCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.build, prometheus.GaugeValue, 1, c.version, c.commit, runtime.Version())
	for name, n := range c.capacity {
		ch <- prometheus.MustNewConstMetric(c.queueCap, prometheus.GaugeValue, float64(n), name)
	}
	if c.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		up := 1.0
		if pingRedis(ctx, c.redis) != nil {
			up = 0
		}
		cancel()
		ch <- prometheus.MustNewConstMetric(c.redisUp, prometheus.GaugeValue, up)
	}
}

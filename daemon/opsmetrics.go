package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/store/redisstate"
)

// fireFunc is the flow engine's Fire, as the API and the intake call it.
type fireFunc func(context.Context, []campaigns.Trigger) ([]campaigns.TriggerResult, error)

// TriggerMetrics counts what became of each trigger a daemon took in
// (notifyd_triggers_total{source,status}): the answer to "are triggers
// arriving, and are they being dropped as unknown users?" that the flow
// counts, which only see triggers that were accepted, cannot give.
type TriggerMetrics struct {
	taken *prometheus.CounterVec
}

// NewTriggerMetrics registers notifyd_triggers_total on reg.
func NewTriggerMetrics(reg prometheus.Registerer) *TriggerMetrics {
	m := &TriggerMetrics{taken: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "notifyd_triggers_total",
		Help: "Triggers taken in, by source (api, stream, shard_stream) and status: accepted, forwarded, unknown_user, no_flow, unknown_flow, overloaded, or unavailable when the state store could not take them (the caller or the stream retries).",
	}, []string{"source", "status"})}
	// Every series exists from the start, so rate() and alerts see a 0
	// rather than nothing until the first trigger of a kind.
	for _, src := range []string{"api", "stream"} {
		for _, st := range []string{"accepted", "forwarded", "unknown_user", "no_flow", "unknown_flow", "overloaded", "unavailable"} {
			m.taken.WithLabelValues(src, st)
		}
	}
	reg.MustRegister(m.taken)
	return m
}

// wrap counts fire's answers under source. A nil m leaves fire as it is.
func (m *TriggerMetrics) wrap(source string, fire fireFunc) fireFunc {
	if m == nil {
		return fire
	}
	return func(ctx context.Context, ts []campaigns.Trigger) ([]campaigns.TriggerResult, error) {
		res, err := fire(ctx, ts)
		if err != nil {
			m.taken.WithLabelValues(source, "unavailable").Add(float64(len(ts)))
			return res, err
		}
		for _, r := range res {
			m.taken.WithLabelValues(source, r.Status).Inc()
		}
		return res, nil
	}
}

// countingFlows is the flow service the admin API sees: Fire is counted.
type countingFlows struct {
	FlowService
	fire fireFunc
}

func (c countingFlows) Fire(ctx context.Context, ts []campaigns.Trigger) ([]campaigns.TriggerResult, error) {
	return c.fire(ctx, ts)
}

// redisMetrics is a go-redis hook timing every command and pipeline and
// counting failures by kind, so an SRE sees Redis trouble as a rate before
// it becomes stalled campaigns (notifyd_redis_up only says whether a ping
// answers at scrape time).
type redisMetrics struct {
	duration          *prometheus.HistogramVec
	errors            *prometheus.CounterVec
	command, pipeline prometheus.Observer // resolved once: the hook runs per round trip
}

var _ redis.Hook = (*redisMetrics)(nil)

func newRedisMetrics(reg prometheus.Registerer) *redisMetrics {
	m := &redisMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "notifyd_redis_request_duration_seconds",
			Help:    "Round trips to Redis: one command, or one pipeline (a batch's claims, a ledger flush), as the client saw them.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_redis_errors_total",
			Help: "Redis round trips that failed, by reason: timeout, connection, cluster (MOVED/ASK/CLUSTERDOWN/TRYAGAIN), loading, readonly, script, other. A missing key is not an error.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"timeout", "connection", "cluster", "loading", "readonly", "script", "other"} {
		m.errors.WithLabelValues(r)
	}
	m.command, m.pipeline = m.duration.WithLabelValues("command"), m.duration.WithLabelValues("pipeline")
	reg.MustRegister(m.duration, m.errors)
	return m
}

func (m *redisMetrics) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			m.errors.WithLabelValues("connection").Inc()
		}
		return c, err
	}
}

func (m *redisMetrics) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		m.command.Observe(time.Since(start).Seconds())
		m.count(ctx, err)
		return err
	}
}

func (m *redisMetrics) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		m.pipeline.Observe(time.Since(start).Seconds())
		m.count(ctx, err)
		return err
	}
}

func (m *redisMetrics) count(ctx context.Context, err error) {
	if r := redisErrorReason(ctx, err); r != "" {
		m.errors.WithLabelValues(r).Inc()
	}
}

// redisErrorReason classifies a round trip's error; "" is not a failure:
// none, a missing key, a script the server does not cache yet (go-redis
// sends it in full next), a consumer group not created yet (the intake
// creates it and retries), or the caller giving up (its own cancellation is
// not Redis's fault; a deadline that passed is).
func redisErrorReason(ctx context.Context, err error) string {
	if err == nil || errors.Is(err, redis.Nil) || redis.HasErrorPrefix(err, "NOSCRIPT") ||
		redis.HasErrorPrefix(err, "NOGROUP") || redis.HasErrorPrefix(err, "BUSYGROUP") {
		return ""
	}
	if errors.Is(err, context.Canceled) || (ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled)) {
		return ""
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case redis.HasErrorPrefix(err, "MOVED"), redis.HasErrorPrefix(err, "ASK"),
		redis.HasErrorPrefix(err, "CLUSTERDOWN"), redis.HasErrorPrefix(err, "TRYAGAIN"):
		return "cluster"
	case redis.HasErrorPrefix(err, "LOADING"):
		return "loading"
	case redis.HasErrorPrefix(err, "READONLY"):
		return "readonly"
	case redis.HasErrorPrefix(err, "Error running script"), redis.HasErrorPrefix(err, "user_script"):
		return "script"
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, redis.ErrClosed) || strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "connection reset") {
		return "connection"
	}
	return "other"
}

// backlogger is an intake stream whose unfinished work can be measured.
type backlogger interface {
	Backlog(ctx context.Context) (redisstate.Backlog, error)
}

// intakeCollector reports, at scrape time, how far behind the intake
// streams are: entries not yet acknowledged, how many a consumer holds,
// and the age of the oldest. An age that grows is a daemon that stopped
// taking campaigns or triggers, whatever the counts say.
type intakeCollector struct {
	streams map[string]backlogger // by the stream label: intake, shard
	now     func() time.Time
	log     *slog.Logger

	entries, pending, age *prometheus.Desc
}

func newIntakeCollector(streams map[string]backlogger, now func() time.Time, log *slog.Logger) *intakeCollector {
	return &intakeCollector{
		streams: streams, now: now, log: log,
		entries: prometheus.NewDesc("notifyd_intake_entries", "Entries on the intake stream not yet acknowledged (acknowledged entries are deleted).", []string{"stream"}, nil),
		pending: prometheus.NewDesc("notifyd_intake_pending_entries", "Entries read by a consumer and not yet acknowledged (being worked on, or held by a dead consumer until reclaimed).", []string{"stream"}, nil),
		age:     prometheus.NewDesc("notifyd_intake_oldest_entry_age_seconds", "Age of the oldest unacknowledged entry (0 when the stream is empty): the intake's lag.", []string{"stream"}, nil),
	}
}

func (c *intakeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.pending
	ch <- c.age
}

func (c *intakeCollector) Collect(ch chan<- prometheus.Metric) {
	for name, s := range c.streams {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b, err := s.Backlog(ctx)
		cancel()
		if err != nil {
			c.log.Warn("measure intake backlog for metrics", "stream", name, "error", err)
			continue
		}
		age := 0.0
		if !b.Oldest.IsZero() {
			age = max(c.now().Sub(b.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(b.Entries), name)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending), name)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age, name)
	}
}

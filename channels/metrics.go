package channels

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Attempt results, the values of notifyd_channel_attempts_total{result}.
const (
	AttemptAccepted  = "accepted"
	AttemptTransient = "transient_error"
	AttemptPermanent = "permanent_error"
)

// laneRetry labels the retry delay queue in notifyd_channel_queue_depth.
const laneRetry = "retry"

// Metrics are the channel metric vectors. One set serves every pool on a
// registry: each pool resolves its own children once.
type Metrics struct {
	messages *prometheus.CounterVec
	attempts *prometheus.CounterVec
	depth    *prometheus.GaugeVec
	inflight *prometheus.GaugeVec
	latency  *prometheus.HistogramVec
}

// NewMetrics creates the channel metrics and registers them on reg (nil: not
// registered). Registering on a registry that already holds them reuses the
// existing vectors, so several pools can share one registry.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_channel_messages_total",
			Help: "Messages that left a channel's worker pool, by outcome and reason.",
		}, []string{"channel", "outcome", "reason"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "notifyd_channel_attempts_total",
			Help: "Per-message send attempts, by result.",
		}, []string{"channel", "result"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notifyd_channel_queue_depth",
			Help: "Messages waiting in a channel's pool, by lane (high, normal, retry).",
		}, []string{"channel", "lane"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "notifyd_channel_inflight",
			Help: "Messages taken by a worker (waiting for the account limiter or in Send) and not yet answered.",
		}, []string{"channel"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "notifyd_provider_latency_seconds",
			Help:    "Duration of one provider Send call (one batch).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"channel"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.messages = register(reg, m.messages, &err)
	m.attempts = register(reg, m.attempts, &err)
	m.depth = register(reg, m.depth, &err)
	m.inflight = register(reg, m.inflight, &err)
	m.latency = register(reg, m.latency, &err)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if *errp == nil {
		*errp = fmt.Errorf("register channel metrics: %w", err)
	}
	return c
}

// poolMetrics are one pool's resolved children. The hot path (accepted
// messages, attempts, gauges, latency) never looks up a label.
type poolMetrics struct {
	channel  string
	vec      *Metrics
	accepted prometheus.Counter
	attempt  [3]prometheus.Counter // accepted, transient, permanent
	depth    [NumLanes + 1]prometheus.Gauge
	inflight prometheus.Gauge
	latency  prometheus.Observer

	mu       sync.Mutex
	failures map[outcomeKey]prometheus.Counter
}

type outcomeKey struct {
	status OutcomeStatus
	reason Reason
}

func newPoolMetrics(m *Metrics, channel string) *poolMetrics {
	pm := &poolMetrics{
		channel:  channel,
		vec:      m,
		accepted: m.messages.WithLabelValues(channel, string(OutcomeAccepted), "none"),
		inflight: m.inflight.WithLabelValues(channel),
		latency:  m.latency.WithLabelValues(channel),
		failures: map[outcomeKey]prometheus.Counter{},
	}
	for i, r := range []string{AttemptAccepted, AttemptTransient, AttemptPermanent} {
		pm.attempt[i] = m.attempts.WithLabelValues(channel, r)
	}
	for l := Lane(0); l < NumLanes; l++ {
		pm.depth[l] = m.depth.WithLabelValues(channel, l.String())
	}
	pm.depth[NumLanes] = m.depth.WithLabelValues(channel, laneRetry)
	return pm
}

// failed counts one non-accepted outcome. Failures are rarer than acceptances
// and their label set is open (a provider may add a reason), so they are
// resolved lazily and cached.
func (pm *poolMetrics) failed(status OutcomeStatus, reason Reason) {
	k := outcomeKey{status, reason}
	pm.mu.Lock()
	c, ok := pm.failures[k]
	if !ok {
		c = pm.vec.messages.WithLabelValues(pm.channel, string(status), string(reason))
		pm.failures[k] = c
	}
	pm.mu.Unlock()
	c.Inc()
}

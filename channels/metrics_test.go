package channels_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

// metricValue finds one sample by name and labels in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func TestPoolMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var pools []*channels.Pool
	var outs []*channelstest.Outcomes
	for _, name := range []string{"apns", "fcm"} {
		ch := channelstest.NewScripted(name)
		ch.Script("dead", channelstest.Answer{Err: channels.Permanent(channels.ReasonDeadAddress, "Unregistered", errors.New("410"))})
		ch.Script("flaky", channelstest.Answer{Err: channels.Transient(channels.ReasonUnavailable, "503", 0, errors.New("503"))}, channelstest.Answer{})
		o := &channelstest.Outcomes{}
		// Two pools on one registry: the second reuses the first's vectors.
		p, err := channels.NewWorkerPool(ch, channels.PoolConfig{Outcomes: o, BackoffBase: 1000, BackoffMax: 1000}, channels.WithRegisterer(reg), channels.WithLogger(quiet()))
		if err != nil {
			t.Fatalf("pool %s: %v", name, err)
		}
		pools, outs = append(pools, p), append(outs, o)
	}
	p, o := pools[0], outs[0]
	if _, err := p.Submit(context.Background(), channels.LaneHigh, msg("1", "ok", "c"), msg("2", "ok", "c"), msg("3", "dead", "c"), msg("4", "flaky", "c")); err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(t, reg, "notifyd_channel_queue_depth", map[string]string{"channel": "apns", "lane": "high"}); !ok || v != 4 {
		t.Fatalf("queue depth before start = %v (%v), want 4", v, ok)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	o.WaitLen(t, 4, waitFor)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   float64
	}{
		{"accepted", "notifyd_channel_messages_total", map[string]string{"channel": "apns", "outcome": "accepted", "reason": "none"}, 3},
		{"dead address", "notifyd_channel_messages_total", map[string]string{"channel": "apns", "outcome": "dead_address", "reason": "dead_address"}, 1},
		{"accepted attempts", "notifyd_channel_attempts_total", map[string]string{"channel": "apns", "result": channels.AttemptAccepted}, 3},
		{"transient attempts", "notifyd_channel_attempts_total", map[string]string{"channel": "apns", "result": channels.AttemptTransient}, 1},
		{"permanent attempts", "notifyd_channel_attempts_total", map[string]string{"channel": "apns", "result": channels.AttemptPermanent}, 1},
		{"queue drained", "notifyd_channel_queue_depth", map[string]string{"channel": "apns", "lane": "high"}, 0},
		{"retry queue drained", "notifyd_channel_queue_depth", map[string]string{"channel": "apns", "lane": "retry"}, 0},
		{"nothing in flight", "notifyd_channel_inflight", map[string]string{"channel": "apns"}, 0},
		{"one latency sample per Send", "notifyd_provider_latency_seconds", map[string]string{"channel": "apns"}, 5},
		{"second pool registered too", "notifyd_channel_inflight", map[string]string{"channel": "fcm"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := metricValue(t, reg, tc.metric, tc.labels)
			if !ok || v != tc.want {
				t.Fatalf("%s%v = %v (found %v), want %v", tc.metric, tc.labels, v, ok, tc.want)
			}
		})
	}
	_ = pools[1].Close(context.Background())
}

func TestNewMetricsRejectsConflicts(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_channel_inflight", Help: "not a gauge vec"}))
	if _, err := channels.NewMetrics(reg); err == nil {
		t.Fatal("a conflicting collector was accepted")
	}
}

package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/channelstest"
)

// liveCampaign runs over SMS and a webhook that rejects every tenth user,
// throttled so the live view sees it in progress.
const liveCampaign = `{"id":"black-friday","name":"Black Friday","segment":"all","channels":["sms","webhook"],"throttle_per_s":250,
"content":{"sms":{"body":"Hi {{ profile.first_name | default: 'there' }}"},
"webhook":{"url":"https://hooks.example.com/bf","body":{"user":"{{ profile.id }}"}}}}`

// startLiveDaemon runs a daemon with SMS and webhook channels and returns
// its base URL and a stop function.
func startLiveDaemon(t *testing.T) (string, func() error) {
	t.Helper()
	cfg, err := ParseConfig([]byte("shard:\n  path: " + writeTestShard(t, 300) + "\nadmin:\n  token: " + testToken + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hook := &channelstest.FuncChannel{ChannelName: channels.Webhook, SendFunc: func(_ context.Context, batch []*channels.Message) []channels.Result {
		res := make([]channels.Result, len(batch))
		for i, m := range batch {
			if m.UserKey%10 == 0 {
				res[i].Err = channels.Permanent(channels.ReasonRejected, "422", errors.New("unprocessable"))
			}
		}
		return res
	}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := New(context.Background(), cfg, Deps{
		Channels: map[string]ChannelSpec{
			channels.SMS:     {Channel: &countingChannel{name: channels.SMS}, Pool: PoolConfig{Workers: 2, BatchSize: 10}},
			channels.Webhook: {Channel: hook, Pool: PoolConfig{Workers: 2, BatchSize: 1}},
		},
		Logger: logger, Listener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	var stopErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				stopErr = errors.New("daemon did not stop within 30s")
			}
		}
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + ln.Addr().String(), stop
}

func authed(t *testing.T, method, url string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestLiveViewEndToEnd follows a campaign on /v1/events from start to end,
// checks /metrics carries what the Grafana dashboard queries, and that a
// daemon with open streams still shuts down promptly.
//
// NOTIFYD_RECORD_EVENTS=path writes the raw stream to path: that is how
// daemon/tailview/testdata/events.sse was recorded.
func TestLiveViewEndToEnd(t *testing.T) {
	base, stop := startLiveDaemon(t)
	stream := authed(t, "GET", base+"/v1/events", nil)
	defer stream.Body.Close()
	if stream.StatusCode != 200 {
		t.Fatalf("events: %d", stream.StatusCode)
	}
	var raw bytes.Buffer
	evs := readEvents(bufio.NewReader(io.TeeReader(stream.Body, &raw)))
	nextSnapshot(t, evs) // the immediate one: nothing running yet

	resp := authed(t, "POST", base+"/v1/campaigns", []byte(liveCampaign))
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	var last Snapshot
	sawRunning := false
	for {
		last = nextSnapshot(t, evs)
		c, ok := last.Campaigns["black-friday"]
		if ok && c.Status == "running" && c.Settled > 0 {
			sawRunning = true
		}
		if ok && c.Status == "completed" {
			break
		}
	}
	c := last.Campaigns["black-friday"]
	tests := []struct {
		name      string
		got, want any
	}{
		{"seen in progress", sawRunning, true},
		{"positions", c.Positions, uint64(600)},
		{"settled", c.Settled, int64(600)},
		{"progress", *c.Progress, 1.0},
		{"sent + failed + skipped = settled", c.Sent + c.FailedTotal() + c.SkippedTotal(), c.Settled},
		{"webhook rejections seen", c.ByChannel[channels.Webhook].Failed["provider_rejected"] > 0, true},
		{"channel view agrees on sms", last.Channels[channels.SMS].Sent, c.ByChannel[channels.SMS].Sent},
		{"channel view agrees on webhook rejections", last.Channels[channels.Webhook].Failed["rejected"], c.ByChannel[channels.Webhook].Failed["provider_rejected"]},
		{"nothing queued at the end", last.Channels[channels.SMS].QueueDepth + last.Channels[channels.Webhook].QueueDepth, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %v, want %v", tc.got, tc.want)
			}
		})
	}

	t.Run("metrics the dashboard queries are served", func(t *testing.T) {
		resp := authed(t, "GET", base+"/metrics", nil)
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		served := map[string]bool{}
		for name, mf := range families {
			served[name] = true
			if mf.GetType().String() == "HISTOGRAM" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					served[name+s] = true
				}
			}
		}
		queried := dashboardMetrics(t, "../deploy/grafana-notifyd.json")
		if len(queried) < 8 {
			t.Fatalf("the dashboard queries only %v", queried)
		}
		for _, name := range queried {
			if !served[name] {
				t.Errorf("the dashboard queries %s, which the daemon does not serve", name)
			}
		}
		for _, name := range []string{"notifyd_campaign_progress_ratio", "notifyd_campaign_recipients_total", "notifyd_campaigns", "notifyd_shard_rows", "notifyd_flow_delayed_triggers"} {
			if !slices.Contains(queried, name) {
				t.Errorf("the dashboard does not show %s", name)
			}
		}
	})

	if path := os.Getenv("NOTIFYD_RECORD_EVENTS"); path != "" {
		if err := os.WriteFile(path, raw.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("shutdown with an open stream: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v with a stream open", d)
	}
	for range evs { // the stream must end, not hang
	}
}

// dashboardMetrics returns the notifyd_* metric names a Grafana dashboard's
// queries use (panel targets and template variables).
func dashboardMetrics(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not JSON: %v", path, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition" || k == "query") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	name := regexp.MustCompile(`\bnotifyd_[a-zA-Z0-9_]+`)
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			seen[n] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(exprs) == 0 || strings.TrimSpace(strings.Join(exprs, "")) == "" {
		t.Fatalf("%s has no queries", path)
	}
	return out
}

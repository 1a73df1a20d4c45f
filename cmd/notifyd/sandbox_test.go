package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/daemon"
)

func TestSandboxHelpExitsZero(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"sandbox", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("notifyd sandbox --help exited %d, want 0; stderr:\n%s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "-fault") || !strings.Contains(out.String(), "-port-base") {
		t.Errorf("--help does not list -fault and -port-base on stdout:\n%s", out.String())
	}
	if code := run([]string{"sandbox", "--fault", "channel=sms"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("a fault with no effect exited %d, want 2 (usage error)", code)
	}
}

func TestParseFaultFlag(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		latency bool
		want    sandbox.Fault
		channel string
		wantErr string
	}{
		{name: "status with times", in: "channel=sms,match=+1555*,status=500,times=3",
			channel: "sms", want: sandbox.Fault{Match: "+1555*", Status: 500, Times: 3}},
		{name: "latency flag", in: "channel=webhook,d=2ms", latency: true,
			channel: "webhook", want: sandbox.Fault{Latency: 2 * time.Millisecond}},
		{name: "every key", in: "channel=apns,match=dead*,status=410,reason=Unregistered,retry_after=2s,latency=1ms,drop=false,times=1",
			channel: "apns", want: sandbox.Fault{Match: "dead*", Status: 410, Reason: "Unregistered", RetryAfter: 2 * time.Second, Latency: time.Millisecond, Times: 1}},
		{name: "drop", in: "channel=all,drop=true", channel: "all", want: sandbox.Fault{Drop: true}},
		{name: "no channel", in: "status=500", wantErr: "needs channel="},
		{name: "no effect", in: "channel=sms,match=x", wantErr: "needs status, latency or drop"},
		{name: "latency without d", in: "channel=sms,status=500", latency: true, wantErr: "needs d="},
		{name: "unknown key", in: "channel=sms,colour=red", wantErr: `unknown key "colour"`},
		{name: "bad duration", in: "channel=sms,d=fast", latency: true, wantErr: "parse latency"},
		{name: "negative times", in: "channel=sms,status=500,times=-1", wantErr: "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := parseFaultFlag(tc.in, tc.latency)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFaultFlag(%q) error %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFaultFlag(%q): %v", tc.in, err)
			}
			got, err := spec.fault()
			if err != nil {
				t.Fatal(err)
			}
			if spec.Channel != tc.channel || got != tc.want {
				t.Errorf("parseFaultFlag(%q) = %s %+v, want %s %+v", tc.in, spec.Channel, got, tc.channel, tc.want)
			}
		})
	}
}

// sandboxClient talks to the control endpoint.
type sandboxClient struct {
	base string
	http *http.Client
}

func newSandboxClient(base string) *sandboxClient {
	return &sandboxClient{base: base, http: &http.Client{Timeout: 5 * time.Second}}
}

func (c *sandboxClient) call(t testing.TB, method, path string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decode %s %s: %v: %s", method, path, err, b)
		}
	}
}

func (c *sandboxClient) stats(t testing.TB) map[string]sandbox.ChannelStats {
	t.Helper()
	var v statsView
	c.call(t, http.MethodGet, "/stats", nil, &v)
	return v.Channels
}

func (c *sandboxClient) subscriptions(t testing.TB, n int, name string) []channels.Subscription {
	t.Helper()
	var v struct {
		Subscriptions []channels.Subscription `json:"subscriptions"`
	}
	c.call(t, http.MethodPost, "/webpush/subscriptions", map[string]any{"count": n, "name": name}, &v)
	if len(v.Subscriptions) != n {
		t.Fatalf("minted %d web push subscriptions, want %d", len(v.Subscriptions), n)
	}
	return v.Subscriptions
}

// loadSandboxConfig loads the fragment with the daemon's own loader, as
// `notifyd serve` would: laid over examples/local.yaml.
func loadSandboxConfig(t *testing.T, fragment string) *daemon.Config {
	t.Helper()
	cfg, err := daemon.LoadConfig("../../examples/local.yaml", fragment)
	if err != nil {
		b, _ := os.ReadFile(fragment)
		t.Fatalf("load the sandbox fragment with the daemon's loader: %v\n%s", err, b)
	}
	return cfg
}

// TestSandboxCountsWhatTheRealSendersSend starts the sandbox in-process,
// builds every real channel sender from its config fragment through the
// daemon's own config loader and channel builder, sends through each, and
// checks /stats, including a re-send counted as a duplicate.
func TestSandboxCountsWhatTheRealSendersSend(t *testing.T) {
	dir := t.TempDir()
	s, err := startSandbox(sandboxOptions{Dir: dir, Ports: map[string]int{}, Profiles: 10, Faults: []faultSpec{
		{Channel: "sms", Match: "+1555*", Status: 500, Times: 1},
		{Channel: "webhook", Latency: "1ms"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctl := newSandboxClient(s.ControlURL())

	cfg := loadSandboxConfig(t, filepath.Join(dir, sandboxFragment))
	specs, err := daemon.BuildChannels(cfg.Channels, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("build the channels of the sandbox fragment: %v", err)
	}
	if len(specs) != 6 {
		t.Fatalf("fragment configures %d channels, want 6", len(specs))
	}
	t.Cleanup(func() {
		for _, sp := range specs {
			if c, ok := sp.Channel.(io.Closer); ok {
				_ = c.Close()
			}
		}
	})
	subs := ctl.subscriptions(t, 2, "stats")

	deadline := time.Now().Add(time.Hour)
	// Each channel gets two messages, then the first again (same key, same
	// content): what a re-send after a crash looks like on the wire.
	msg := func(ch string, i int) *channels.Message {
		key := "sandbox-test/" + ch + "/" + string(rune('a'+i))
		m := &channels.Message{ID: key, IdempotencyKey: key, Campaign: "sandbox-test", UserID: "u-" + string(rune('a'+i)), Deadline: deadline}
		switch ch {
		case channels.APNs:
			m.To = strings.Repeat(string(rune('a'+i)), 64)
			m.Push = &channels.Push{Title: "hi", Body: "push " + m.UserID}
		case channels.FCM:
			m.To = "inst" + string(rune('a'+i)) + ":APA91b" + strings.Repeat("x", 40)
			m.Push = &channels.Push{Title: "hi", Body: "push " + m.UserID}
		case channels.Email:
			m.To = m.UserID + "@example.com"
			m.Mail = &channels.Mail{From: "Sandbox <s@notifyd.test>", Subject: "hi", Text: "mail " + m.UserID}
		case channels.SMS:
			m.To = "+1415555010" + string(rune('0'+i))
			m.Text = &channels.Text{Body: "sms " + m.UserID}
		case channels.WebPush:
			m.Subscription = &subs[i]
			m.To = subs[i].Endpoint
			m.WebPush = &channels.WebPushContent{Title: "hi", Body: "web " + m.UserID}
		case channels.Webhook:
			m.To = m.UserID
			m.Hook = &channels.Hook{Body: []byte(`{"user":"` + m.UserID + `"}`)}
		}
		return m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, sp := range specs {
		for _, i := range []int{0, 1, 0} {
			m := msg(name, i)
			if res := sp.Channel.Send(ctx, []*channels.Message{m}); len(res) != 1 || res[0].Err != nil {
				t.Fatalf("%s: send %s: %+v", name, m.ID, res)
			}
		}
	}
	// The SMS fault refuses the first send to +1555*: received, not accepted.
	refused := &channels.Message{ID: "refused", To: "+15550001234", Text: &channels.Text{Body: "x"}, Deadline: deadline}
	if res := specs[channels.SMS].Channel.Send(ctx, []*channels.Message{refused}); res[0].Err == nil {
		t.Errorf("sms to +1555*: the status=500 fault did not refuse it")
	}

	want := sandbox.ChannelStats{Received: 3, Accepted: 3, Distinct: 2, Duplicates: 1, MaxCopies: 2}
	got := ctl.stats(t)
	for _, name := range tallyNames {
		g := got[name]
		w := want
		if name == channels.SMS {
			w.Received++
		}
		if g.Received != w.Received || g.Accepted != w.Accepted || g.Distinct != w.Distinct || g.Duplicates != w.Duplicates || g.MaxCopies != w.MaxCopies {
			t.Errorf("%s: stats %+v, want received %d accepted %d distinct %d duplicates %d max_copies %d",
				name, g, w.Received, w.Accepted, w.Distinct, w.Duplicates, w.MaxCopies)
		}
		if len(g.Repeated) != 1 || g.Repeated[0].Copies != 2 {
			t.Errorf("%s: repeated %+v, want one handle with 2 copies", name, g.Repeated)
		}
	}
	// The keyed handles are the daemon's idempotency key as the sender puts it on the wire.
	if h := got[channels.Webhook].Repeated[0].Handle; h != "sandbox-test/webhook/a" {
		t.Errorf("webhook handle %q, want the Idempotency-Key sandbox-test/webhook/a", h)
	}
	if h := got[channels.Email].Repeated[0].Handle; !strings.Contains(h, "sandbox-test/email/a@notifyd.test") {
		t.Errorf("email handle %q, want the Message-ID <sandbox-test/email/a@notifyd.test>", h)
	}

	var recent struct {
		Received []receivedView `json:"received"`
	}
	ctl.call(t, http.MethodGet, "/received?channel=apns&limit=2", nil, &recent)
	if len(recent.Received) != 2 || recent.Received[1].Address != strings.Repeat("a", 64) {
		t.Errorf("GET /received?channel=apns&limit=2 = %+v, want the last two pushes", recent.Received)
	}

	// Faults at run time: a status fault on APNs, then cleared.
	ctl.call(t, http.MethodPost, "/faults", faultsRequest{Add: []faultSpec{{Channel: "apns", Match: "cc*", Status: 410, Reason: "Unregistered"}}}, nil)
	m := msg(channels.APNs, 2)
	if res := specs[channels.APNs].Channel.Send(ctx, []*channels.Message{m}); res[0].Err == nil {
		t.Errorf("apns after POST /faults: accepted, want 410")
	}
	ctl.call(t, http.MethodPost, "/faults", faultsRequest{Clear: []string{"apns"}}, nil)
	if res := specs[channels.APNs].Channel.Send(ctx, []*channels.Message{m}); res[0].Err != nil {
		t.Errorf("apns after clearing its faults: %v", res[0].Err)
	}

	ctl.call(t, http.MethodPost, "/reset", nil, nil)
	for name, g := range ctl.stats(t) {
		if g.Received != 0 || g.Distinct != 0 || g.Duplicates != 0 || len(g.Repeated) != 0 {
			t.Errorf("%s after POST /reset: %+v, want zeros", name, g)
		}
	}
}

// tallyNames are the channels /stats reports.
var tallyNames = []string{channels.APNs, channels.FCM, channels.Email, channels.SMS, channels.WebPush, channels.Webhook}

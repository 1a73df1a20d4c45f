package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/store/deliverylog"
)

const (
	trackingSecret = "tracking-secret-0123456789abcdef"
	twilioAuth     = "0123456789abcdef0123456789abcdef"
	twilioAccount  = "AC0123456789abcdef0123456789abcdef"
)

// engageCampaign sends email with a link, an unsubscribe link and a
// locale variant, and SMS, with every kind of tracking on.
const engageCampaign = `{"id":"engage-e2e","segment":"all","channels":["email","sms"],
 "tracking":{"opens":true,"clicks":true,"unsubscribe":true},
 "content":{"email":{"from":"News <news@example.com>","subject":"Autumn news",
   "html":"<html><body><p>Hi {{ profile.first_name | default: 'there' }}, <a href=\"https://shop.example.com/fall?x=1&y=2\">shop</a></p><p><a href=\"notifyd:unsubscribe\">unsubscribe</a></p></body></html>",
   "text":"Hi, see https://shop.example.com/fall"},
  "sms":{"body":"Autumn sale"},
  "locales":{"de":{"email":{"subject":"Herbst"}}}}}`

// TestTrackingEndToEnd runs a tracked campaign through the daemon as serve
// wires it (BuildChannels with the tracking links) into the SMTP and Twilio
// sandboxes: it loads a received mail's pixel twice, follows its link and
// one-click unsubscribes; Twilio posts signed status callbacks (one
// recipient in four undelivered). Every event must land in the delivery
// log, in the campaign's engagement counts (unique and total), and the
// unsubscribe in the feedback stream.
func TestTrackingEndToEnd(t *testing.T) {
	smtpSB, err := sandbox.NewSMTP(sandbox.SMTPOptions{TLS: sandbox.SMTPNoTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smtpSB.Close() })
	undelivered := func(to string) bool { return strings.HasSuffix(to, "1") || strings.HasSuffix(to, "5") }
	tw, err := sandbox.NewTwilio(sandbox.TwilioOptions{AccountSID: twilioAccount, AuthToken: twilioAuth, StatusCallbacks: true,
		FinalStatus: func(to string) (string, string) {
			if undelivered(to) {
				return "undelivered", "30003"
			}
			return "", ""
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tw.Close() })
	ca := filepath.Join(t.TempDir(), "twilio-ca.pem")
	if err := os.WriteFile(ca, tw.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + tln.Addr().String() + "/t"
	logDir := t.TempDir()
	state := ""
	redisURL := os.Getenv("REDIS_URL")
	var prefix string
	if redisURL != "" {
		prefix = redisPrefix(t, redisURL)
		state = fmt.Sprintf("redis:\n  url: %s\n  prefix: %q\n", redisURL, prefix)
	}
	yaml := fmt.Sprintf(`shard:
  path: %s
admin:
  token: %s
%sdelivery_log:
  enabled: true
  dir: %s
  fsync: always
tracking:
  listen: %s
  base_url: %s
  secret: %s
channels:
  email:
    host: %s
    port: %d
    tls_mode: none
    auth: none
    pool: {workers: 2, batch_size: 10}
  sms:
    account_sid: %s
    auth_token: %s
    from: "+15005550006"
    base_url: %s
    tls: {ca_file: %s}
    pool: {workers: 2, batch_size: 10}
`, writeTestShard(t, 60), testToken, state, logDir, tln.Addr().String(), base, trackingSecret, smtpSB.Host(), smtpSB.Port(),
		twilioAccount, twilioAuth, tw.URL(), ca)
	cfg, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	links, err := cfg.Tracking.Links(nil)
	if err != nil {
		t.Fatal(err)
	}
	chans, err := BuildChannels(cfg.Channels, logger, WithTracking(links))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Deps{Channels: chans, Logger: logger, Listener: ln, TrackingListener: tln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon stopped with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	td := &testDaemon{base: "http://" + ln.Addr().String()}

	if status, body := td.do(t, "POST", "/v1/campaigns", testToken, "application/json", []byte(engageCampaign)); status != 201 {
		t.Fatalf("create: %d %v", status, body)
	}
	waitFor := func(what string, ok func(map[string]any) bool) map[string]any {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, body := td.do(t, "GET", "/v1/campaigns/engage-e2e", testToken, "", nil)
			if ok(body) {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: never; status %v\nlog:\n%s", what, body, logBuf.String())
			}
			time.Sleep(20 * time.Millisecond) // polling the API
		}
	}
	waitFor("campaign completed", func(b map[string]any) bool { return b["status"] == "completed" })

	mails := smtpSB.Messages()
	texts := tw.Recorder.All()
	if len(mails) < 2 || len(texts) < 2 {
		t.Fatalf("%d mails and %d texts received; want at least 2 of each", len(mails), len(texts))
	}
	wantUndelivered := 0
	for _, r := range texts {
		if undelivered(r.Address) {
			wantUndelivered++
		}
	}
	if wantUndelivered == 0 || wantUndelivered == len(texts) {
		t.Fatalf("test shard gives %d undelivered of %d texts; want some of each", wantUndelivered, len(texts))
	}

	// The first mail: pixel twice (a reload), its link, one-click unsubscribe.
	m := mails[0]
	pixel := regexp.MustCompile(`<img src="(` + regexp.QuoteMeta(base) + `/o/[A-Za-z0-9_-]+)"`).FindStringSubmatch(m.HTML)
	click := regexp.MustCompile(`href="(` + regexp.QuoteMeta(base) + `/c/[^"]+)"`).FindStringSubmatch(m.HTML)
	unsubPage := regexp.MustCompile(`href="(` + regexp.QuoteMeta(base) + `/u/[^"]+)"`).FindStringSubmatch(m.HTML)
	if pixel == nil || click == nil || unsubPage == nil {
		t.Fatalf("mail HTML lacks the pixel, the click link or the unsubscribe link:\n%s", m.HTML)
	}
	listUnsub := strings.Trim(m.Header.Get("List-Unsubscribe"), "<>")
	if listUnsub != unsubPage[1] || m.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Fatalf("List-Unsubscribe %q / %q, want <%s> with one-click", m.Header.Get("List-Unsubscribe"), m.Header.Get("List-Unsubscribe-Post"), unsubPage[1])
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	fetch := func(method, u string, body io.Reader) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, u, body)
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for range 2 {
		if resp := fetch("GET", pixel[1], nil); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/gif" {
			t.Fatalf("pixel: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp := fetch("GET", strings.ReplaceAll(click[1], "&amp;", "&"), nil); resp.StatusCode != 302 || resp.Header.Get("Location") != "https://shop.example.com/fall?x=1&y=2" {
		t.Fatalf("click: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := fetch("POST", listUnsub, strings.NewReader("List-Unsubscribe=One-Click")); resp.StatusCode != 200 {
		t.Fatalf("one-click unsubscribe: %d", resp.StatusCode)
	}
	// The second mail is opened once.
	pixel2 := regexp.MustCompile(`<img src="(` + regexp.QuoteMeta(base) + `/o/[A-Za-z0-9_-]+)"`).FindStringSubmatch(mails[1].HTML)
	if pixel2 == nil || pixel2[1] == pixel[1] {
		t.Fatalf("second mail's pixel %v (first %s)", pixel2, pixel[1])
	}
	fetch("GET", pixel2[1], nil)

	smsN := len(texts)
	st := waitFor("status callbacks counted", func(b map[string]any) bool {
		e, _ := b["engagement"].(map[string]any)
		s, _ := e["sms"].(map[string]any)
		n, _ := s["delivered"].(float64)
		u, _ := s["undelivered"].(float64)
		return int(n+u) >= smsN
	})
	eng := st["engagement"].(map[string]any)
	want := map[string]map[string]float64{
		"email": {"opened": 2, "opened_total": 3, "clicked": 1, "clicked_total": 1, "unsubscribed": 1, "unsubscribed_total": 1},
		"sms": {"delivered": float64(smsN - wantUndelivered), "delivered_total": float64(smsN - wantUndelivered),
			"undelivered": float64(wantUndelivered), "undelivered_total": float64(wantUndelivered)},
	}
	if fmt.Sprint(eng) != fmt.Sprint(want) {
		t.Fatalf("engagement %v, want %v", eng, want)
	}
	t.Logf("%d mails, %d texts (%d undelivered); engagement %v", len(mails), smsN, wantUndelivered, eng)
	stop() // seals the log: every record is on disk

	var recs []deliverylog.Record
	segs, err := deliverylog.ListSegments(logDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if _, err := deliverylog.ScanFile(s.Path, true, func(r *deliverylog.Record) error { recs = append(recs, *r); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	events := map[string]int{}
	german := 0
	for _, m := range mails {
		if m.Header.Get("Subject") == "Herbst" {
			german++
		}
	}
	var clicked, unsub *deliverylog.Record
	for i := range recs {
		r := &recs[i]
		events[r.Event+"/"+r.Channel+"/"+r.Outcome]++
		switch {
		case r.Event == "outcome":
			if r.SentAt == 0 || r.SentAt < r.QueuedAt || r.SentAt > r.AnsweredAt {
				t.Fatalf("outcome record's sent_at %d outside queued %d .. answered %d", r.SentAt, r.QueuedAt, r.AnsweredAt)
			}
			if r.Locale == "de" && r.Channel == "email" {
				german--
			} else if r.Locale != "" && r.Locale != "de" {
				t.Fatalf("locale %q", r.Locale)
			}
		case r.Outcome == "clicked":
			clicked = r
		case r.Outcome == "unsubscribed":
			unsub = r
		}
	}
	t.Logf("records %v", events)
	if german != 0 {
		t.Fatalf("mails in German and email records of locale de differ by %d", german)
	}
	wantEvents := map[string]int{
		"outcome/email/accepted": len(mails), "outcome/sms/accepted": smsN,
		"engagement/email/opened": 3, "engagement/email/clicked": 1, "engagement/email/unsubscribed": 1,
		"delivery/sms/delivered": smsN - wantUndelivered, "delivery/sms/undelivered": wantUndelivered,
	}
	if fmt.Sprint(events) != fmt.Sprint(wantEvents) {
		t.Fatalf("delivery log events %v, want %v", events, wantEvents)
	}
	if clicked.Link != "https://shop.example.com/fall?x=1&y=2" || clicked.Campaign != "engage-e2e" || clicked.Kind != "campaign" || clicked.UserID == "" {
		t.Fatalf("clicked record %+v", clicked)
	}
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(unsub.Address) || unsub.UserID != clicked.UserID {
		t.Fatalf("unsubscribed record %+v (address hashed, the first mail's user %s)", unsub, clicked.UserID)
	}
	if redisURL != "" {
		opt, _ := redis.ParseURL(redisURL)
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		fb, err := rdb.XRange(context.Background(), prefix+"feedback", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range fb {
			if e.Values["reason"] == "unsubscribed" {
				n++
				if e.Values["user"] != unsub.UserID || e.Values["channel"] != "email" || !strings.Contains(fmt.Sprint(e.Values["address"]), "@") {
					t.Fatalf("feedback %v", e.Values)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d unsubscribe feedback records, want 1: %v", n, fb)
		}
	}
}

func TestTrackingConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"secret without a listener", "tracking:\n  secret: " + trackingSecret + "\n", "tracking.listen: required"},
		{"no base url", "tracking:\n  listen: ':8090'\n  secret: " + trackingSecret + "\n", "tracking.base_url: required"},
		{"base url with a query", "tracking:\n  listen: ':8090'\n  base_url: https://t.example.com/?a=1\n  secret: " + trackingSecret + "\n", "tracking.base_url"},
		{"short secret", "tracking:\n  listen: ':8090'\n  base_url: https://t.example.com\n  secret: short\n", "tracking.secret: required: at least 16 bytes"},
		{"bad listen", "tracking:\n  listen: '8090'\n  base_url: https://t.example.com\n  secret: " + trackingSecret + "\n", "tracking.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte("shard:\n  path: /x\nadmin:\n  token: " + testToken + "\n" + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	cfg, err := ParseConfig([]byte("shard:\n  path: /x\nadmin:\n  token: " + testToken + "\ntracking:\n  listen: ':8090'\n  base_url: https://t.example.com/n\n  secret: " + trackingSecret + "\n"))
	if err != nil {
		t.Fatalf("valid tracking config refused: %v", err)
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v", cfg.Tracking, cfg.Tracking, cfg.Tracking), trackingSecret) {
		t.Fatal("the tracking secret prints")
	}
}

package tracking

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	twclient "github.com/twilio/twilio-go/client"
)

const twilioToken = "0123456789abcdef0123456789abcdef"

type recorded struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorded) Record(_ context.Context, ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return nil
}

func (r *recorded) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.evs
	r.evs = nil
	return out
}

type fixture struct {
	srv   *httptest.Server
	links *Links
	rec   *recorded
	reg   *prometheus.Registry
	ref   Ref
	tok   string
	now   time.Time
}

// newFixture serves the handler with the test server's own URL (plus a
// path prefix) as the public base URL, as a daemon behind no proxy would.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{rec: &recorded{}, reg: prometheus.NewRegistry(), now: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)}
	var h http.Handler
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(f.srv.Close)
	s := testSigner(t, "0123456789abcdef-key-one", &f.now)
	var err error
	if f.links, err = NewLinks(f.srv.URL+"/t", s); err != nil {
		t.Fatal(err)
	}
	th, err := NewHandler(Config{Links: f.links, Recorder: f.rec, TwilioAuthToken: twilioToken, Now: func() time.Time { return f.now }, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	h = th
	f.ref = Ref{Campaign: "spring", MessageID: "spring:00000000000000ff:email:0", UserID: "u-1", UserKey: 255, Channel: "email"}
	f.tok = f.links.Token(f.ref)
	return f
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, u string) *http.Response {
	t.Helper()
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestClick(t *testing.T) {
	f := newFixture(t)
	const target = "https://shop.example.com/autumn?a=1&b=2"
	good := f.links.ClickURL(f.tok, "spring", 1, target)
	u, _ := url.Parse(good)
	parts := strings.Split(u.Path, "/") // "", "t", "c", tok, link, sig
	withQuery := func(path string, q string) string { return f.srv.URL + path + "?" + q }
	evilTok := f.links.Token(Ref{Campaign: "evil", MessageID: "evil:1:email:0", Channel: "email"})
	cases := []struct {
		name     string
		url      string
		want     int
		location string
		events   int
	}{
		{name: "signed link redirects", url: good, want: http.StatusFound, location: target, events: 1},
		{name: "open redirect: target replaced", url: withQuery(u.Path, "u="+url.QueryEscape("https://evil.example.net/")), want: http.StatusForbidden},
		{name: "open redirect: target extended", url: withQuery(u.Path, "u="+url.QueryEscape(target+"&next=//evil.example.net")), want: http.StatusForbidden},
		{name: "open redirect: no target", url: f.srv.URL + u.Path, want: http.StatusForbidden},
		{name: "link number changed", url: withQuery(strings.Join(append(parts[:4:4], "2", parts[5]), "/"), u.RawQuery), want: http.StatusForbidden},
		{name: "tampered token", url: withQuery(strings.Join(append(parts[:3:3], flip(parts[3], 12), parts[4], parts[5]), "/"), u.RawQuery), want: http.StatusForbidden},
		{name: "link signed for another campaign's token", url: withQuery(strings.Join(append(parts[:3:3], evilTok, parts[4], parts[5]), "/"), u.RawQuery), want: http.StatusForbidden},
		{name: "garbage token", url: withQuery(strings.Join(append(parts[:3:3], "xyz", parts[4], parts[5]), "/"), u.RawQuery), want: http.StatusNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := get(t, c.url)
			if resp.StatusCode != c.want {
				t.Fatalf("GET %s: %d, want %d", c.url, resp.StatusCode, c.want)
			}
			if loc := resp.Header.Get("Location"); loc != c.location {
				t.Fatalf("Location %q, want %q", loc, c.location)
			}
			evs := f.rec.take()
			if len(evs) != c.events {
				t.Fatalf("%d events recorded, want %d", len(evs), c.events)
			}
			if c.events == 1 {
				ev := evs[0]
				want := f.ref
				want.Issued = f.now
				if ev.Type != Clicked || ev.Ref != want || ev.Link != 1 || ev.URL != target || !ev.At.Equal(f.now) {
					t.Fatalf("event %+v", ev)
				}
			}
		})
	}
}

func TestOpenPixelAndUnsubscribe(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.links.OpenURL(f.tok))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/gif" || resp.Header.Get("Cache-Control") != "no-store" || string(body) != string(pixel) {
		t.Fatalf("pixel: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if evs := f.rec.take(); len(evs) != 1 || evs[0].Type != Opened {
		t.Fatalf("pixel events %+v", evs)
	}

	// GET shows the confirmation page and records nothing (mail scanners
	// fetch links); the one-click POST records one unsubscribe.
	if resp := get(t, f.links.UnsubscribeURL(f.tok)); resp.StatusCode != 200 {
		t.Fatalf("GET unsubscribe: %d", resp.StatusCode)
	}
	if evs := f.rec.take(); len(evs) != 0 {
		t.Fatalf("GET unsubscribed: %+v", evs)
	}
	resp, err = http.Post(f.links.UnsubscribeURL(f.tok), "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST unsubscribe: %d", resp.StatusCode)
	}
	if evs := f.rec.take(); len(evs) != 1 || evs[0].Type != Unsubscribed || evs[0].Ref.MessageID != f.ref.MessageID {
		t.Fatalf("POST unsubscribe events %+v", evs)
	}
	if resp := get(t, f.links.UnsubscribeURL(flip(f.tok, 12))); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered unsubscribe: %d", resp.StatusCode)
	}
	if got := testutil.ToFloat64(testutilCounter(t, f.reg, "notifyd_engagement_events_total")); got != 2 {
		t.Fatalf("notifyd_engagement_events_total = %v, want 2", got)
	}
}

// twilioSignature computes X-Twilio-Signature as Twilio documents it:
// base64(HMAC-SHA1(auth token, URL + every POST parameter's name and value
// sorted by name)).
func twilioSignature(authToken, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := fullURL
	for _, k := range keys {
		s += k + form.Get(k)
	}
	m := hmac.New(sha1.New, []byte(authToken))
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestTwilioStatusCallback(t *testing.T) {
	f := newFixture(t)
	ref := Ref{Campaign: "spring", MessageID: "spring:00000000000000ff:sms:0", UserID: "u-1", UserKey: 255, Channel: "sms"}
	cb := f.links.StatusCallbackURL(f.links.Token(ref))
	form := func(status, code string) url.Values {
		v := url.Values{"MessageSid": {"SM0123456789abcdef0123456789abcdef"}, "MessageStatus": {status}, "AccountSid": {"AC0123456789abcdef0123456789abcdef"}, "To": {"+15005550006"}}
		if code != "" {
			v.Set("ErrorCode", code)
		}
		return v
	}
	cases := []struct {
		name   string
		form   url.Values
		sig    func(url.Values) string
		want   int
		event  EventType
		reason string
	}{
		{name: "delivered", form: form("delivered", ""), want: 204, event: Delivered},
		{name: "undelivered", form: form("undelivered", "30003"), want: 204, event: Undelivered, reason: "undelivered"},
		{name: "failed", form: form("failed", "30008"), want: 204, event: Undelivered, reason: "failed"},
		{name: "sent is not final", form: form("sent", ""), want: 204},
		{name: "bad signature", form: form("delivered", ""), sig: func(url.Values) string { return "AAAAAAAAAAAAAAAAAAAAAAAAAAA=" }, want: 403},
		{name: "signed with another token", form: form("delivered", ""), sig: func(v url.Values) string { return twilioSignature("another-auth-token-0123456789abcd", cb, v) }, want: 403},
		{name: "parameter changed after signing", form: form("failed", ""), sig: func(url.Values) string { return twilioSignature(twilioToken, cb, form("delivered", "")) }, want: 403},
		{name: "no signature", form: form("delivered", ""), sig: func(url.Values) string { return "" }, want: 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sig := twilioSignature(twilioToken, cb, c.form)
			if c.sig != nil {
				sig = c.sig(c.form)
			} else {
				// The expectation agrees with twilio-go's own validator.
				v := twclient.NewRequestValidator(twilioToken)
				if !v.ValidateBody(cb, []byte(c.form.Encode()), sig) {
					t.Fatal("twilio-go's validator refuses the test's signature")
				}
			}
			req, _ := http.NewRequest(http.MethodPost, cb, strings.NewReader(c.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Twilio-Signature", sig)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
			evs := f.rec.take()
			if c.event == "" {
				if len(evs) != 0 {
					t.Fatalf("recorded %+v", evs)
				}
				return
			}
			if len(evs) != 1 || evs[0].Type != c.event || evs[0].Reason != c.reason || evs[0].Code != c.form.Get("ErrorCode") ||
				evs[0].ProviderID != "SM0123456789abcdef0123456789abcdef" || evs[0].Ref.MessageID != ref.MessageID {
				t.Fatalf("recorded %+v", evs)
			}
		})
	}
}

func TestAppendHTML(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	l, err := NewLinks("https://t.example.com", testSigner(t, "0123456789abcdef-key-one", &now))
	if err != nil {
		t.Fatal(err)
	}
	body := `<html><head><link rel="stylesheet" href="https://fonts.example.com/a.css"></head><body class="x"><p>Hi <a href="https://shop.example.com/a?x=1&amp;y=2">shop</a>, ` +
		`<a class="b" href='http://b.example.com/'>b</a> <a href="mailto:a@b.c">mail</a> <a href="#top">top</a> ` +
		`<a href="notifyd:unsubscribe">unsubscribe</a> <img src="https://img.example.com/x.png"></p></body></html>`
	o := RewriteOptions{Token: "TOK", Campaign: "spring", Clicks: true, Opens: true, Unsubscribe: true}
	got := string(l.AppendHTML(nil, body, o))
	want := `<html><head><link rel="stylesheet" href="https://fonts.example.com/a.css"></head><body class="x"><img src="https://t.example.com/o/TOK" width="1" height="1" alt="" style="border:0;width:1px;height:1px">` +
		`<p>Hi <a href="` + l.ClickURL("TOK", "spring", 0, "https://shop.example.com/a?x=1&y=2") + `">shop</a>, ` +
		`<a class="b" href='` + l.ClickURL("TOK", "spring", 1, "http://b.example.com/") + `'>b</a> <a href="mailto:a@b.c">mail</a> <a href="#top">top</a> ` +
		`<a href="https://t.example.com/u/TOK">unsubscribe</a> <img src="https://img.example.com/x.png"></p></body></html>`
	if got != want {
		t.Fatalf("AppendHTML:\n got %s\nwant %s", got, want)
	}
	if off := string(l.AppendHTML(nil, body, RewriteOptions{Token: "TOK", Campaign: "spring"})); off != body {
		t.Fatalf("no options changed the body: %s", off)
	}
}

func testutilCounter(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	return gathered{g, name}
}

// gathered sums every series of one metric, as a Collector testutil reads.
type gathered struct {
	g    prometheus.Gatherer
	name string
}

func (c gathered) Describe(ch chan<- *prometheus.Desc) {
	ch <- prometheus.NewDesc(c.name+"_sum", "sum", nil, nil)
}

func (c gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := c.g.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == c.name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(c.name+"_sum", "sum", nil, nil), prometheus.CounterValue, sum)
}

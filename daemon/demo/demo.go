// Package demo is notifyd's embedded default: it generates a shard, starts a
// sandbox for every provider on loopback, runs the daemon in-process with
// in-memory state, creates one campaign over every channel through the admin
// API, and summarises what each provider received. It needs no network,
// Redis or credentials.
package demo

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/apns"
	"github.com/notifyd/notifyd/channels/email"
	"github.com/notifyd/notifyd/channels/fcm"
	"github.com/notifyd/notifyd/channels/sandbox"
	"github.com/notifyd/notifyd/channels/sms"
	"github.com/notifyd/notifyd/channels/webhook"
	"github.com/notifyd/notifyd/channels/webpush"
	"github.com/notifyd/notifyd/daemon"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// Options configure a demo run.
type Options struct {
	Profiles int    // members to generate (default 100,000)
	Seed     uint64 // generator seed (default 1)
	// Dir holds the generated shard (default: a temporary directory, removed afterwards).
	Dir string
	// Out receives the progress bar and the summary.
	Out io.Writer
	// Progress draws a progress bar in place (a terminal); otherwise a line per second.
	Progress bool
	// Log receives the daemon's log (default: discarded, it would garble the bar).
	Log *slog.Logger
	// RedisURL, when set, keeps the daemon's state in Redis (under a fresh
	// key prefix) instead of in memory.
	RedisURL string
	// RecordLimit is how many requests each sandbox keeps for Summary.Records (default 20).
	RecordLimit int
}

// Summary is what the demo measured.
type Summary struct {
	Campaign  campaigns.CampaignStatus
	Elapsed   time.Duration
	Members   uint64
	Received  map[string]int // requests each sandbox accepted
	Feedback  int            // dead-address records
	Samples   map[string]string
	PerSecond float64 // messages handed to providers per second
	// Records are the requests each sandbox kept (Options.RecordLimit per provider).
	Records map[string][]sandbox.Received
	// ShardPath is the generated shard (removed after Run unless Options.Dir was given).
	ShardPath string
}

// The demo's content: every channel, personalised, with fallbacks.
const campaignJSON = `{
  "id": "demo-welcome",
  "name": "Welcome back",
  "segment": "all",
  "channels": ["apns", "fcm", "email", "sms", "webpush", "webhook"],
  "throttle_per_s": 0,
  "content": {
    "push": {"title": "Hi {{ profile.first_name | default: 'there' }}!", "body": "Your {{ profile.tier | default: 'member' }} perks are waiting in {{ profile.city | default: 'your city' }}.", "deep_link": "demo://perks", "collapse_id": "welcome", "data": {"campaign": "{{ campaign.id }}"}},
    "email": {"from": "Demo Shop <shop@notifyd.test>", "subject": "{{ profile.first_name | default: 'Friend' }}, your {{ profile.tier | default: 'member' }} perks", "html": "<h1>Hi {{ profile.first_name | default: 'there' }}</h1><p>You have spent {{ profile.total_spent | default: 0 | money }} with us.</p>", "text": "Hi {{ profile.first_name | default: 'there' }}, your perks are waiting.", "list_unsubscribe": "https://notifyd.test/unsubscribe?u={{ profile.id | url_encode }}", "list_unsubscribe_one_click": true},
    "sms": {"body": "Demo Shop: hi {{ profile.first_name | default: 'there' }}, your perks are waiting. Reply STOP to opt out."},
    "webpush": {"title": "Welcome back, {{ profile.first_name | default: 'friend' }}", "body": "Tap to see your perks", "url": "https://notifyd.test/perks", "tag": "welcome"},
    "webhook": {"url": "WEBHOOK_URL", "body": {"event": "campaign.message", "user": "{{ profile.id }}", "tier": "{{ profile.tier | default: 'none' }}"}}
  }
}`

// Run runs the demo and prints its summary.
func Run(ctx context.Context, opts Options) (*Summary, error) {
	if opts.Profiles <= 0 {
		opts.Profiles = 100_000
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := opts.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "notifyd-demo-")
		if err != nil {
			return nil, fmt.Errorf("make demo directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}

	if opts.RecordLimit <= 0 {
		opts.RecordLimit = 20
	}
	sb, err := startSandboxes(opts.RecordLimit)
	if err != nil {
		return nil, err
	}
	defer sb.close()

	out := opts.Out
	fmt.Fprintf(out, "notifyd demo: generating %d profiles...\n", opts.Profiles)
	shardPath := filepath.Join(dir, "demo.shard")
	members, err := writeShard(shardPath, opts.Profiles, opts.Seed, sb.webpush)
	if err != nil {
		return nil, err
	}

	chans, err := sb.senders(log)
	if err != nil {
		return nil, err
	}
	token := randomHex(16)
	cfg := &daemon.Config{
		Shard:  daemon.ShardConfig{Path: shardPath, PollInterval: daemon.Duration(time.Second)},
		Admin:  daemon.AdminConfig{Listen: "127.0.0.1:0", Token: daemon.NewSecret(token)},
		Engine: daemon.EngineConfig{Owner: "demo", BatchSize: 1000, MaxOpenBatches: 8, ShutdownTimeout: daemon.Duration(30 * time.Second)},
	}
	if opts.RedisURL != "" {
		cfg.Redis = daemon.RedisConfig{URL: daemon.NewSecret(opts.RedisURL), Prefix: "notifyd-demo:" + randomHex(6) + ":"}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for admin API: %w", err)
	}
	feedback := &channels.MemoryFeedback{}
	d, err := daemon.New(ctx, cfg, daemon.Deps{Channels: chans, Logger: log, Listener: ln, Feedback: feedback})
	if err != nil {
		ln.Close()
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(runCtx) }()
	defer func() {
		stop()
		<-runErr
	}()

	api := &client{base: "http://" + ln.Addr().String(), token: token}
	body := strings.Replace(campaignJSON, "WEBHOOK_URL", sb.webhook.URL()+"/hooks/campaign", 1)
	start := time.Now()
	var st campaigns.CampaignStatus
	if err := api.call(ctx, http.MethodPost, "/v1/campaigns", []byte(body), &st); err != nil {
		return nil, fmt.Errorf("create demo campaign: %w", err)
	}
	fmt.Fprintf(out, "campaign %q created over %d channels for %d members\n", st.ID, len(st.Channels), members)

	// The campaign counts every message (one per device token or
	// subscription) and every member × channel without one.
	want, err := daemon.ExpectedCounts(shardPath, "all", st.Channels, false)
	if err != nil {
		return nil, fmt.Errorf("count the demo's messages: %w", err)
	}
	var total uint64
	for _, n := range want {
		total += uint64(n)
	}
	bar := newProgress(out, opts.Progress, total)
	for st.Status != campaigns.StatusCompleted {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-runErr:
			runErr <- err
			return nil, fmt.Errorf("daemon stopped: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := api.call(ctx, http.MethodGet, "/v1/campaigns/"+st.ID, nil, &st); err != nil {
			return nil, fmt.Errorf("poll campaign: %w", err)
		}
		if st.Status == campaigns.StatusPaused || st.Status == campaigns.StatusFailed {
			return nil, fmt.Errorf("demo campaign ended %s", st.Status)
		}
		bar.update(settled(st), time.Since(start))
	}
	elapsed := time.Since(start)
	bar.done(settled(st), elapsed)

	s := &Summary{Campaign: st, Elapsed: elapsed, Members: members, Received: sb.received(), Feedback: feedback.Len(), Samples: sb.samples(),
		Records: sb.records(), ShardPath: shardPath}
	var sent int64
	for _, byReason := range st.Counts {
		sent += byReason[campaigns.ReasonSent]
	}
	s.PerSecond = float64(sent) / elapsed.Seconds()
	printSummary(out, s)
	return s, nil
}

func settled(st campaigns.CampaignStatus) uint64 {
	var n int64
	for _, byReason := range st.Counts {
		for _, v := range byReason {
			n += v
		}
	}
	return uint64(n)
}

// writeShard generates profiles; web push subscriptions are minted by the
// sandbox so the payloads it receives really decrypt.
func writeShard(path string, n int, seed uint64, wp *sandbox.WebPush) (uint64, error) {
	subs := make([]shard.WebPushSubscription, 64)
	for i := range subs {
		name := "browser"
		if i == 0 {
			name = "gone" // a subscription the push service has expired: dead-address feedback
		}
		s, err := wp.NewNamedSubscription(name, false)
		if err != nil {
			return 0, fmt.Errorf("mint web push subscription: %w", err)
		}
		subs[i] = shard.WebPushSubscription{Endpoint: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth}
	}
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		return 0, fmt.Errorf("create demo shard: %w", err)
	}
	g := shardgen.New(seed)
	var p shard.Profile
	for i := range uint64(n) {
		g.Profile(i, &p)
		for j := range p.WebPush {
			p.WebPush[j] = subs[(int(i)+j)%len(subs)]
		}
		if err := w.Add(&p); err != nil {
			_ = w.Abort()
			return 0, fmt.Errorf("add demo profile %d: %w", i, err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		return 0, fmt.Errorf("write demo shard: %w", err)
	}
	return uint64(n), nil
}

// sandboxes is one fake per provider, with a few faults injected so the
// summary shows dead addresses and their feedback records.
type sandboxes struct {
	apns        *sandbox.APNs
	apnsKey     []byte
	fcm         *sandbox.FCM
	smtp        *sandbox.SMTP
	twilio      *sandbox.Twilio
	twilioToken string
	webpush     *sandbox.WebPush
	vapid       [2]string
	webhook     *sandbox.Webhook
	secret      string
	closers     []func() error
}

const (
	apnsKeyID  = "DEMOKEY001"
	apnsTeamID = "DEMOTEAM01"
	apnsTopic  = "com.example.notifyd-demo"
	smtpUser   = "demo"
)

func startSandboxes(keep int) (_ *sandboxes, err error) {
	sb := &sandboxes{}
	defer func() {
		if err != nil {
			sb.close()
		}
	}()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate APNs key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode APNs key: %w", err)
	}
	sb.apnsKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if sb.apns, err = sandbox.NewAPNs(sandbox.APNsOptions{TokenKey: &key.PublicKey, KeyID: apnsKeyID, TeamID: apnsTeamID, Topics: []string{apnsTopic}, RecordLimit: keep}); err != nil {
		return nil, fmt.Errorf("start APNs sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.apns.Close)
	sb.apns.Faults.Add(sandbox.Fault{Match: "00*", Status: http.StatusGone, Reason: "Unregistered"})

	if sb.fcm, err = sandbox.NewFCM(sandbox.FCMOptions{ProjectID: "notifyd-demo", RecordLimit: keep}); err != nil {
		return nil, fmt.Errorf("start FCM sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.fcm.Close)

	if sb.smtp, err = sandbox.NewSMTP(sandbox.SMTPOptions{Username: smtpUser, Password: "demo-password", RecorderLimit: keep}); err != nil {
		return nil, fmt.Errorf("start SMTP sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.smtp.Close)

	sb.twilioToken = randomHex(16)
	if sb.twilio, err = sandbox.NewTwilio(sandbox.TwilioOptions{AccountSID: "AC" + randomHex(16), AuthToken: sb.twilioToken, RecordLimit: keep}); err != nil {
		return nil, fmt.Errorf("start Twilio sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.twilio.Close)
	sb.twilio.Faults.Add(sandbox.Fault{Match: "*99", Status: http.StatusBadRequest, Reason: "21211"})

	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate VAPID key: %w", err)
	}
	b64 := base64.RawURLEncoding
	sb.vapid = [2]string{b64.EncodeToString(priv.PublicKey().Bytes()), b64.EncodeToString(priv.Bytes())}
	if sb.webpush, err = sandbox.NewWebPush(sandbox.WebPushOptions{ApplicationServerKey: sb.vapid[0]}); err != nil {
		return nil, fmt.Errorf("start web push sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.webpush.Close)
	sb.webpush.Faults.Add(sandbox.Fault{Match: "gone-*", Status: http.StatusGone})

	sb.secret = randomHex(16)
	if sb.webhook, err = sandbox.NewWebhook(sandbox.WebhookOptions{Secret: sb.secret, RecorderLimit: keep}); err != nil {
		return nil, fmt.Errorf("start webhook sandbox: %w", err)
	}
	sb.closers = append(sb.closers, sb.webhook.Close)
	return sb, nil
}

func (sb *sandboxes) close() {
	for i := len(sb.closers) - 1; i >= 0; i-- {
		_ = sb.closers[i]()
	}
}

// senders builds the real providers, pointed at the sandboxes.
func (sb *sandboxes) senders(log *slog.Logger) (map[string]daemon.ChannelSpec, error) {
	out := map[string]daemon.ChannelSpec{}
	var errs []error
	add := func(name string, ch channels.Channel, err error, pool daemon.PoolConfig) {
		if err != nil {
			errs = append(errs, fmt.Errorf("configure %s: %w", name, err))
			return
		}
		pool.MaxAttempts = 3
		pool.BackoffBase = daemon.Duration(50 * time.Millisecond)
		pool.BackoffMax = daemon.Duration(time.Second)
		out[name] = daemon.ChannelSpec{Channel: ch, Pool: pool}
	}
	a, err := apns.New(apns.Config{Topic: apnsTopic, Host: sb.apns.URL(), KeyID: apnsKeyID, TeamID: apnsTeamID, Key: sb.apnsKey,
		TLS: channels.TLS{RootCAs: sb.apns.CertPool()}}, apns.WithLogger(log), apns.WithConnections(2))
	add(channels.APNs, a, err, daemon.PoolConfig{Workers: 2, BatchSize: 200, QueueSize: 20000})
	f, err := fcm.New(fcm.Config{ProjectID: sb.fcm.ProjectID(), CredentialsJSON: sb.fcm.ServiceAccountJSON(), Endpoint: sb.fcm.Endpoint(),
		TLS: channels.TLS{RootCAs: sb.fcm.CertPool()}}, fcm.WithLogger(log))
	add(channels.FCM, f, err, daemon.PoolConfig{Workers: 2, BatchSize: 500, QueueSize: 20000})
	e, err := email.New(email.Config{Host: sb.smtp.Host(), Port: sb.smtp.Port(), TLSMode: email.TLSStartTLS, TLS: channels.TLS{RootCAs: sb.smtp.CertPool()},
		Auth: email.AuthPlain, Username: smtpUser, Password: "demo-password", Connections: 4, MessageIDDomain: "notifyd.test"}, email.WithLogger(log))
	add(channels.Email, e, err, daemon.PoolConfig{Workers: 4, BatchSize: 100, QueueSize: 20000})
	s, err := sms.New(sms.Config{AccountSID: sb.twilio.AccountSID(), AuthToken: sb.twilioToken, From: "+15005550006",
		BaseURL: sb.twilio.URL(), TLS: channels.TLS{RootCAs: sb.twilio.CertPool()}}, sms.WithLogger(log), sms.WithConcurrency(16))
	add(channels.SMS, s, err, daemon.PoolConfig{Workers: 2, BatchSize: 64, QueueSize: 20000})
	// The sandboxes listen on loopback, which the destination guard of the
	// webhook and web push channels refuses unless allowed.
	loopback := []string{"127.0.0.0/8", "::1"}
	w, err := webpush.New(webpush.Config{VAPIDPublicKey: sb.vapid[0], VAPIDPrivateKey: sb.vapid[1], Subscriber: "mailto:ops@notifyd.test",
		TLS: channels.TLS{RootCAs: sb.webpush.CertPool()}, AllowNetworks: loopback}, webpush.WithLogger(log))
	add(channels.WebPush, w, err, daemon.PoolConfig{Workers: 2, BatchSize: 64, QueueSize: 20000})
	h, err := webhook.New(webhook.Config{URL: sb.webhook.URL(), Secret: sb.secret, AllowNetworks: loopback}, webhook.WithLogger(log))
	add(channels.Webhook, h, err, daemon.PoolConfig{Workers: 32, BatchSize: 1, QueueSize: 20000})
	return out, errors.Join(errs...)
}

func (sb *sandboxes) records() map[string][]sandbox.Received {
	return map[string][]sandbox.Received{
		channels.APNs: sb.apns.Recorder.All(), channels.FCM: sb.fcm.Recorder.All(), channels.Email: sb.smtp.Recorder.All(),
		channels.SMS: sb.twilio.Recorder.All(), channels.WebPush: sb.webpush.Recorder.All(), channels.Webhook: sb.webhook.Recorder.All(),
	}
}

func (sb *sandboxes) received() map[string]int {
	return map[string]int{
		channels.APNs: sb.apns.Recorder.Count(), channels.FCM: sb.fcm.Recorder.Count(), channels.Email: sb.smtp.Recorder.Count(),
		channels.SMS: sb.twilio.Recorder.Count(), channels.WebPush: sb.webpush.Recorder.Count(), channels.Webhook: sb.webhook.Recorder.Count(),
	}
}

// samples shows one rendered message per provider, as the provider got it.
func (sb *sandboxes) samples() map[string]string {
	out := map[string]string{}
	pick := func(name string, r *sandbox.Recorder) {
		for _, rec := range r.All() {
			if rec.Status/100 == 2 || rec.Status == 0 {
				out[name] = truncate(string(rec.Body), 300)
				return
			}
		}
	}
	pick(channels.APNs, sb.apns.Recorder)
	pick(channels.FCM, sb.fcm.Recorder)
	pick(channels.SMS, sb.twilio.Recorder)
	pick(channels.WebPush, sb.webpush.Recorder)
	pick(channels.Webhook, sb.webhook.Recorder)
	if msgs := sb.smtp.Messages(); len(msgs) > 0 {
		m := msgs[0]
		out[channels.Email] = truncate(fmt.Sprintf("To: %s | Subject: %s | %s", strings.Join(m.To, ","), m.Header.Get("Subject"), m.Text), 300)
	}
	return out
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type client struct{ base, token string }

func (c *client) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

// progress draws a bar in place on a terminal, or a line per second elsewhere.
type progress struct {
	w        io.Writer
	inPlace  bool
	total    uint64
	lastLine time.Time
}

func newProgress(w io.Writer, inPlace bool, total uint64) *progress {
	return &progress{w: w, inPlace: inPlace, total: total}
}

func (p *progress) line(n uint64, el time.Duration) string {
	frac := 0.0
	if p.total > 0 {
		frac = float64(n) / float64(p.total)
	}
	const width = 30
	fill := int(frac * width)
	rate := float64(n) / max(el.Seconds(), 1e-9)
	return fmt.Sprintf("[%s%s] %5.1f%%  %d/%d messages  %.0f/s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), frac*100, n, p.total, rate)
}

func (p *progress) update(n uint64, el time.Duration) {
	if p.inPlace {
		fmt.Fprintf(p.w, "\r%s", p.line(n, el))
		return
	}
	if time.Since(p.lastLine) >= time.Second {
		p.lastLine = time.Now()
		fmt.Fprintln(p.w, p.line(n, el))
	}
}

func (p *progress) done(n uint64, el time.Duration) {
	if p.inPlace {
		fmt.Fprintf(p.w, "\r%s\n", p.line(n, el))
		return
	}
	fmt.Fprintln(p.w, p.line(n, el))
}

func printSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\ncampaign %s %s in %s: %.0f messages/s accepted by providers\n\n", s.Campaign.ID, s.Campaign.Status, s.Elapsed.Round(time.Millisecond), s.PerSecond)
	fmt.Fprintf(w, "%-8s %9s %9s  %s\n", "channel", "sent", "received", "not sent, by reason")
	names := make([]string, 0, len(s.Campaign.Counts))
	for ch := range s.Campaign.Counts {
		names = append(names, ch)
	}
	sort.Strings(names)
	for _, ch := range names {
		byReason := s.Campaign.Counts[ch]
		var reasons []string
		for r, n := range byReason {
			if r != campaigns.ReasonSent {
				reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
			}
		}
		sort.Strings(reasons)
		fmt.Fprintf(w, "%-8s %9d %9d  %s\n", ch, byReason[campaigns.ReasonSent], s.Received[ch], strings.Join(reasons, " "))
	}
	fmt.Fprintf(w, "\ndead-address feedback records: %d\n", s.Feedback)
	fmt.Fprintln(w, "\nsamples, as the providers received them:")
	for _, ch := range names {
		if smp, ok := s.Samples[ch]; ok {
			fmt.Fprintf(w, "  %-8s %s\n", ch, smp)
		}
	}
}

package sms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/tracking"
)

// MaxBodyChars is Twilio's limit on a message body (characters, all segments).
const MaxBodyChars = 1600

// maxValidity is Twilio's longest ValidityPeriod (and its default).
const maxValidity = 36000 * time.Second

// Config holds what an SMS sender needs for one Twilio account. Credentials
// come from the caller: AuthToken, or an API key (APIKeySID + APIKeySecret).
type Config struct {
	// AccountSID is the account ("AC" + 32 hex characters).
	AccountSID string
	// AuthToken is the account's auth token. Leave empty when using an API key.
	AuthToken string
	// APIKeySID ("SK...") and APIKeySecret authenticate instead of AuthToken.
	APIKeySID    string
	APIKeySecret string

	// From is the default sender: an E.164 number or an alphanumeric sender id.
	From string
	// MessagingServiceSID ("MG...") lets Twilio pick the sender from a number
	// pool; when both are set Twilio uses From within the service.
	// A message's Text.From overrides either (an "MG..." value selects a service).
	MessagingServiceSID string
	// StatusCallback is the URL Twilio posts delivery status to (optional).
	StatusCallback string

	// BaseURL replaces https://api.twilio.com (sandbox, proxies). twilio-go
	// hard-codes its host, so the request is redirected in the transport.
	BaseURL string
	// Region and Edge select Twilio's regional processing (ignored with BaseURL).
	Region string
	Edge   string
	// TLS is the trust for the API endpoint.
	TLS channels.TLS

	// RatePerSecond is the sender's MPS: what the daemon gives the worker
	// pool's token bucket for this account/number (a US long code is 1 MPS, a
	// toll-free number 3, a short code 100; a Messaging Service with N numbers
	// N times the per-number rate). 0 means unlimited. Burst is the bucket size
	// (0: one second's worth). This package does not read them: the pool
	// rate-limits, Send never waits.
	RatePerSecond float64
	Burst         int
}

// Option sets an optional knob.
type Option func(*options)

type options struct {
	links       *tracking.Links
	logger      *slog.Logger
	now         func() time.Time
	transport   http.RoundTripper
	timeout     time.Duration
	concurrency int
}

// WithStatusCallbacks has Twilio post each message's delivery status to
// the daemon's tracking endpoint (a signed per-message URL), replacing
// Config.StatusCallback.
func WithStatusCallbacks(l *tracking.Links) Option { return func(o *options) { o.links = l } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock injects the clock used for deadlines and Retry-After dates.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTransport replaces the base HTTP transport (normally built from Config.TLS).
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithTimeout bounds each request (default 15s) in addition to the Send context.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithConcurrency sets how many requests of one batch are in flight at once
// (default 8). The Messages API takes one message per request.
func WithConcurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// Sender is the SMS channel for one Twilio account.
type Sender struct {
	cfg         Config
	user, pass  string
	base        http.RoundTripper
	target      *url.URL // nil: talk to api.twilio.com as twilio-go builds it
	logger      *slog.Logger
	now         func() time.Time
	timeout     time.Duration
	concurrency int
	closeIdle   func()
	links       *tracking.Links // nil: Config.StatusCallback (if any) for every message
}

var _ channels.Channel = (*Sender)(nil)

// New validates cfg and builds a sender. It makes no network call.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{logger: slog.Default(), now: time.Now, timeout: 15 * time.Second, concurrency: 8}
	for _, opt := range opts {
		opt(&o)
	}
	if !validSID(cfg.AccountSID, "AC") {
		return nil, errors.New("new sms sender: AccountSID must be AC followed by 32 hex characters")
	}
	user, pass := cfg.AccountSID, cfg.AuthToken
	switch {
	case cfg.AuthToken != "" && cfg.APIKeySID != "":
		return nil, errors.New("new sms sender: set AuthToken or APIKeySID/APIKeySecret, not both")
	case cfg.APIKeySID != "":
		if !validSID(cfg.APIKeySID, "SK") || cfg.APIKeySecret == "" {
			return nil, errors.New("new sms sender: APIKeySID must be SK followed by 32 hex characters, with APIKeySecret")
		}
		user, pass = cfg.APIKeySID, cfg.APIKeySecret
	case cfg.AuthToken == "":
		return nil, errors.New("new sms sender: AuthToken or APIKeySID/APIKeySecret is required")
	}
	if !alnum(pass) {
		// twilio-go refuses such a credential on every request; say so once, without echoing it.
		return nil, errors.New("new sms sender: auth token or API secret must be alphanumeric")
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		return nil, errors.New("new sms sender: From or MessagingServiceSID is required")
	}
	if cfg.MessagingServiceSID != "" && !validSID(cfg.MessagingServiceSID, "MG") {
		return nil, errors.New("new sms sender: MessagingServiceSID must be MG followed by 32 hex characters")
	}
	if cfg.StatusCallback != "" {
		if u, err := url.Parse(cfg.StatusCallback); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("new sms sender: StatusCallback must be an absolute http(s) URL")
		}
	}
	var target *url.URL
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("new sms sender: BaseURL %q must be an absolute http(s) URL", cfg.BaseURL)
		}
		target = u
	}
	if cfg.RatePerSecond < 0 || cfg.Burst < 0 {
		return nil, errors.New("new sms sender: RatePerSecond and Burst must not be negative")
	}
	if o.concurrency < 1 {
		return nil, errors.New("new sms sender: concurrency must be at least 1")
	}
	base, closeIdle := o.transport, func() {}
	if base == nil {
		tlsCfg, err := cfg.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("new sms sender: %w", err)
		}
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: max(o.concurrency, 8),
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		base, closeIdle = tr, tr.CloseIdleConnections
	}
	return &Sender{
		cfg: cfg, user: user, pass: pass, base: base, target: target,
		logger: o.logger.With("channel", channels.SMS), now: o.now,
		timeout: o.timeout, concurrency: o.concurrency, closeIdle: closeIdle, links: o.links,
	}, nil
}

// Name is channels.SMS.
func (s *Sender) Name() string { return channels.SMS }

// Close releases idle connections.
func (s *Sender) Close() error {
	s.closeIdle()
	return nil
}

// Send creates one Twilio message per batch entry, up to the configured
// concurrency at a time, and answers per message in order.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	workers := min(s.concurrency, len(batch))
	if workers <= 1 {
		for i, m := range batch {
			results[i] = s.sendOne(ctx, m)
		}
	} else {
		var next sync.Mutex
		pos := 0
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					next.Lock()
					i := pos
					pos++
					next.Unlock()
					if i >= len(batch) {
						return
					}
					results[i] = s.sendOne(ctx, batch[i])
				}
			}()
		}
		wg.Wait()
	}
	s.logOutcome(results)
	return results
}

func (s *Sender) sendOne(ctx context.Context, m *channels.Message) channels.Result {
	now := s.now()
	if ctx.Err() != nil {
		return channels.Result{Err: ctxError(ctx, m, now)}
	}
	params, err := s.params(m, now)
	if err != nil {
		return channels.Result{Err: err}
	}
	c := &call{ctx: ctx, next: s.base, target: s.target}
	cl := &twclient.Client{
		Credentials: twclient.NewCredentials(s.user, s.pass),
		HTTPClient: &http.Client{
			Transport:     c,
			Timeout:       s.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cl.SetAccountSid(s.cfg.AccountSID)
	// A RequestHandler literal, not NewRequestHandler: that one reads
	// TWILIO_EDGE/TWILIO_REGION from the environment.
	api := twapi.NewApiService(&twclient.RequestHandler{Client: cl, Edge: s.cfg.Edge, Region: s.cfg.Region})
	msg, err := api.CreateMessage(params)
	if err != nil {
		return channels.Result{Err: s.classify(ctx, m, c, err)}
	}
	var sid string
	if msg != nil && msg.Sid != nil {
		sid = *msg.Sid
	}
	if msg != nil && msg.Status != nil && (*msg.Status == "failed" || *msg.Status == "undelivered") {
		code := ""
		if msg.ErrorCode != nil {
			code = strconv.Itoa(*msg.ErrorCode)
		}
		return channels.Result{ProviderID: sid, Err: channels.Permanent(channels.ReasonRejected, code, errors.New("create message: twilio answered status "+*msg.Status))}
	}
	return channels.Result{ProviderID: sid}
}

// params builds CreateMessageParams, answering what Twilio would reject without a request.
func (s *Sender) params(m *channels.Message, now time.Time) (*twapi.CreateMessageParams, error) {
	if m == nil || m.Text == nil {
		return nil, channels.Permanent(channels.ReasonInvalid, "", errors.New("build message: no text content"))
	}
	if !e164(strings.TrimPrefix(m.To, "whatsapp:")) {
		// Twilio would answer 21211 for it: an address that can never work.
		return nil, channels.Permanent(channels.ReasonDeadAddress, "21211", errors.New("build message: recipient is not an E.164 phone number"))
	}
	if m.Text.Body == "" {
		return nil, channels.Permanent(channels.ReasonInvalid, "21602", errors.New("build message: body is empty"))
	}
	if n := utf8.RuneCountInString(m.Text.Body); n > MaxBodyChars {
		return nil, channels.Permanent(channels.ReasonInvalid, "21617", fmt.Errorf("build message: body has %d characters, more than %d", n, MaxBodyChars))
	}
	p := &twapi.CreateMessageParams{}
	p.SetTo(m.To)
	p.SetBody(m.Text.Body)
	from, svc := s.cfg.From, s.cfg.MessagingServiceSID
	if f := m.Text.From; f != "" {
		if validSID(f, "MG") {
			from, svc = "", f
		} else {
			from, svc = f, ""
		}
	}
	if from != "" {
		p.SetFrom(from)
	}
	if svc != "" {
		p.SetMessagingServiceSid(svc)
	}
	switch {
	case s.links != nil:
		// Per message: the token names the message, so the callback needs no
		// look-up by Twilio SID (and is signed by Twilio over this URL).
		p.SetStatusCallback(s.links.StatusCallbackURL(s.links.Token(tracking.Ref{Campaign: m.Campaign, MessageID: m.ID,
			UserID: m.UserID, UserKey: m.UserKey, Channel: channels.SMS})))
	case s.cfg.StatusCallback != "":
		p.SetStatusCallback(s.cfg.StatusCallback)
	}
	if !m.Deadline.IsZero() {
		left := m.Deadline.Sub(now).Truncate(time.Second)
		if left < time.Second {
			return nil, channels.Permanent(channels.ReasonExpired, "", errors.New("build message: deadline passed"))
		}
		if left < maxValidity {
			// Twilio drops a message still queued after ValidityPeriod: the TTL on its side.
			p.SetValidityPeriod(int(left / time.Second))
		}
	}
	return p, nil
}

func (s *Sender) logOutcome(results []channels.Result) {
	var failed int
	var auth *channels.Error
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		failed++
		var ce *channels.Error
		if auth == nil && errors.As(r.Err, &ce) && ce.Reason == channels.ReasonAuth {
			auth = ce
		}
	}
	if auth != nil {
		// Once per batch: every message of the batch fails the same way.
		s.logger.Warn("twilio credentials refused", "code", auth.Code, "err", auth.Err)
	}
	s.logger.Debug("sms batch sent", "messages", len(results), "failed", failed)
}

func validSID(s, prefix string) bool {
	if len(s) != 34 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for _, c := range s[2:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func alnum(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func e164(s string) bool {
	if len(s) < 8 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for _, c := range s[2:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

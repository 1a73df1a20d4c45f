package fcm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/notifyd/notifyd/channels"
)

// DefaultEndpoint is FCM's HTTP v1 base URL.
const DefaultEndpoint = "https://fcm.googleapis.com/v1"

// MaxBatch is the most messages firebase's SendEach takes in one call.
const MaxBatch = 500

// maxTTL is FCM's longest time to live (28 days).
const maxTTL = 28 * 24 * time.Hour

// scopes the service account's token must carry.
const (
	scopeMessaging = "https://www.googleapis.com/auth/firebase.messaging"
	scopeCloud     = "https://www.googleapis.com/auth/cloud-platform"
)

// Config holds what an FCM sender needs. Credentials come from the caller:
// exactly one of CredentialsJSON, CredentialsFile or the WithTokenSource option.
type Config struct {
	// ProjectID is the Firebase project. Required: without it firebase asks
	// Google's metadata server and credentials lookup over the network.
	ProjectID string
	// CredentialsJSON is a service-account key file's content. Its token_uri
	// decides where access tokens come from (Google's, or the sandbox's).
	CredentialsJSON []byte
	// CredentialsFile is a path to a service-account key file.
	CredentialsFile string
	// Endpoint replaces DefaultEndpoint (firebase honours option.WithEndpoint
	// for messages:send, so no URL rewriting is needed).
	Endpoint string
	// TLS is the trust for both the messaging endpoint and the token endpoint.
	TLS channels.TLS
	// RatePerSecond is the project's send quota the daemon gives the worker
	// pool's token bucket for this sender (FCM's default is 600,000 messages
	// per minute per project, i.e. 10,000/s); 0 means unlimited. Burst is the
	// bucket size (0: one second's worth). This package does not read them.
	RatePerSecond float64
	Burst         int
}

// Option sets an optional knob.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	now        func() time.Time
	ts         oauth2.TokenSource
	transport  http.RoundTripper
	timeout    time.Duration
	androidChl string
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithClock injects the clock used for TTLs and expiry checks.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTokenSource supplies OAuth2 access tokens instead of a service-account key.
func WithTokenSource(ts oauth2.TokenSource) Option { return func(o *options) { o.ts = ts } }

// WithTransport replaces the base HTTP transport (normally built from Config.TLS).
// Authentication and the retry guard are still layered on top.
func WithTransport(rt http.RoundTripper) Option { return func(o *options) { o.transport = rt } }

// WithTimeout bounds each HTTP request (default 30s) in addition to the Send context.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithAndroidChannelID sets the Android notification channel for messages that show a notification.
func WithAndroidChannelID(id string) Option { return func(o *options) { o.androidChl = id } }

// Sender is the FCM channel.
type Sender struct {
	client    *messaging.Client
	logger    *slog.Logger
	now       func() time.Time
	androidCh string
	closeIdle func()
}

var _ channels.Channel = (*Sender)(nil)

// validProjectID accepts Google Cloud project ids, including legacy
// domain-scoped ones ("example.com:proj"); it rejects what would break the URL path.
func validProjectID(id string) bool {
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return len(id) <= 100
}

// New validates cfg and builds a sender. It makes no network call.
func New(cfg Config, opts ...Option) (*Sender, error) {
	o := options{logger: slog.Default(), now: time.Now, timeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.ProjectID == "" {
		return nil, errors.New("new fcm sender: ProjectID is required")
	}
	if !validProjectID(cfg.ProjectID) {
		return nil, fmt.Errorf("new fcm sender: ProjectID %q is not a valid Google Cloud project id", cfg.ProjectID)
	}
	sources := 0
	for _, set := range []bool{len(cfg.CredentialsJSON) > 0, cfg.CredentialsFile != "", o.ts != nil} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("new fcm sender: set exactly one of CredentialsJSON, CredentialsFile or WithTokenSource")
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("new fcm sender: Endpoint %q must be an absolute http(s) URL", endpoint)
	}
	if cfg.RatePerSecond < 0 || cfg.Burst < 0 {
		return nil, errors.New("new fcm sender: RatePerSecond and Burst must not be negative")
	}

	base := o.transport
	closeIdle := func() {}
	if base == nil {
		tlsCfg, err := cfg.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("new fcm sender: %w", err)
		}
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}
		base, closeIdle = tr, tr.CloseIdleConnections
	}

	ts := o.ts
	if ts == nil {
		key := cfg.CredentialsJSON
		if cfg.CredentialsFile != "" {
			if key, err = os.ReadFile(cfg.CredentialsFile); err != nil {
				return nil, fmt.Errorf("new fcm sender: read credentials file: %w", err)
			}
		}
		jwtCfg, err := google.JWTConfigFromJSON(key, scopeMessaging, scopeCloud)
		if err != nil {
			// The parser's message can quote the key file; keep only our own words.
			return nil, errors.New("new fcm sender: parse service-account credentials: not a valid service-account key file")
		}
		// The token fetch uses the same trust as the messaging endpoint, so a
		// sandbox's token_uri works, and is bounded because oauth2 fetches it
		// with this long-lived context rather than the caller's.
		tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: base, Timeout: o.timeout})
		ts = jwtCfg.TokenSource(tokenCtx)
	}

	hc := &http.Client{
		Transport: &guardTransport{next: &oauth2.Transport{Source: ts, Base: base}},
		Timeout:   o.timeout,
		// FCM never redirects; a redirect would carry the bearer token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx := context.Background()
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: cfg.ProjectID},
		option.WithHTTPClient(hc), option.WithEndpoint(strings.TrimSuffix(endpoint, "/")))
	if err != nil {
		return nil, fmt.Errorf("new fcm sender: create firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("new fcm sender: create messaging client: %w", err)
	}
	return &Sender{
		client:    client,
		logger:    o.logger.With("channel", channels.FCM),
		now:       o.now,
		androidCh: o.androidChl,
		closeIdle: closeIdle,
	}, nil
}

// Name is channels.FCM.
func (s *Sender) Name() string { return channels.FCM }

// Close releases idle connections.
func (s *Sender) Close() error {
	s.closeIdle()
	return nil
}

// Send sends batch with SendEach, MaxBatch messages per call, and answers per
// message in order. Messages that cannot be built, or whose deadline passed,
// are answered without a request.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	now := s.now()
	idx := make([]int, 0, min(len(batch), MaxBatch))
	msgs := make([]*messaging.Message, 0, cap(idx))
	flush := func() {
		if len(msgs) > 0 {
			s.sendChunk(ctx, batch, idx, msgs, results)
		}
		idx, msgs = idx[:0], msgs[:0]
	}
	for i, m := range batch {
		if ctx.Err() != nil {
			results[i].Err = ctxError(ctx, m, s.now())
			continue
		}
		fm, err := buildMessage(m, now, s.androidCh)
		if err != nil {
			results[i].Err = err
			continue
		}
		idx, msgs = append(idx, i), append(msgs, fm)
		if len(msgs) == MaxBatch {
			flush()
		}
	}
	flush()
	s.logOutcome(results)
	return results
}

// sendChunk calls SendEach once for ≤ MaxBatch messages and fills their results.
func (s *Sender) sendChunk(ctx context.Context, batch []*channels.Message, idx []int, msgs []*messaging.Message, results []channels.Result) {
	// SendEach validates the whole slice first and fails it all for one bad
	// message. buildMessage checks what firebase checks, but if firebase still
	// names a message, answer that one and send the rest (no request was made).
	for len(msgs) > 0 {
		resp, err := s.client.SendEach(ctx, msgs)
		if err == nil {
			for k, r := range resp.Responses {
				i := idx[k]
				if r.Success {
					results[i].ProviderID = r.MessageID
					continue
				}
				results[i].Err = s.classify(ctx, batch[i], r.Error)
			}
			return
		}
		bad := invalidIndex(err, len(msgs))
		if bad < 0 {
			for _, i := range idx {
				results[i].Err = channels.Permanent(channels.ReasonInvalid, "", fmt.Errorf("send batch: %w", err))
			}
			return
		}
		results[idx[bad]].Err = channels.Permanent(channels.ReasonInvalid, "INVALID_ARGUMENT", fmt.Errorf("validate message: %w", err))
		idx = append(idx[:bad:bad], idx[bad+1:]...)
		msgs = append(msgs[:bad:bad], msgs[bad+1:]...)
	}
}

// invalidIndex reads firebase's "invalid message at index N: ..." error.
func invalidIndex(err error, n int) int {
	rest, ok := strings.CutPrefix(err.Error(), "invalid message at index ")
	if !ok {
		return -1
	}
	num, _, _ := strings.Cut(rest, ":")
	i, perr := strconv.Atoi(num)
	if perr != nil || i < 0 || i >= n {
		return -1
	}
	return i
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
		if errors.As(r.Err, &ce) && ce.Reason == channels.ReasonAuth && auth == nil {
			auth = ce
		}
	}
	if auth != nil {
		// Once per batch, not per message: every message fails the same way.
		s.logger.Warn("fcm credentials refused", "code", auth.Code, "err", auth.Err)
	}
	s.logger.Debug("fcm batch sent", "messages", len(results), "failed", failed)
}

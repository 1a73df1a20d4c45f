package webpush

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/notifyd/notifyd/channels"
)

var _ channels.Channel = (*Sender)(nil)

const (
	defaultTTL         = 24 * time.Hour
	defaultTimeout     = 10 * time.Second
	defaultParallelism = 16
	// maxTopicLen is RFC 8030 §5.4's limit on the Topic header.
	maxTopicLen = 32
	// errorBodyLimit bounds how much of an error answer we read for its reason.
	errorBodyLimit = 512
)

// Config holds what a web push sender cannot run without. Credentials come
// from the caller; nothing is read from the environment.
type Config struct {
	// VAPIDPublicKey is the application server key browsers subscribed with:
	// the uncompressed P-256 point, base64url. It must match VAPIDPrivateKey.
	VAPIDPublicKey string
	// VAPIDPrivateKey is the 32-byte P-256 scalar, base64url. Secret.
	VAPIDPrivateKey string
	// Subscriber is the contact push services may use, a "mailto:" or
	// "https://" URI (the VAPID "sub" claim).
	Subscriber string
	// TTL is how long a push service keeps an undelivered message when the
	// message has no Deadline (24h when zero). A Deadline shortens it.
	TTL time.Duration
	// Timeout bounds one request, connection included (10s when zero).
	Timeout time.Duration
	// TLS is the trust for push services' certificates.
	TLS channels.TLS
	// AllowedHosts, when set, restricts endpoints to these hosts: exact names
	// ("fcm.googleapis.com") or "*.push.apple.com" for any subdomain. Endpoints
	// come from browsers; an allow-list keeps a forged subscription from
	// pointing notifyd at internal services.
	AllowedHosts []string
	// AllowPlainHTTP accepts http:// endpoints. Real push services are HTTPS
	// only; local rigs (the sandbox) may serve plain HTTP.
	AllowPlainHTTP bool
	// AllowNetworks lets endpoints resolve into these CIDR prefixes (or
	// addresses) although they are loopback, private or link-local: a
	// forged subscription must not point notifyd at internal services
	// (channels.NetGuard), but a local rig or an HTTP proxy may need this.
	AllowNetworks []string
	// AllowPrivateNetworks turns that guard off entirely.
	AllowPrivateNetworks bool
}

// String redacts the private key, so a Config printed with %v or %+v by a
// caller does not leak it.
func (c Config) String() string {
	return fmt.Sprintf("webpush.Config{VAPIDPublicKey:%s VAPIDPrivateKey:[redacted] Subscriber:%s TTL:%s Timeout:%s AllowedHosts:%v AllowPlainHTTP:%t AllowNetworks:%v AllowPrivateNetworks:%t}",
		c.VAPIDPublicKey, c.Subscriber, c.TTL, c.Timeout, c.AllowedHosts, c.AllowPlainHTTP, c.AllowNetworks, c.AllowPrivateNetworks)
}

// GoString redacts like String, for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue redacts the private key when a Config is logged with slog.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("vapid_public_key", c.VAPIDPublicKey),
		slog.String("vapid_private_key", "[redacted]"),
		slog.String("subscriber", c.Subscriber),
		slog.Duration("ttl", c.TTL),
		slog.Duration("timeout", c.Timeout),
		slog.Any("allowed_hosts", c.AllowedHosts),
		slog.Bool("allow_plain_http", c.AllowPlainHTTP),
		slog.Any("allow_networks", c.AllowNetworks),
		slog.Bool("allow_private_networks", c.AllowPrivateNetworks),
	)
}

// Option sets an optional knob of a Sender.
type Option func(*Sender)

// WithHTTPClient replaces the HTTP client built from Config.TLS and
// Config.Timeout. Redirects should not be followed: a push service that
// redirects is misconfigured, and the VAPID token is bound to one origin.
func WithHTTPClient(c *http.Client) Option { return func(s *Sender) { s.client = c } }

// WithLogger sets the logger (slog.Default() otherwise).
func WithLogger(l *slog.Logger) Option { return func(s *Sender) { s.logger = l } }

// WithClock sets the clock used for deadlines, VAPID expiry and Retry-After dates.
func WithClock(now func() time.Time) Option { return func(s *Sender) { s.now = now } }

// WithParallelism sets how many requests of one batch are in flight at once
// (16 by default). Each message is its own request, so a batch is sent
// concurrently; the pool's concurrency multiplies with this.
func WithParallelism(n int) Option { return func(s *Sender) { s.parallelism = n } }

// WithPadding pads every plaintext to a multiple of block bytes so the push
// service cannot tell messages apart by length (RFC 8291 §4 allows it).
// Off by default: padding to the 4 KiB maximum, as webpush-go does, costs
// about 4 KiB of bandwidth per message.
func WithPadding(block int) Option { return func(s *Sender) { s.padBlock = block } }

// Sender posts encrypted web push messages. It is safe for concurrent use.
type Sender struct {
	vapid          *vapid
	client         *http.Client
	logger         *slog.Logger
	now            func() time.Time
	ttl            time.Duration
	allowed        []string
	allowPlainHTTP bool
	parallelism    int
	padBlock       int

	authWarned atomic.Bool
	guard      *channels.NetGuard // nil when AllowPrivateNetworks
}

// New validates cfg and builds a Sender.
func New(cfg Config, opts ...Option) (*Sender, error) {
	s := &Sender{
		logger:         slog.Default(),
		now:            time.Now,
		ttl:            cfg.TTL,
		allowPlainHTTP: cfg.AllowPlainHTTP,
		parallelism:    defaultParallelism,
	}
	for _, o := range opts {
		o(s)
	}
	switch {
	case cfg.TTL < 0:
		return nil, fmt.Errorf("check webpush config: negative TTL %s", cfg.TTL)
	case cfg.TTL == 0:
		s.ttl = defaultTTL
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("check webpush config: negative timeout %s", cfg.Timeout)
	}
	if s.parallelism < 1 {
		return nil, fmt.Errorf("check webpush config: parallelism %d, want at least 1", s.parallelism)
	}
	if s.padBlock < 0 || s.padBlock > MaxPayload {
		return nil, fmt.Errorf("check webpush config: padding block %d, want 0..%d", s.padBlock, MaxPayload)
	}
	for _, h := range cfg.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		name, _ := strings.CutPrefix(h, "*.")
		if name == "" || strings.ContainsAny(name, "*/:@") {
			return nil, fmt.Errorf("check webpush config: allowed host %q, want a host name or *.domain", h)
		}
		s.allowed = append(s.allowed, h)
	}
	if !cfg.AllowPrivateNetworks {
		g, err := channels.NewNetGuard(cfg.AllowNetworks)
		if err != nil {
			return nil, fmt.Errorf("check webpush config: %w", err)
		}
		s.guard = g
	}
	v, err := newVAPID(cfg.VAPIDPublicKey, cfg.VAPIDPrivateKey, cfg.Subscriber, s.now)
	if err != nil {
		return nil, fmt.Errorf("check webpush config: %w", err)
	}
	s.vapid = v
	if s.client == nil {
		tlsCfg, err := cfg.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("check webpush config: %w", err)
		}
		timeout := cfg.Timeout
		if timeout == 0 {
			timeout = defaultTimeout
		}
		s.client = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         s.guard.Dialer(&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
				TLSClientConfig:     tlsCfg,
				TLSHandshakeTimeout: timeout,
				ForceAttemptHTTP2:   true,
				MaxIdleConns:        1024,
				// Most traffic goes to a few push services (FCM, Mozilla,
				// Apple); keep enough idle HTTP/1.1 connections to each.
				MaxIdleConnsPerHost: 256,
				IdleConnTimeout:     90 * time.Second,
			},
			Timeout:       timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s.logger = s.logger.With("channel", channels.WebPush)
	return s, nil
}

// Name returns channels.WebPush.
func (s *Sender) Name() string { return channels.WebPush }

// Send posts each message of batch to its subscription's push service and
// answers in batch order. Messages are sent concurrently, up to the
// configured parallelism.
func (s *Sender) Send(ctx context.Context, batch []*channels.Message) []channels.Result {
	results := make([]channels.Result, len(batch))
	workers := min(s.parallelism, len(batch))
	if workers <= 1 {
		for i, m := range batch {
			results[i] = s.send(ctx, m)
		}
		return results
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batch) {
					return
				}
				results[i] = s.send(ctx, batch[i])
			}
		})
	}
	wg.Wait()
	return results
}

// payload is the JSON a service worker receives: channels.WebPushContent
// with the lower-case names the Notification API uses.
type payload struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
	Icon  string `json:"icon,omitempty"`
	URL   string `json:"url,omitempty"`
	Tag   string `json:"tag,omitempty"`
}

func (s *Sender) send(ctx context.Context, m *channels.Message) channels.Result {
	if m == nil || m.WebPush == nil {
		return fail(channels.Permanent(channels.ReasonInvalid, "no_content", errors.New("build web push: message has no web push content")))
	}
	sub := m.Subscription
	if sub == nil || sub.Endpoint == "" {
		return fail(channels.Permanent(channels.ReasonInvalid, "no_subscription", errors.New("build web push: message has no subscription")))
	}
	ttl := s.ttl
	if !m.Deadline.IsZero() {
		left := m.Deadline.Sub(s.now())
		if left <= 0 {
			return fail(channels.Permanent(channels.ReasonExpired, "", fmt.Errorf("send web push: deadline passed %s ago", (-left).Round(time.Millisecond))))
		}
		ttl = min(ttl, left)
	}
	if err := ctx.Err(); err != nil {
		return fail(channels.Classify(fmt.Errorf("send web push: %w", err)))
	}
	endpoint, origin, err := s.checkEndpoint(sub.Endpoint)
	if err != nil {
		code := "bad_endpoint"
		if errors.Is(err, channels.ErrBlockedDestination) {
			code = "blocked_destination"
		}
		return fail(channels.Permanent(channels.ReasonInvalid, code, err))
	}
	ua, secret, err := subscriptionKeys(sub.P256dh, sub.Auth)
	if err != nil {
		return fail(channels.Permanent(channels.ReasonInvalid, "bad_subscription_keys", err))
	}
	c := m.WebPush
	plain, err := json.Marshal(payload{Title: c.Title, Body: c.Body, Icon: c.Icon, URL: c.URL, Tag: c.Tag})
	if err != nil {
		return fail(channels.Permanent(channels.ReasonInvalid, "payload", fmt.Errorf("encode web push payload: %w", err)))
	}
	pad := 0
	if s.padBlock > 0 {
		pad = (s.padBlock - len(plain)%s.padBlock) % s.padBlock
		pad = min(pad, max(0, MaxPayload-len(plain)))
	}
	if len(plain) > MaxPayload {
		return fail(channels.Permanent(channels.ReasonInvalid, "payload_too_large",
			fmt.Errorf("encode web push payload: %d bytes exceed the %d-byte limit", len(plain), MaxPayload)))
	}
	// A fresh sender key and salt for every message, as RFC 8291 asks: the
	// content key must never repeat, and the push service sees nothing to link.
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return fail(channels.Transient(channels.ReasonUnknown, "", 0, fmt.Errorf("generate sender key: %w", err)))
	}
	var salt [16]byte
	_, _ = rand.Read(salt[:]) // crypto/rand.Read never fails (Go 1.24+)
	body, err := encrypt(make([]byte, 0, headerLen+len(plain)+1+pad+tagLen), plain, ua, secret, as, salt[:], pad)
	if err != nil {
		return fail(channels.Permanent(channels.ReasonInvalid, "encrypt", err))
	}
	authz, err := s.vapid.authorization(origin)
	if err != nil {
		return fail(channels.Permanent(channels.ReasonAuth, "vapid", err))
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fail(channels.Permanent(channels.ReasonInvalid, "bad_endpoint", fmt.Errorf("build request to %s: invalid endpoint", origin)))
	}
	h := req.Header
	h["Content-Encoding"] = []string{"aes128gcm"}
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Ttl"] = []string{strconv.FormatInt(int64(ttl/time.Second), 10)}
	if m.High {
		h["Urgency"] = []string{"high"}
	} else {
		h["Urgency"] = []string{"normal"}
	}
	if isTopic(c.Tag) {
		h["Topic"] = []string{c.Tag}
	}
	h["Authorization"] = []string{authz}

	resp, err := s.client.Do(req)
	if err != nil {
		return fail(s.transportError(ctx, origin, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// Drain so the connection is reused; a push service's 201 has no body.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyLimit))
		return channels.Result{ProviderID: resp.Header.Get("Location")}
	}
	detail := readReason(resp.Body)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	ce := classify(resp.StatusCode, resp.Header.Get("Retry-After"), s.now(), fmt.Errorf("post to %s: status %d%s", origin, resp.StatusCode, detail))
	if ce.Reason == channels.ReasonAuth && s.authWarned.CompareAndSwap(false, true) {
		// Every later message will fail the same way; say it once, loudly.
		s.logger.Warn("push service refused our VAPID credentials", "origin", origin, "status", resp.StatusCode)
	}
	if s.logger.Enabled(ctx, slog.LevelDebug) {
		s.logger.LogAttrs(ctx, slog.LevelDebug, "web push refused", slog.String("origin", origin), slog.Int("status", resp.StatusCode), slog.String("reason", string(ce.Reason)))
	}
	return fail(ce)
}

func fail(err *channels.Error) channels.Result { return channels.Result{Err: err} }

// checkEndpoint parses a subscription endpoint and returns it with its
// origin (the VAPID audience). Errors carry the host at most: the path is
// the subscription's capability and is treated as a secret.
func (s *Sender) checkEndpoint(raw string) (endpoint, origin string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", errors.New("parse subscription endpoint: not a URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.allowPlainHTTP:
	default:
		return "", "", fmt.Errorf("parse subscription endpoint: scheme %q not allowed", u.Scheme)
	}
	if u.Host == "" || u.User != nil {
		return "", "", errors.New("parse subscription endpoint: want scheme://host/path without user info")
	}
	host := strings.ToLower(u.Hostname())
	if !s.hostAllowed(host) {
		return "", "", fmt.Errorf("check subscription endpoint: host %q not in the allowed push services", host)
	}
	if err := s.guard.CheckHost(host); err != nil {
		return "", "", fmt.Errorf("check subscription endpoint: %w", err)
	}
	return raw, u.Scheme + "://" + u.Host, nil
}

func (s *Sender) hostAllowed(host string) bool {
	if len(s.allowed) == 0 {
		return true
	}
	for _, a := range s.allowed {
		if suffix, ok := strings.CutPrefix(a, "*"); ok {
			if strings.HasSuffix(host, suffix) && len(host) > len(suffix) {
				return true
			}
		} else if host == a {
			return true
		}
	}
	return false
}

// isTopic reports whether tag can travel as an RFC 8030 Topic: at most 32
// characters of the base64url alphabet. Otherwise the header is left out
// rather than failing the message.
func isTopic(tag string) bool {
	if tag == "" || len(tag) > maxTopicLen {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// transportError classifies a failed round trip. *url.Error is unwrapped
// because its text carries the full endpoint, the subscription's capability.
func (s *Sender) transportError(ctx context.Context, origin string, err error) *channels.Error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return channels.Classify(fmt.Errorf("post to %s: %w", origin, ctxErr))
	}
	if errors.Is(err, channels.ErrBlockedDestination) {
		return channels.Permanent(channels.ReasonInvalid, "blocked_destination", fmt.Errorf("post to %s: %w", origin, err))
	}
	return channels.Transient(channels.ReasonNetwork, "", 0, fmt.Errorf("post to %s: %w", origin, err))
}

// classify maps a push service's non-2xx status (RFC 8030 §5, RFC 8292 §4)
// to a reason.
func classify(status int, retryAfter string, now time.Time, err error) *channels.Error {
	code := strconv.Itoa(status)
	switch {
	case status == http.StatusNotFound || status == http.StatusGone:
		return channels.Permanent(channels.ReasonDeadAddress, code, err)
	case status == http.StatusRequestEntityTooLarge || status == http.StatusBadRequest:
		return channels.Permanent(channels.ReasonInvalid, code, err)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return channels.Permanent(channels.ReasonAuth, code, err)
	case status == http.StatusTooManyRequests:
		return channels.Transient(channels.ReasonRateLimited, code, parseRetryAfter(retryAfter, now), err)
	case status == http.StatusRequestTimeout:
		return channels.Transient(channels.ReasonNetwork, code, parseRetryAfter(retryAfter, now), err)
	case status >= 500:
		return channels.Transient(channels.ReasonUnavailable, code, parseRetryAfter(retryAfter, now), err)
	default:
		return channels.Permanent(channels.ReasonRejected, code, err)
	}
}

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
// Unparseable or past values give zero: the pool's own backoff applies.
func parseRetryAfter(v string, now time.Time) time.Duration {
	return channels.ParseRetryAfter(v, now, 365*24*time.Hour)
}

// readReason extracts a short, printable reason from an error answer:
// Mozilla's {"message": ...}, or the first line of FCM's and Apple's text.
func readReason(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, errorBodyLimit))
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	text := string(b)
	var env struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	if b[0] == '{' && json.Unmarshal(b, &env) == nil {
		text = env.Message
		if text == "" {
			text = env.Reason
		}
	}
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, text)
	if len(text) > 120 {
		cut := 120
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	if text == "" {
		return ""
	}
	return ": " + text
}

package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/channels/apns"
	"github.com/notifyd/notifyd/channels/email"
	"github.com/notifyd/notifyd/channels/fcm"
	"github.com/notifyd/notifyd/channels/sms"
	"github.com/notifyd/notifyd/channels/webhook"
	"github.com/notifyd/notifyd/channels/webpush"
	"github.com/notifyd/notifyd/tracking"
)

// ChannelsConfig configures each provider; a channel without a section is
// off. Every outside endpoint can be overridden (proxies, relays, test rigs)
// and every TLS endpoint takes a CA bundle.
type ChannelsConfig struct {
	APNs    *APNsConfig    `yaml:"apns"`
	FCM     *FCMConfig     `yaml:"fcm"`
	Email   *EmailConfig   `yaml:"email"`
	SMS     *SMSConfig     `yaml:"sms"`
	WebPush *WebPushConfig `yaml:"webpush"`
	Webhook *WebhookConfig `yaml:"webhook"`
}

// APNsConfig: token auth (key_id, team_id, key) or certificate auth.
type APNsConfig struct {
	Topic               string `yaml:"topic"`
	Production          bool   `yaml:"production"`
	Host                string `yaml:"host"`
	KeyID               string `yaml:"key_id"`
	TeamID              string `yaml:"team_id"`
	Key                 Secret `yaml:"key"` // .p8 PEM
	Certificate         Secret `yaml:"certificate"`
	CertificatePassword Secret `yaml:"certificate_password"`
	Connections         int    `yaml:"connections"`
	// Transport is "direct" (default: notifyd's lean HTTP/2 client) or
	// "apns2" (apns2.Client over x/net/http2), the reference path to fall
	// back on should an APNs front end ever disagree with the direct one.
	Transport string     `yaml:"transport"`
	TLS       TLSConfig  `yaml:"tls"`
	Pool      PoolConfig `yaml:"pool"`
}

// FCMConfig: HTTP v1 with a service account.
type FCMConfig struct {
	ProjectID   string     `yaml:"project_id"`
	Credentials Secret     `yaml:"credentials"` // service-account JSON
	Endpoint    string     `yaml:"endpoint"`
	TLS         TLSConfig  `yaml:"tls"`
	Pool        PoolConfig `yaml:"pool"`
}

// EmailConfig: SMTP with a connection pool.
type EmailConfig struct {
	Host            string `yaml:"host"`
	Port            int    `yaml:"port"`
	TLSMode         string `yaml:"tls_mode"` // starttls (default), starttls-opportunistic, tls, none
	Auth            string `yaml:"auth"`     // plain, login, cram-md5, none
	Username        string `yaml:"username"`
	Password        Secret `yaml:"password"`
	HELO            string `yaml:"helo"`
	From            string `yaml:"from"`
	MessageIDDomain string `yaml:"message_id_domain"`
	Connections     int    `yaml:"connections"` // SMTP sessions (8)
	MessagesPerConn int    `yaml:"messages_per_connection"`
	// DisablePipelining sends each SMTP command in its own round trip even
	// when the server offers PIPELINING (RFC 2920).
	DisablePipelining bool `yaml:"disable_pipelining"`
	// DisableChunking keeps to DATA even when the server offers CHUNKING
	// (RFC 3030) besides PIPELINING.
	DisableChunking bool `yaml:"disable_chunking"`
	// MessagesPerWrite is how many messages leave in one write with
	// PIPELINING and CHUNKING (25).
	MessagesPerWrite int        `yaml:"messages_per_write"`
	TLS              TLSConfig  `yaml:"tls"`
	Pool             PoolConfig `yaml:"pool"`
}

// SMSConfig: Twilio Messages API.
type SMSConfig struct {
	AccountSID          string     `yaml:"account_sid"`
	AuthToken           Secret     `yaml:"auth_token"`
	APIKeySID           string     `yaml:"api_key_sid"`
	APIKeySecret        Secret     `yaml:"api_key_secret"`
	From                string     `yaml:"from"`
	MessagingServiceSID string     `yaml:"messaging_service_sid"`
	StatusCallback      string     `yaml:"status_callback"`
	BaseURL             string     `yaml:"base_url"`
	TLS                 TLSConfig  `yaml:"tls"`
	Pool                PoolConfig `yaml:"pool"`
}

// WebPushConfig: VAPID keys (base64url).
type WebPushConfig struct {
	VAPIDPublicKey  string   `yaml:"vapid_public_key"`
	VAPIDPrivateKey Secret   `yaml:"vapid_private_key"`
	Subscriber      string   `yaml:"subscriber"`
	TTL             Duration `yaml:"ttl"`
	AllowedHosts    []string `yaml:"allowed_hosts"`
	AllowPlainHTTP  bool     `yaml:"allow_plain_http"`
	// AllowNetworks and AllowPrivateNetworks open the destination guard
	// (channels.NetGuard) for private, loopback or link-local addresses.
	AllowNetworks        []string   `yaml:"allow_networks"`
	AllowPrivateNetworks bool       `yaml:"allow_private_networks"`
	TLS                  TLSConfig  `yaml:"tls"`
	Pool                 PoolConfig `yaml:"pool"`
}

// WebhookConfig: signed JSON POSTs.
type WebhookConfig struct {
	URL          string   `yaml:"url"`
	Method       string   `yaml:"method"`
	Secret       Secret   `yaml:"secret"`
	Timeout      Duration `yaml:"timeout"`
	AllowedHosts []string `yaml:"allowed_hosts"`
	// MaxConnsPerHost caps the keep-alive connections to one receiver;
	// default: the pool's workers × batch size (at most 256), so every
	// worker has a connection and none is dialled only to be closed.
	MaxConnsPerHost int `yaml:"max_conns_per_host"`
	// Transport: "direct" (default: http:// through notifyd's HTTP/1.1
	// client, https through net/http) or "net/http" (everything).
	Transport string `yaml:"transport"`
	// Pipeline: requests in line per cleartext connection before another
	// is opened (default 1: no pipelining).
	Pipeline int `yaml:"pipeline"`
	// AllowNetworks and AllowPrivateNetworks open the destination guard
	// (channels.NetGuard): webhook URLs come from templates and trigger
	// data, so private and loopback addresses are refused unless listed.
	AllowNetworks        []string   `yaml:"allow_networks"`
	AllowPrivateNetworks bool       `yaml:"allow_private_networks"`
	TLS                  TLSConfig  `yaml:"tls"`
	Pool                 PoolConfig `yaml:"pool"`
}

func (t TLSConfig) channels() channels.TLS {
	return channels.TLS{CAFile: t.CAFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

func (c ChannelsConfig) validate() ConfigErrors {
	var errs ConfigErrors
	req := func(path, msg string) { errs = append(errs, &ConfigError{Path: path, Msg: msg}) }
	if c.APNs != nil && c.APNs.Topic == "" {
		req("channels.apns.topic", "required (the app's bundle id)")
	}
	if c.FCM != nil && c.FCM.ProjectID == "" {
		req("channels.fcm.project_id", "required")
	}
	if c.Email != nil && c.Email.Host == "" {
		req("channels.email.host", "required")
	}
	if c.SMS != nil && c.SMS.AccountSID == "" {
		req("channels.sms.account_sid", "required")
	}
	if c.WebPush != nil && c.WebPush.VAPIDPublicKey == "" {
		req("channels.webpush.vapid_public_key", "required")
	}
	return errs
}

// BuildOption sets an optional knob of BuildChannels.
type BuildOption func(*buildOptions)

type buildOptions struct{ links *tracking.Links }

// WithTracking gives email and SMS the tracking endpoint's URLs
// (TrackingConfig.Links): campaigns' tracking opt-in and SMS status
// callbacks. nil leaves tracking off.
func WithTracking(l *tracking.Links) BuildOption { return func(o *buildOptions) { o.links = l } }

// BuildChannels constructs every configured provider. Each provider checks
// its own config; errors name the channel.
func BuildChannels(c ChannelsConfig, log *slog.Logger, opts ...BuildOption) (map[string]ChannelSpec, error) {
	var bo buildOptions
	for _, o := range opts {
		o(&bo)
	}
	out := map[string]ChannelSpec{}
	var errs []error
	add := func(name string, ch channels.Channel, err error, pool PoolConfig, def PoolConfig) {
		if err != nil {
			errs = append(errs, fmt.Errorf("configure %s: %w", name, err))
			return
		}
		out[name] = ChannelSpec{Channel: ch, Pool: pool.or(def)}
	}
	if a := c.APNs; a != nil {
		opts := []apns.Option{apns.WithLogger(log)}
		if a.Connections > 0 {
			opts = append(opts, apns.WithConnections(a.Connections))
		}
		if a.Transport != "" {
			opts = append(opts, apns.WithTransport(apns.Transport(a.Transport)))
		}
		s, err := apns.New(apns.Config{
			Topic: a.Topic, Production: a.Production, Host: a.Host, KeyID: a.KeyID, TeamID: a.TeamID,
			Key: []byte(a.Key.Value()), Certificate: []byte(a.Certificate.Value()), CertificatePassword: a.CertificatePassword.Value(),
			TLS: a.TLS.channels(),
		}, opts...)
		// Pushes in flight are bounded by the HTTP/2 streams the server
		// allows (its SETTINGS_MAX_CONCURRENT_STREAMS per connection), not by
		// the pool's workers: Send starts a batch's pushes at once (up to
		// 500) and each waits for a free stream. Three workers per
		// connection with batches of 500 offer ~1,500 pushes per
		// connection, more than APNs' 1,000 streams, so the server's limit
		// is the one that binds. (256 workers of one push each capped a
		// 20 ms APNs at 256 in flight: ~11k pushes/s.)
		conns := a.Connections
		if conns == 0 {
			conns = apns.DefaultConnections
		}
		add(channels.APNs, s, err, a.Pool, PoolConfig{Workers: max(3*conns, 4), BatchSize: 500})
	}
	if f := c.FCM; f != nil {
		s, err := fcm.New(fcm.Config{ProjectID: f.ProjectID, CredentialsJSON: []byte(f.Credentials.Value()), Endpoint: f.Endpoint, TLS: f.TLS.channels()}, fcm.WithLogger(log))
		add(channels.FCM, s, err, f.Pool, PoolConfig{Workers: 4, BatchSize: 500})
	}
	if e := c.Email; e != nil {
		s, err := email.New(email.Config{
			Host: e.Host, Port: e.Port, TLSMode: email.TLSMode(e.TLSMode), TLS: e.TLS.channels(),
			Auth: email.AuthMethod(e.Auth), Username: e.Username, Password: e.Password.Value(),
			HELO: e.HELO, From: e.From, MessageIDDomain: e.MessageIDDomain,
			Connections: e.Connections, MessagesPerConn: e.MessagesPerConn, DisablePipelining: e.DisablePipelining,
			DisableChunking: e.DisableChunking, MessagesPerWrite: e.MessagesPerWrite,
		}, email.WithLogger(log), email.WithTracking(bo.links))
		conns := e.Connections
		if conns == 0 {
			conns = email.DefaultConnections
		}
		add(channels.Email, s, err, e.Pool, PoolConfig{Workers: max(conns, 4), BatchSize: 50})
	}
	if m := c.SMS; m != nil {
		s, err := sms.New(sms.Config{
			AccountSID: m.AccountSID, AuthToken: m.AuthToken.Value(), APIKeySID: m.APIKeySID, APIKeySecret: m.APIKeySecret.Value(),
			From: m.From, MessagingServiceSID: m.MessagingServiceSID, StatusCallback: m.StatusCallback,
			BaseURL: m.BaseURL, TLS: m.TLS.channels(),
		}, sms.WithLogger(log), sms.WithStatusCallbacks(bo.links))
		add(channels.SMS, s, err, m.Pool, PoolConfig{Workers: 8, BatchSize: 10})
	}
	if w := c.WebPush; w != nil {
		s, err := webpush.New(webpush.Config{
			VAPIDPublicKey: w.VAPIDPublicKey, VAPIDPrivateKey: w.VAPIDPrivateKey.Value(), Subscriber: w.Subscriber,
			TTL: time.Duration(w.TTL), AllowedHosts: w.AllowedHosts, AllowPlainHTTP: w.AllowPlainHTTP, TLS: w.TLS.channels(),
			AllowNetworks: w.AllowNetworks, AllowPrivateNetworks: w.AllowPrivateNetworks,
		}, webpush.WithLogger(log))
		add(channels.WebPush, s, err, w.Pool, PoolConfig{Workers: 4, BatchSize: 32})
	}
	if h := c.Webhook; h != nil {
		pool := h.Pool.or(PoolConfig{Workers: 64, BatchSize: 1})
		maxConns := h.MaxConnsPerHost
		if maxConns == 0 {
			maxConns = min(pool.Workers*min(pool.BatchSize, webhook.DefaultConcurrency), webhook.DefaultMaxConnsPerHost)
		}
		s, err := webhook.New(webhook.Config{
			URL: h.URL, Method: h.Method, Secret: h.Secret.Value(), Timeout: time.Duration(h.Timeout),
			AllowedHosts: h.AllowedHosts, TLS: h.TLS.channels(), MaxConnsPerHost: maxConns, Transport: webhook.Transport(h.Transport),
			Pipeline:      h.Pipeline,
			AllowNetworks: h.AllowNetworks, AllowPrivateNetworks: h.AllowPrivateNetworks,
		}, webhook.WithLogger(log))
		add(channels.Webhook, s, err, h.Pool, pool)
	}
	return out, errors.Join(errs...)
}

// or fills zero fields of p from def.
func (p PoolConfig) or(def PoolConfig) PoolConfig {
	if p.Workers == 0 {
		p.Workers = def.Workers
	}
	if p.BatchSize == 0 {
		p.BatchSize = def.BatchSize
	}
	return p
}

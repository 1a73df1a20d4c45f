package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/store/deliverylog"
	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/tracking"
)

// TrackingConfig is the public tracking endpoint (package tracking): Twilio
// status callbacks, email opens and clicks, one-click unsubscribes. It is
// a listener of its own: the admin API and its token never face the
// internet.
type TrackingConfig struct {
	// Listen is the public listener's address (":8090"); empty: tracking off.
	Listen string `yaml:"listen"`
	// BaseURL is how the internet reaches Listen (a proxy's https URL,
	// optionally with a path prefix); every tracking URL starts with it.
	BaseURL string `yaml:"base_url"`
	// Secret is the HMAC-SHA256 key of the tokens (at least 16 bytes). Every
	// daemon behind one base URL needs the same one; changing it voids the
	// links of messages already sent.
	Secret Secret `yaml:"secret"`
	// MaxAge refuses tokens older than this (default 4320h, 180 days; 0s: never).
	MaxAge *Duration `yaml:"max_age"`
	// TwilioAuthToken validates X-Twilio-Signature (default
	// channels.sms.auth_token: Twilio signs with the account's auth token,
	// also when messages are sent with an API key).
	TwilioAuthToken Secret `yaml:"twilio_auth_token"`
}

// DefaultTrackingMaxAge is how long tracking links work by default.
const DefaultTrackingMaxAge = 180 * 24 * time.Hour

// Enabled reports whether the daemon serves the tracking endpoint.
func (c TrackingConfig) Enabled() bool { return c.Listen != "" }

func (c TrackingConfig) validate() ConfigErrors {
	var errs ConfigErrors
	add := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if !c.Enabled() {
		if c.BaseURL != "" || c.Secret.Set() {
			add("tracking.listen", "required when tracking is configured (e.g. \":8090\")")
		}
		return errs
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("tracking.listen", "%q is not host:port", c.Listen)
	}
	if u, err := url.Parse(c.BaseURL); c.BaseURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		add("tracking.base_url", "required: the public http(s) URL that reaches tracking.listen (https for one-click unsubscribe)")
	}
	if len(c.Secret.Value()) < tracking.MinKeyBytes {
		add("tracking.secret", "required: at least %d bytes (e.g. secret: {env: NOTIFYD_TRACKING_SECRET}, openssl rand -hex 32)", tracking.MinKeyBytes)
	}
	if c.MaxAge != nil && *c.MaxAge < 0 {
		add("tracking.max_age", "must not be negative")
	}
	return errs
}

// Links builds the URL signer the channels and the endpoint share; nil
// when tracking is off.
func (c TrackingConfig) Links(now func() time.Time) (*tracking.Links, error) {
	if !c.Enabled() {
		return nil, nil
	}
	maxAge := DefaultTrackingMaxAge
	if c.MaxAge != nil {
		maxAge = time.Duration(*c.MaxAge)
	}
	opts := []tracking.SignerOption{tracking.WithMaxAge(maxAge)}
	if now != nil {
		opts = append(opts, tracking.WithClock(now))
	}
	s, err := tracking.NewSigner([]byte(c.Secret.Value()), opts...)
	if err != nil {
		return nil, err
	}
	return tracking.NewLinks(c.BaseURL, s)
}

// engagementRecorder is where the tracking endpoint's events go: the
// unsubscribe to the feedback stream (the data store drops the consent),
// the count to the campaign's state, the record to the delivery log.
type engagementRecorder struct {
	dlog     *deliverylog.Log // nil: delivery_log off
	masker   *deliverylog.Masker
	counts   campaigns.EngagementLog // nil: the state store keeps none
	feedback channels.FeedbackSink
	shard    *shard.Store
}

var _ tracking.Recorder = (*engagementRecorder)(nil)

// Record implements tracking.Recorder. A failed feedback write or count
// is an error (the endpoint answers 503 and the sender may retry; counts
// do not double); a dropped log record is counted by the log.
func (r *engagementRecorder) Record(ctx context.Context, ev tracking.Event) error {
	ref := ev.Ref
	flow := strings.HasPrefix(ref.MessageID, "f:")
	var addr string
	if ev.Type == tracking.Unsubscribed {
		addr = r.address(ref)
		if r.feedback != nil {
			if err := r.feedback.RecordFeedback(ctx, []channels.Feedback{{Channel: ref.Channel, Address: addr, UserID: ref.UserID, UserKey: ref.UserKey,
				Campaign: ref.Campaign, MessageID: ref.MessageID, Reason: channels.ReasonUnsubscribed, Code: "one_click", At: ev.At}}); err != nil {
				return fmt.Errorf("record unsubscribe feedback: %w", err)
			}
		}
	}
	if r.counts != nil && !flow {
		if err := r.counts.CountEngagement(ctx, ref.Campaign, []campaigns.Engagement{{Channel: ref.Channel, Event: string(ev.Type), MessageID: ref.MessageID}}); err != nil {
			return err
		}
	}
	if r.dlog != nil {
		rec := deliverylog.Record{MessageID: ref.MessageID, Event: "engagement", Kind: "campaign", Campaign: ref.Campaign, UserID: ref.UserID,
			UserKey: int64(ref.UserKey), Channel: ref.Channel, ProviderID: ev.ProviderID, Outcome: string(ev.Type), Reason: ev.Reason,
			ProviderCode: ev.Code, AnsweredAt: ev.At.UnixMicro(), Link: ev.URL}
		if ev.Type == tracking.Delivered || ev.Type == tracking.Undelivered {
			rec.Event = "delivery"
		}
		if addr != "" {
			rec.Address = r.masker.Mask(ref.Channel, addr)
		}
		if flow {
			rec.Kind, rec.Trigger = "flow", flowTrigger(ref.MessageID, ref.Campaign)
		}
		b := r.dlog.Batch()
		b.Add(&rec)
		_ = r.dlog.Commit(ctx, b) // drops are counted and logged by the log
	}
	return nil
}

// address is the user's email or phone from the shard (the token does not
// carry it: links get forwarded and logged), "" when not found.
func (r *engagementRecorder) address(ref tracking.Ref) string {
	if r.shard == nil {
		return ""
	}
	rd, err := r.shard.Acquire()
	if err != nil {
		return ""
	}
	defer func() { _ = rd.Release() }()
	row, ok, err := rd.Find(ref.UserID)
	if err != nil || !ok {
		return ""
	}
	switch ref.Channel {
	case channels.Email:
		return strings.Clone(row.Email())
	case channels.SMS:
		return strings.Clone(row.Phone())
	}
	return ""
}

// openTracking builds the public endpoint when the config enables it.
func (d *Daemon) openTracking(now func() time.Time, links *tracking.Links, twilioToken string) error {
	if links == nil {
		return nil
	}
	rec := &engagementRecorder{dlog: d.dlog, masker: d.masker, feedback: d.feedback, shard: d.shard}
	if el, ok := d.state.(campaigns.EngagementLog); ok {
		rec.counts = el
	}
	h, err := tracking.NewHandler(tracking.Config{Links: links, Recorder: rec, TwilioAuthToken: twilioToken, Now: now,
		Logger: d.log.With("component", "tracking"), Registerer: d.reg})
	if err != nil {
		return err
	}
	d.tracking = tracking.NewServer(h)
	return nil
}

// serveTracking serves the public endpoint until shutdown closes it.
func (d *Daemon) serveTracking(ln net.Listener, errc chan<- error) {
	if err := d.tracking.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errc <- fmt.Errorf("serve tracking endpoint: %w", err)
	}
}

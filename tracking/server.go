package tracking

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	twclient "github.com/twilio/twilio-go/client"
)

// EventType is what happened to a message after it was sent. The values
// are the delivery log's outcome column for these events.
type EventType string

const (
	// Delivered and Undelivered come from the provider (Twilio status
	// callbacks: delivered; undelivered or failed).
	Delivered   EventType = "delivered"
	Undelivered EventType = "undelivered"
	// Opened, Clicked and Unsubscribed come from the recipient.
	Opened       EventType = "opened"
	Clicked      EventType = "clicked"
	Unsubscribed EventType = "unsubscribed"
)

// Event is one engagement or delivery event about one message.
type Event struct {
	Type EventType
	Ref  Ref
	At   time.Time
	// Link and URL are the clicked link's number and target (Clicked).
	Link int
	URL  string
	// ProviderID, Reason and Code are the provider's message id, status
	// and error code (Twilio: MessageSid, MessageStatus, ErrorCode).
	ProviderID, Reason, Code string
}

// Recorder takes the events the endpoint accepted. Record is called from
// request handlers, concurrently.
type Recorder interface {
	Record(ctx context.Context, ev Event) error
}

// RecorderFunc adapts a function to a Recorder.
type RecorderFunc func(ctx context.Context, ev Event) error

// Record calls f.
func (f RecorderFunc) Record(ctx context.Context, ev Event) error { return f(ctx, ev) }

// Config configures the public handler.
type Config struct {
	Links    *Links
	Recorder Recorder
	// TwilioAuthToken validates X-Twilio-Signature; empty: the Twilio
	// endpoint answers 404.
	TwilioAuthToken string
	Now             func() time.Time
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}

// maxBody bounds a request body (a Twilio callback is well under 2 KiB).
const maxBody = 64 << 10

// Handler serves the public endpoints.
type Handler struct {
	cfg       Config
	mux       *http.ServeMux
	validator *twclient.RequestValidator
	origin    string // scheme://host of the base URL: what Twilio signed
	events    *prometheus.CounterVec
	refused   *prometheus.CounterVec
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the handler of the public endpoints, rooted at the
// base URL's path.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Links == nil || cfg.Recorder == nil {
		return nil, errors.New("new tracking handler: Links and Recorder are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	u, _ := url.Parse(cfg.Links.base) // checked by NewLinks
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), origin: u.Scheme + "://" + u.Host}
	h.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "notifyd_engagement_events_total",
		Help: "Engagement and delivery events accepted by the tracking endpoint, by channel and event."}, []string{"channel", "event"})
	h.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "notifyd_tracking_refused_total",
		Help: "Tracking requests refused, by endpoint and reason (bad_token, bad_signature, bad_link, expired, bad_request)."}, []string{"endpoint", "reason"})
	if cfg.Registerer != nil {
		for _, c := range []*prometheus.CounterVec{h.events, h.refused} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register tracking metrics: %w", err)
			}
		}
	}
	if cfg.TwilioAuthToken != "" {
		v := twclient.NewRequestValidator(cfg.TwilioAuthToken)
		h.validator = &v
	}
	prefix := strings.TrimSuffix(u.Path, "/")
	h.mux.HandleFunc("GET "+prefix+pathOpen+"{tok}", h.open)
	h.mux.HandleFunc("GET "+prefix+pathClick+"{tok}/{link}/{sig}", h.click)
	h.mux.HandleFunc("GET "+prefix+pathUnsubscribe+"{tok}", h.unsubscribePage)
	h.mux.HandleFunc("POST "+prefix+pathUnsubscribe+"{tok}", h.unsubscribe)
	h.mux.HandleFunc("POST "+prefix+pathTwilio+"{tok}", h.twilioStatus)
	h.mux.HandleFunc("GET "+prefix+"/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "not found", http.StatusNotFound) })
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

// NewServer wraps h in an http.Server hardened like the admin API's: every
// phase of a request is time-bounded and headers are capped.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second,
		IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
}

// verify checks the {tok} of r; a refused token is answered and counted.
// Expired tokens are returned with expired=true and not answered.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request, endpoint string) (ref Ref, expired, ok bool) {
	ref, err := h.cfg.Links.signer.Verify(r.PathValue("tok"))
	switch {
	case err == nil:
		return ref, false, true
	case errors.Is(err, ErrExpired):
		h.refused.WithLabelValues(endpoint, "expired").Inc()
		return ref, true, true
	case errors.Is(err, ErrSignature):
		h.refused.WithLabelValues(endpoint, "bad_signature").Inc()
		http.Error(w, "invalid link", http.StatusForbidden)
	default:
		h.refused.WithLabelValues(endpoint, "bad_token").Inc()
		http.Error(w, "invalid link", http.StatusNotFound)
	}
	return Ref{}, false, false
}

// record hands ev to the recorder and counts it.
func (h *Handler) record(ctx context.Context, ev Event) error {
	ev.At = h.cfg.Now()
	if err := h.cfg.Recorder.Record(ctx, ev); err != nil {
		h.cfg.Logger.Warn("record engagement event", "event", string(ev.Type), "campaign", ev.Ref.Campaign, "error", err)
		return err
	}
	h.events.WithLabelValues(ev.Ref.Channel, string(ev.Type)).Inc()
	return nil
}

// pixel is a transparent 1×1 GIF.
var pixel = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b")

func (h *Handler) open(w http.ResponseWriter, r *http.Request) {
	ref, expired, ok := h.verify(w, r, "open")
	if !ok {
		return
	}
	if !expired {
		_ = h.record(r.Context(), Event{Type: Opened, Ref: ref}) // the image is served whatever the store says
	}
	w.Header().Set("Content-Type", "image/gif")
	_, _ = w.Write(pixel)
}

func (h *Handler) click(w http.ResponseWriter, r *http.Request) {
	ref, expired, ok := h.verify(w, r, "click")
	if !ok {
		return
	}
	i, okIdx := linkIndex(r.PathValue("link"))
	target := r.URL.Query().Get("u")
	if !okIdx || !trackable(target) || !h.cfg.Links.signer.VerifyLink(ref.Campaign, i, target, r.PathValue("sig")) {
		// Not a URL this campaign sent: never redirect to it.
		h.refused.WithLabelValues("click", "bad_link").Inc()
		http.Error(w, "invalid link", http.StatusForbidden)
		return
	}
	if !expired {
		_ = h.record(r.Context(), Event{Type: Clicked, Ref: ref, Link: i, URL: target})
	}
	http.Redirect(w, r, target, http.StatusFound)
}

var unsubscribePage = template.Must(template.New("unsubscribe").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><meta name="robots" content="noindex">
<title>{{.Title}}</title></head><body style="font-family:sans-serif;max-width:32em;margin:3em auto">
<h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Form}}<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>{{end}}
</body></html>
`))

type pageData struct {
	Title, Text string
	Form        bool
}

func writePage(w http.ResponseWriter, status int, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	w.WriteHeader(status)
	_ = unsubscribePage.Execute(w, d)
}

// unsubscribePage confirms before unsubscribing: mail scanners and link
// previews fetch every GET, so a GET must never unsubscribe.
func (h *Handler) unsubscribePage(w http.ResponseWriter, r *http.Request) {
	_, expired, ok := h.verify(w, r, "unsubscribe")
	if !ok {
		return
	}
	if expired {
		writePage(w, http.StatusGone, pageData{Title: "Link expired", Text: "This unsubscribe link has expired. Use the link in a newer message."})
		return
	}
	writePage(w, http.StatusOK, pageData{Title: "Unsubscribe", Text: "Stop receiving these emails?", Form: true})
}

// unsubscribe is the RFC 8058 one-click POST (and the confirmation form's).
func (h *Handler) unsubscribe(w http.ResponseWriter, r *http.Request) {
	ref, expired, ok := h.verify(w, r, "unsubscribe")
	if !ok {
		return
	}
	_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxBody))
	if expired {
		writePage(w, http.StatusGone, pageData{Title: "Link expired", Text: "This unsubscribe link has expired. Use the link in a newer message."})
		return
	}
	if err := h.record(r.Context(), Event{Type: Unsubscribed, Ref: ref}); err != nil {
		writePage(w, http.StatusServiceUnavailable, pageData{Title: "Try again", Text: "We could not record your request. Please try again in a minute."})
		return
	}
	writePage(w, http.StatusOK, pageData{Title: "Unsubscribed", Text: "You will not receive these emails any more."})
}

// twilioStatus takes a Twilio message status callback. The signature
// covers the URL Twilio was given (the public base URL's origin and this
// request's path and query) and the form parameters.
func (h *Handler) twilioStatus(w http.ResponseWriter, r *http.Request) {
	if h.validator == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		h.refused.WithLabelValues("twilio", "bad_request").Inc()
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" || !h.validator.ValidateBody(h.origin+r.URL.RequestURI(), body, sig) {
		h.refused.WithLabelValues("twilio", "bad_signature").Inc()
		http.Error(w, "invalid signature", http.StatusForbidden)
		return
	}
	ref, expired, ok := h.verify(w, r, "twilio")
	if !ok {
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		h.refused.WithLabelValues("twilio", "bad_request").Inc()
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	status := form.Get("MessageStatus")
	var typ EventType
	switch status {
	case "delivered":
		typ = Delivered
	case "undelivered", "failed":
		typ = Undelivered
	default: // queued, sending, sent, accepted, read...: not final
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if expired {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ev := Event{Type: typ, Ref: ref, ProviderID: form.Get("MessageSid"), Code: form.Get("ErrorCode")}
	if typ == Undelivered {
		ev.Reason = status
	}
	if err := h.record(r.Context(), ev); err != nil {
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notifyd/notifyd/campaigns"
	"github.com/notifyd/notifyd/templates"
)

// MaxBodyBytes caps an API request body.
const MaxBodyBytes = 1 << 20

// CampaignService is what the admin API needs from the campaign engine.
type CampaignService interface {
	Create(ctx context.Context, body []byte) (campaigns.CampaignStatus, bool, error)
	Get(ctx context.Context, id string) (campaigns.CampaignStatus, error)
	List(ctx context.Context, after string, limit int) ([]campaigns.CampaignStatus, error)
	Pause(ctx context.Context, id string) (campaigns.CampaignStatus, error)
	Resume(ctx context.Context, id string) (campaigns.CampaignStatus, error)
	Cancel(ctx context.Context, id string) (campaigns.CampaignStatus, error)
	RetryFailed(ctx context.Context, id string) (campaigns.CampaignStatus, error)
}

// ReadyFunc reports whether the daemon can serve (shard mapped, state reachable).
type ReadyFunc func(ctx context.Context) error

// APIConfig configures the admin API.
type APIConfig struct {
	// Token is the bearer token every /v1 and /metrics request must carry.
	Token string
	// PublicMetrics serves /metrics without the token (for scrapers on a private network).
	PublicMetrics bool
	// Events serves GET /v1/events (the live view); nil: not served.
	Events http.Handler
	// Flows serves /v1/flows and /v1/triggers; nil: not served.
	Flows FlowService
	// TemplateLimits are the ceilings of content.limits (config
	// templates.limits); zero fields are the templates package's defaults.
	TemplateLimits templates.Limits
	// Messages serves GET /v1/messages (delivery log look-ups); nil: not served.
	Messages http.HandlerFunc
	// Preview serves ?dry_run=true and /v1/campaigns/{id}/test-send; nil: not served.
	Preview PreviewService
}

// previewTimeout bounds a dry run or a test send. They are not state calls
// (the 1s bound of those would cut a dry run over a million members short):
// a dry run walks the segment, a test send waits for the providers' answers.
const previewTimeout = time.Minute

// NewAPI returns the admin API handler.
func NewAPI(cfg APIConfig, svc CampaignService, ready ReadyFunc, gatherer prometheus.Gatherer, log *slog.Logger) http.Handler {
	a := &api{svc: svc, log: log, ready: ready, limits: cfg.TemplateLimits}
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.Handler { return requireToken(cfg.Token, h) }
	mux.Handle("POST /v1/campaigns", auth(a.create))
	mux.Handle("GET /v1/campaigns", auth(a.list))
	mux.Handle("GET /v1/campaigns/{id}", auth(a.get))
	mux.Handle("POST /v1/campaigns/{id}/{action}", auth(a.action))
	if cfg.Preview != nil {
		a.preview = cfg.Preview
		mux.Handle("POST /v1/campaigns/{id}/test-send", auth(a.testSend))
	}
	if cfg.Flows != nil {
		a.flowRoutes(mux, auth, cfg.Flows)
	}
	if cfg.Messages != nil {
		mux.Handle("GET /v1/messages", auth(cfg.Messages))
	}
	if cfg.Events != nil {
		mux.Handle("GET /v1/events", auth(cfg.Events.ServeHTTP))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			// Probes call this without a token; the raw error names
			// internal addresses and paths. They get the component, an
			// authenticated caller (and the log) the details.
			body := map[string]string{"status": "not ready", "error": readinessSummary(err)}
			if authorized(cfg.Token, r) {
				body["detail"] = err.Error()
			}
			a.log.Debug("readiness probe: not ready", "error", err) // probes poll; the failing component logs its own errors
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})
	if cfg.PublicMetrics {
		mux.Handle("GET /metrics", metrics)
	} else {
		mux.Handle("GET /metrics", requireToken(cfg.Token, metrics.ServeHTTP))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// PreviewService is the engine's dry run and test send; a CampaignService
// that has them serves ?dry_run=true and /test-send.
type PreviewService interface {
	DryRun(ctx context.Context, body []byte, opts campaigns.DryRunOptions) (campaigns.DryRunReport, error)
	TestSend(ctx context.Context, id string, users []string) ([]campaigns.TestSendResult, error)
}

type api struct {
	svc     CampaignService
	preview PreviewService
	log     *slog.Logger
	ready   ReadyFunc
	limits  templates.Limits
}

// checkLimits refuses a campaign or flow body whose content.limits raise
// one of the daemon's ceilings, before the engine compiles it. A body that
// does not decode here is left to the engine, whose decoder names the
// field at fault.
func (a *api) checkLimits(body []byte) error {
	var probe struct {
		Content struct {
			Limits templates.Limits `json:"limits"`
		} `json:"content"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return nil
	}
	if err := probe.Content.Limits.CheckWithin(a.limits); err != nil {
		return fmt.Errorf("check content.limits: %w", err)
	}
	return nil
}

// readinessSummary names the component that is not ready ("redis
// unavailable") without the error's details: the ready check's errors are
// "<component>: <cause>".
func readinessSummary(err error) string {
	component, _, ok := strings.Cut(err.Error(), ":")
	if !ok || strings.ContainsAny(component, " /") {
		return "unavailable"
	}
	return component + " unavailable"
}

// authorized reports whether r carries the bearer token, in constant time.
func authorized(token string, r *http.Request) bool {
	got := []byte(r.Header.Get("Authorization"))
	return token != "" && subtle.ConstantTimeCompare(got, []byte("Bearer "+token)) == 1
}

// requireToken checks "Authorization: Bearer <token>" in constant time.
func requireToken(token string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(token, r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="notifyd"`)
			writeError(w, http.StatusUnauthorized, "", "missing or wrong bearer token")
			return
		}
		h(w, r)
	})
}

type apiError struct {
	Error struct {
		Field   string `json:"field,omitempty"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	var e apiError
	e.Error.Field, e.Error.Message = field, msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// fail maps an engine error to a status and a JSON error naming the field.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *campaigns.FieldError
	var ce *templates.CompileError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, fe.Field, fe.Msg)
	case errors.As(err, &ce):
		writeError(w, http.StatusBadRequest, compileErrorField(ce), err.Error())
	case errors.Is(err, campaigns.ErrNotFound):
		what := "campaign"
		if strings.HasPrefix(r.URL.Path, "/v1/flows") {
			what = "flow"
		}
		writeError(w, http.StatusNotFound, "id", what+" not found")
	case errors.Is(err, campaigns.ErrConflict):
		writeError(w, http.StatusConflict, "id", "a campaign with this id exists with a different definition")
	case errors.Is(err, campaigns.ErrInvalidTransition), errors.Is(err, campaigns.ErrStatusChanged):
		writeError(w, http.StatusConflict, "status", err.Error())
	case errors.Is(err, campaigns.ErrHeld):
		writeError(w, http.StatusConflict, "id", "campaign is being run by another daemon")
	case errors.Is(err, campaigns.ErrOverloaded):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "", "trigger queue full; retry later")
	case errors.Is(err, campaigns.ErrEngineClose):
		writeError(w, http.StatusServiceUnavailable, "", "daemon is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		// The request's bound on state calls ran out: the store is stalled.
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "", "state store did not answer in time; retry later")
	default:
		a.log.Error("admin API request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		// Errors the state layer does not name are infrastructure failures
		// (state.go); when the daemon is not ready (Redis away), say so and
		// invite a retry instead of blaming the request.
		if a.checkReady(r.Context()) != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "", "state store unavailable; retry later")
			return
		}
		writeError(w, http.StatusInternalServerError, "", "internal error; see the daemon's log")
	}
}

// checkReady runs the readiness check with a short deadline of its own: a
// caller's long deadline must not hold a request on a hung store.
func (a *api) checkReady(ctx context.Context) error {
	if a.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	return a.ready(ctx)
}

// compileErrorField is a compile error's place in the request body:
// content[.locales.<tag>][.<channel>].<field>, never with an empty segment.
func compileErrorField(ce *templates.CompileError) string {
	parts := []string{"content"}
	if ce.Locale != "" {
		parts = append(parts, "locales", ce.Locale)
	}
	for _, p := range []string{ce.Channel, ce.Field} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ".")
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body", "request body over "+strconv.Itoa(MaxBodyBytes)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "body", "read body: "+err.Error())
		return
	}
	if err := a.checkLimits(body); err != nil {
		a.fail(w, r, err)
		return
	}
	if q := r.URL.Query(); q.Has("dry_run") && q.Get("dry_run") != "false" {
		a.dryRun(w, r, body)
		return
	}
	st, created, err := a.svc.Create(r.Context(), body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/campaigns/"+st.ID)
	}
	writeJSON(w, status, st)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit", "want an integer from 1 to 1000")
			return
		}
		limit = n
	}
	list, err := a.svc.List(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	resp := map[string]any{"campaigns": list}
	if len(list) == limit {
		resp["next"] = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *api) action(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var (
		st  campaigns.CampaignStatus
		err error
	)
	switch r.PathValue("action") {
	case "pause":
		st, err = a.svc.Pause(r.Context(), id)
	case "resume":
		st, err = a.svc.Resume(r.Context(), id)
	case "cancel":
		st, err = a.svc.Cancel(r.Context(), id)
	case "retry-failed":
		st, err = a.svc.RetryFailed(r.Context(), id)
	default:
		writeError(w, http.StatusNotFound, "action", "unknown action "+strconv.Quote(r.PathValue("action"))+"; want pause, resume, cancel or retry-failed")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// dryRun answers POST /v1/campaigns?dry_run=true[&sample=N][&users=a,b]:
// the report of what the campaign would do, nothing stored or sent.
func (a *api) dryRun(w http.ResponseWriter, r *http.Request, body []byte) {
	q := r.URL.Query()
	if v := q.Get("dry_run"); v != "true" && v != "1" {
		writeError(w, http.StatusBadRequest, "dry_run", `want "true" or "false"`)
		return
	}
	if a.preview == nil {
		writeError(w, http.StatusNotImplemented, "dry_run", "this daemon's engine has no dry run")
		return
	}
	var opts campaigns.DryRunOptions
	if s := q.Get("sample"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > campaigns.MaxPreviewSample {
			writeError(w, http.StatusBadRequest, "sample", "want an integer from 0 to "+strconv.Itoa(campaigns.MaxPreviewSample))
			return
		}
		opts.Sample = n
	}
	if s := q.Get("users"); s != "" {
		opts.Users = strings.Split(s, ",")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), previewTimeout)
	defer cancel()
	stop := context.AfterFunc(r.Context(), func() {
		if r.Context().Err() == context.Canceled {
			cancel() // the client went away
		}
	})
	defer stop()
	rep, err := a.preview.DryRun(ctx, body, opts)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// testSend answers POST /v1/campaigns/{id}/test-send {"users": [...]}.
func (a *api) testSend(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Users []string `json:"users"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body", `want {"users": ["user id", ...]}: `+strings.TrimPrefix(err.Error(), "json: "))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), previewTimeout)
	defer cancel()
	res, err := a.preview.TestSend(ctx, r.PathValue("id"), req.Users)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": res})
}

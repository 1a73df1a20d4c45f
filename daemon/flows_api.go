package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/notifyd/notifyd/campaigns"
)

// FlowService is what the admin API needs from the flow engine.
type FlowService interface {
	CreateFlow(ctx context.Context, body []byte) (campaigns.FlowStatus, bool, error)
	GetFlow(ctx context.Context, id string) (campaigns.FlowStatus, error)
	ListFlows(ctx context.Context) []campaigns.FlowStatus
	SetFlowStatus(ctx context.Context, id string, to campaigns.Status) (campaigns.FlowStatus, error)
	Fire(ctx context.Context, triggers []campaigns.Trigger) ([]campaigns.TriggerResult, error)
}

// flowRoutes serves /v1/flows and /v1/triggers.
func (a *api) flowRoutes(mux *http.ServeMux, auth func(http.HandlerFunc) http.Handler, flows FlowService) {
	mux.Handle("POST /v1/flows", auth(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readJSONBody(w, r)
		if !ok {
			return
		}
		if err := a.checkLimits(body); err != nil {
			a.fail(w, r, err)
			return
		}
		st, created, err := flows.CreateFlow(r.Context(), body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
			w.Header().Set("Location", "/v1/flows/"+st.ID)
		}
		writeJSON(w, status, st)
	}))
	mux.Handle("GET /v1/flows", auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"flows": flows.ListFlows(r.Context())})
	}))
	mux.Handle("GET /v1/flows/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		st, err := flows.GetFlow(r.Context(), r.PathValue("id"))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.Handle("DELETE /v1/flows/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		st, err := flows.SetFlowStatus(r.Context(), r.PathValue("id"), campaigns.StatusCancelled)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.Handle("POST /v1/flows/{id}/{action}", auth(func(w http.ResponseWriter, r *http.Request) {
		to := map[string]campaigns.Status{"pause": campaigns.StatusPaused, "resume": campaigns.StatusRunning}[r.PathValue("action")]
		if to == "" {
			writeError(w, http.StatusNotFound, "action", "unknown action "+strconv.Quote(r.PathValue("action"))+"; want pause or resume")
			return
		}
		st, err := flows.SetFlowStatus(r.Context(), r.PathValue("id"), to)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.Handle("POST /v1/triggers", auth(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readJSONBody(w, r)
		if !ok {
			return
		}
		triggers, err := campaigns.DecodeTriggers(body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		// Fire answers before the dedup claim is made; with the state
		// store away that claim fails and the trigger would be dropped
		// after a 202. Refuse it while the caller can still retry.
		if err := a.checkReady(r.Context()); err != nil {
			a.log.Warn("trigger refused: daemon not ready", "error", err)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "", "state store unavailable; triggers are not taken; retry later")
			return
		}
		res, err := flows.Fire(r.Context(), triggers)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		overloaded := 0
		for _, x := range res {
			if x.Status == "overloaded" {
				overloaded++
			}
		}
		if overloaded == len(res) {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"results": res})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"results": res})
	}))
}

// readJSONBody reads a bounded JSON body, answering the error itself.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSONType(ct) {
		writeError(w, http.StatusUnsupportedMediaType, "", "Content-Type must be application/json")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body", "request body over "+strconv.Itoa(MaxBodyBytes)+" bytes")
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "body", "read body: "+err.Error())
		return nil, false
	}
	return body, true
}

func isJSONType(ct string) bool {
	return len(ct) >= 16 && ct[:16] == "application/json"
}

package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/notifyd/notifyd/campaigns"
)

// SSE details of GET /v1/events.
const (
	// EventSnapshot is the SSE event name of a snapshot frame.
	EventSnapshot = "snapshot"
	// eventsRetryMs is the reconnection delay suggested to EventSource
	// clients: long enough not to hammer a restarting daemon.
	eventsRetryMs = 2000
	// eventsWriteTimeout bounds one frame's write: a client that stopped
	// reading is dropped instead of pinning a goroutine forever (the admin
	// server has no WriteTimeout, which would cut every stream).
	eventsWriteTimeout = 10 * time.Second
)

// ServeHTTP streams snapshots as server-sent events: a retry hint, the
// latest snapshot at once, then one per interval, with a comment line when
// idle for Heartbeat. ?campaign=ID keeps only that campaign (404 if unknown).
// The stream ends when the client goes away or the daemon shuts down.
func (h *EventHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("campaign")
	var fallback *CampaignSnapshot
	if filter != "" {
		st, err := h.src.Get(r.Context(), filter)
		switch {
		case errors.Is(err, campaigns.ErrNotFound):
			writeError(w, http.StatusNotFound, "campaign", "campaign not found")
			return
		case err != nil:
			// The state layer names every error a request can cause
			// (not found above); anything else is the store itself, and
			// the caller should come back, as for every other endpoint.
			h.log.Error("events stream: read campaign", "campaign", filter, "error", err)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "", "state store unavailable; retry later")
			return
		}
		_, segments, _ := h.shard()
		c := describeCampaign(st, segments)
		fallback = &c // shown until the hub's next sample includes it
	}
	select {
	case <-h.done:
		writeError(w, http.StatusServiceUnavailable, "", "daemon is shutting down")
		return
	default:
	}

	sub := h.subscribe(filter)
	defer h.unsubscribe(sub)
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx would otherwise buffer the stream
	w.WriteHeader(http.StatusOK)

	write := func(f func(io.Writer) error) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventsWriteTimeout))
		if err := f(w); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	send := func(fr *frame) bool {
		return write(func(w io.Writer) error { return writeFrame(w, fr, filter, fallback) })
	}
	if !write(func(w io.Writer) error { _, err := fmt.Fprintf(w, "retry: %d\n\n", eventsRetryMs); return err }) {
		return
	}
	h.mu.Lock()
	latest := h.latest
	h.mu.Unlock()
	if latest != nil && !send(latest) {
		return
	}
	heartbeat := time.NewTicker(h.cfg.Heartbeat)
	defer heartbeat.Stop()
	idle := false
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			_ = write(func(w io.Writer) error { _, err := io.WriteString(w, ": daemon shutting down\n\n"); return err })
			return
		case fr := <-sub.ch:
			if fr == latest {
				continue // already sent as the first frame
			}
			if !send(fr) {
				return
			}
			idle = false
		case <-heartbeat.C:
			// Only when nothing else was written for a whole period: snapshots
			// already keep the connection busy.
			if idle && !write(func(w io.Writer) error { _, err := io.WriteString(w, ": heartbeat\n\n"); return err }) {
				return
			}
			idle = true
		}
	}
}

// writeFrame writes one snapshot event. Unfiltered frames reuse the JSON
// the hub encoded once for every stream.
func writeFrame(w io.Writer, fr *frame, filter string, fallback *CampaignSnapshot) error {
	data := fr.json
	if filter != "" {
		var err error
		if data, err = json.Marshal(fr.snap.filtered(filter, fallback)); err != nil {
			return fmt.Errorf("encode snapshot: %w", err)
		}
	}
	_, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", fr.snap.Seq, EventSnapshot, data)
	return err
}

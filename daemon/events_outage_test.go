package daemon

import (
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

// TestEventsWhileStoreDown is issue 12 item 18: GET /v1/events?campaign=ID
// answers 503 with Retry-After while the state store is away, as every
// other endpoint does; 500 told the caller the daemon was broken.
func TestEventsWhileStoreDown(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
	}{
		{name: "store down", err: errors.New("redis: connection refused"), status: 503},
		{name: "unknown campaign", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHubFixture(t, EventsConfig{Ticks: make(chan time.Time)})
			f.camps.mu.Lock()
			f.camps.err = tc.err
			f.camps.mu.Unlock()
			rec := httptest.NewRecorder()
			f.hub.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/events?campaign=nope", nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 503 && rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

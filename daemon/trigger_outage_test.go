package daemon

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/campaigns"
)

// firingStub is a FlowService that records whether Fire was reached.
type firingStub struct{ fired int }

func (s *firingStub) CreateFlow(context.Context, []byte) (campaigns.FlowStatus, bool, error) {
	return campaigns.FlowStatus{}, true, nil
}
func (s *firingStub) GetFlow(context.Context, string) (campaigns.FlowStatus, error) {
	return campaigns.FlowStatus{}, campaigns.ErrNotFound
}
func (s *firingStub) ListFlows(context.Context) []campaigns.FlowStatus { return nil }
func (s *firingStub) SetFlowStatus(context.Context, string, campaigns.Status) (campaigns.FlowStatus, error) {
	return campaigns.FlowStatus{}, nil
}
func (s *firingStub) Fire(_ context.Context, ts []campaigns.Trigger) ([]campaigns.TriggerResult, error) {
	s.fired += len(ts)
	out := make([]campaigns.TriggerResult, len(ts))
	for i := range out {
		out[i].Status = "accepted"
	}
	return out, nil
}

// TestTriggerWhileStoreDown is issue 12 item 4: a trigger that arrives while
// the state store is down is answered 503 with Retry-After, never 202 and
// then dropped at its dedup claim.
func TestTriggerWhileStoreDown(t *testing.T) {
	tests := []struct {
		name       string
		ready      error
		wantStatus int
		wantFired  int
	}{
		{name: "store up", wantStatus: 202, wantFired: 1},
		{name: "store down", ready: errors.New("redis: dial tcp 10.0.0.7:6379: connection refused"), wantStatus: 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flows := &firingStub{}
			api := NewAPI(APIConfig{Token: testToken, Flows: flows}, &stubService{}, func(context.Context) error { return tc.ready }, prometheus.NewRegistry(), newTestLogger(&bytes.Buffer{}))
			req := httptest.NewRequest("POST", "/v1/triggers", bytes.NewReader([]byte(`{"flow":"welcome","user_id":"u-1"}`)))
			req.Header.Set("Authorization", "Bearer "+testToken)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus == 503 && rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if bytes.Contains(rec.Body.Bytes(), []byte("10.0.0.7")) {
				t.Fatalf("answer leaks the store's address: %s", rec.Body)
			}
			if flows.fired != tc.wantFired {
				t.Fatalf("Fire took %d triggers, want %d", flows.fired, tc.wantFired)
			}
		})
	}
}

// TestMissingFlowSaysFlow is part of issue 12 item 13.
func TestMissingFlowSaysFlow(t *testing.T) {
	api := NewAPI(APIConfig{Token: testToken, Flows: &firingStub{}}, &stubService{}, func(context.Context) error { return nil }, prometheus.NewRegistry(), newTestLogger(&bytes.Buffer{}))
	req := httptest.NewRequest("GET", "/v1/flows/nope", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if rec.Code != 404 || !bytes.Contains(rec.Body.Bytes(), []byte("flow not found")) {
		t.Fatalf("status %d body %s, want 404 flow not found", rec.Code, rec.Body)
	}
}

package daemon

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyzHidesDetails is issue 12 item 17: /readyz answers without a
// token, so it names the component that is down, not its address; an
// authenticated caller gets the details.
func TestReadyzHidesDetails(t *testing.T) {
	cause := errors.New("redis: dial tcp 10.0.0.7:6379: connect: connection refused")
	tests := []struct {
		name       string
		token      string
		wantIn     string
		wantDetail bool
	}{
		{name: "anonymous probe", wantIn: `"redis unavailable"`},
		{name: "wrong token", token: "nope-nope-nope-nope", wantIn: `"redis unavailable"`},
		{name: "operator", token: testToken, wantIn: `"redis unavailable"`, wantDetail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := NewAPI(APIConfig{Token: testToken}, &stubService{}, func(context.Context) error { return cause }, prometheus.NewRegistry(), newTestLogger(&bytes.Buffer{}))
			req := httptest.NewRequest("GET", "/readyz", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			body := rec.Body.String()
			if rec.Code != 503 || !strings.Contains(body, tc.wantIn) {
				t.Fatalf("status %d body %s, want 503 containing %s", rec.Code, body, tc.wantIn)
			}
			if got := strings.Contains(body, "10.0.0.7"); got != tc.wantDetail {
				t.Fatalf("details shown = %t, want %t: %s", got, tc.wantDetail, body)
			}
		})
	}
}

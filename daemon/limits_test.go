package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net"

	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/notifyd/notifyd/templates"
)

// TestTemplateLimitCeilings is issue 12 item 3: the daemon's configured
// ceilings bound content.limits; a caller may lower them, never raise them.
func TestTemplateLimitCeilings(t *testing.T) {
	body := func(limits string) []byte {
		return []byte(`{"id":"c1","segment":"all","channels":["sms"],"content":{"limits":` + limits + `,"sms":{"body":"hi"}}}`)
	}
	tests := []struct {
		name     string
		ceilings templates.Limits
		limits   string
		status   int
		field    string
	}{
		{name: "above a configured ceiling", ceilings: templates.Limits{MaxSteps: 1000}, limits: `{"max_steps":5000}`, status: 400, field: "content.limits.max_steps"},
		{name: "above the default ceiling", limits: `{"max_steps":20000000}`, status: 400, field: "content.limits.max_steps"},
		{name: "field cap raised", limits: `{"max_field_bytes":1073741824}`, status: 400, field: "content.limits.max_field_bytes"},
		{name: "negative", limits: `{"max_html_bytes":-1}`, status: 400, field: "content.limits.max_html_bytes"},
		{name: "lowered", ceilings: templates.Limits{MaxSteps: 1000}, limits: `{"max_steps":500}`, status: 201},
		{name: "none given", ceilings: templates.Limits{MaxSteps: 1000}, limits: `{}`, status: 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := NewAPI(APIConfig{Token: testToken, TemplateLimits: tc.ceilings}, &stubService{}, func(context.Context) error { return nil }, prometheus.NewRegistry(), newTestLogger(&bytes.Buffer{}))
			req := httptest.NewRequest("POST", "/v1/campaigns", bytes.NewReader(body(tc.limits)))
			req.Header.Set("Authorization", "Bearer "+testToken)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.field == "" {
				return
			}
			var out map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if got := errField(out); got != tc.field {
				t.Fatalf("error field %q, want %q: %s", got, tc.field, rec.Body)
			}
		})
	}
}

func TestTemplateLimitsConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "lowered", yaml: "templates:\n  limits:\n    max_steps: 5000\n"},
		{name: "raised within the hard limit", yaml: "templates:\n  limits:\n    max_steps: 100000\n"},
		{name: "above the hard limit", yaml: "templates:\n  limits:\n    max_steps: 20000000\n", wantErr: "templates.limits.max_steps"},
		{name: "negative", yaml: "templates:\n  limits:\n    max_field_bytes: -1\n", wantErr: "templates.limits.max_field_bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte("shard:\n  path: /tmp/x\nadmin:\n  token: " + testToken + "\n" + tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseConfig = %v, want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

// TestAdminTokenQuality is issue 12 item 17: tokens that never authenticate
// or are easy to guess are refused at start-up, without quoting them.
func TestAdminTokenQuality(t *testing.T) {
	tests := []struct {
		name, token, wantErr string
	}{
		{name: "good", token: testToken},
		{name: "short", token: "abc123", wantErr: "at least 16"},
		{name: "whitespace only", token: `"                    "`, wantErr: "spaces"},
		{name: "inner space", token: `"abcdefgh ijklmnop"`, wantErr: "spaces"},
		{name: "trailing tab", token: `"abcdefghijklmnop\t"`, wantErr: "spaces"},
		{name: "repeated characters", token: "aaaaaaaaaaaaaaaaaaaaaaaa", wantErr: "too predictable"},
		{name: "few characters", token: "abababababababababab", wantErr: "too predictable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte("shard:\n  path: /tmp/x\nadmin:\n  token: " + tc.token + "\n"))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "admin.token") {
				t.Fatalf("ParseConfig = %v, want an admin.token error containing %q", err, tc.wantErr)
			}
			if len(tc.token) > 8 && strings.Contains(err.Error(), strings.Trim(tc.token, `"`)) {
				t.Fatalf("error quotes the token: %v", err)
			}
		})
	}
}

func TestExposedWithoutTLS(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8080", false},
		{"[::1]:8080", false},
		{"0.0.0.0:8080", true},
		{"[::]:8080", true},
		{"10.1.2.3:8080", true},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			a, err := net.ResolveTCPAddr("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := exposedWithoutTLS(a); got != tc.want {
				t.Fatalf("exposedWithoutTLS(%s) = %t, want %t", tc.addr, got, tc.want)
			}
		})
	}
}

// TestConfigTypoNamesTheKey is part of issue 12 item 13: a typo names the
// key the operator wrote, not a Go type.
func TestConfigTypoNamesTheKey(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{name: "engine typo", yaml: "engine:\n  batch_sise: 10\n", want: "unknown key batch_sise"},
		{name: "top-level typo", yaml: "tempaltes: {}\n", want: "unknown key tempaltes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte("shard:\n  path: /tmp/x\nadmin:\n  token: " + testToken + "\n" + tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "daemon.") {
				t.Fatalf("ParseConfig = %v, want %q and no Go type", err, tc.want)
			}
		})
	}
}

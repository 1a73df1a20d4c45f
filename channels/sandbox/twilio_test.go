package sandbox

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func twilioTestTLS(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func TestTwilioSandbox(t *testing.T) {
	const sid, token = "AC11111111111111111111111111111111", "authtoken123"
	tw, err := NewTwilio(TwilioOptions{AccountSID: sid, AuthToken: token, APIKeySID: "SK22222222222222222222222222222222", APIKeySecret: "keysecret"})
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	tw.Faults.Add(Fault{Match: "+1999*", Reason: "21610"})
	tw.Faults.Add(Fault{Match: "+1888*", Reason: "20429", RetryAfter: 3 * time.Second})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: twilioTestTLS(tw.CertPool())}, Timeout: 5 * time.Second}
	msgsURL := tw.URL() + "/2010-04-01/Accounts/" + sid + "/Messages.json"
	tests := []struct {
		name       string
		url        string
		user, pass string
		form       url.Values
		wantStatus int
		wantCode   int
		wantRetry  string
	}{
		{name: "accepted with auth token", form: url.Values{"To": {"+14155550100"}, "From": {"+15005550006"}, "Body": {"hi"}}, wantStatus: 201},
		{name: "accepted with API key", user: "SK22222222222222222222222222222222", pass: "keysecret",
			form: url.Values{"To": {"+14155550100"}, "MessagingServiceSid": {"MG33333333333333333333333333333333"}, "Body": {"hi"}}, wantStatus: 201},
		{name: "wrong password", pass: "nope", form: url.Values{"To": {"+14155550100"}}, wantStatus: 401, wantCode: 20003},
		{name: "other account", url: tw.URL() + "/2010-04-01/Accounts/AC99999999999999999999999999999999/Messages.json", form: url.Values{}, wantStatus: 404, wantCode: 20404},
		{name: "missing To", form: url.Values{"From": {"+15005550006"}, "Body": {"x"}}, wantStatus: 400, wantCode: 21604},
		{name: "invalid To", form: url.Values{"To": {"555-0100"}, "From": {"+15005550006"}, "Body": {"x"}}, wantStatus: 400, wantCode: 21211},
		{name: "missing sender", form: url.Values{"To": {"+14155550100"}, "Body": {"x"}}, wantStatus: 400, wantCode: 21603},
		{name: "missing body", form: url.Values{"To": {"+14155550100"}, "From": {"+15005550006"}}, wantStatus: 400, wantCode: 21602},
		{name: "body too long", form: url.Values{"To": {"+14155550100"}, "From": {"+15005550006"}, "Body": {strings.Repeat("x", 1601)}}, wantStatus: 400, wantCode: 21617},
		{name: "bad callback", form: url.Values{"To": {"+14155550100"}, "From": {"+15005550006"}, "Body": {"x"}, "StatusCallback": {"nope"}}, wantStatus: 400, wantCode: 21609},
		{name: "bad validity", form: url.Values{"To": {"+14155550100"}, "From": {"+15005550006"}, "Body": {"x"}, "ValidityPeriod": {"0"}}, wantStatus: 400, wantCode: 21623},
		{name: "unsubscribed fault", form: url.Values{"To": {"+19995550100"}, "From": {"+15005550006"}, "Body": {"x"}}, wantStatus: 400, wantCode: 21610},
		{name: "rate limit fault", form: url.Values{"To": {"+18885550100"}, "From": {"+15005550006"}, "Body": {"x"}}, wantStatus: 429, wantCode: 20429, wantRetry: "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			if u == "" {
				u = msgsURL
			}
			req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			user, pass := sid, token
			if tc.user != "" {
				user = tc.user
			}
			if tc.pass != "" {
				pass = tc.pass
			}
			req.SetBasicAuth(user, pass)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%v), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tc.wantRetry)
			}
			if tc.wantStatus == 201 {
				sidOut, _ := body["sid"].(string)
				if !strings.HasPrefix(sidOut, "SM") || len(sidOut) != 34 || body["num_segments"] != "1" || body["account_sid"] != sid {
					t.Errorf("resource = %v", body)
				}
				return
			}
			if code, _ := body["code"].(float64); int(code) != tc.wantCode || body["more_info"] == "" {
				t.Errorf("error envelope = %v, want code %d", body, tc.wantCode)
			}
		})
	}
	if tw.Recorder.Count() != len(tests)-2 { // auth and account failures are not recorded
		t.Errorf("recorded %d, want %d", tw.Recorder.Count(), len(tests)-2)
	}
}

func TestTwilioSegments(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		encoding string
		segments int
	}{
		{name: "short gsm", body: "hello", encoding: "GSM-7", segments: 1},
		{name: "160 gsm", body: strings.Repeat("a", 160), encoding: "GSM-7", segments: 1},
		{name: "161 gsm", body: strings.Repeat("a", 161), encoding: "GSM-7", segments: 2},
		{name: "extension chars count twice", body: strings.Repeat("€", 80) + "a", encoding: "GSM-7", segments: 2},
		{name: "emoji forces ucs-2", body: "hi 👋", encoding: "UCS-2", segments: 1},
		{name: "71 ucs-2 units", body: strings.Repeat("ж", 71), encoding: "UCS-2", segments: 2},
		{name: "surrogate pairs count twice", body: strings.Repeat("👋", 35), encoding: "UCS-2", segments: 1},
		{name: "36 emoji", body: strings.Repeat("👋", 36), encoding: "UCS-2", segments: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc, n := twilioSegments(tc.body)
			if enc != tc.encoding || n != tc.segments {
				t.Errorf("got %s/%d, want %s/%d", enc, n, tc.encoding, tc.segments)
			}
		})
	}
}

func TestTwilioSignature(t *testing.T) {
	// The example from Twilio's webhook security documentation.
	form := url.Values{"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+12349013030"}, "Digits": {"1234"}, "From": {"+12349013030"}, "To": {"+18005551212"}}
	got := TwilioSignature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", form)
	if got != "0/KCTR6DLpKmkAf8muzZqo1nDgQ=" {
		t.Errorf("signature = %s", got)
	}
}

func TestNewTwilioNeedsCredentials(t *testing.T) {
	if _, err := NewTwilio(TwilioOptions{}); err == nil || !strings.Contains(err.Error(), "AuthToken") {
		t.Fatalf("err = %v", err)
	}
}

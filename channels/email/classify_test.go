package email

import (
	"errors"
	"testing"

	"github.com/notifyd/notifyd/channels"
)

func TestClassifyReply(t *testing.T) {
	tests := []struct {
		name          string
		code          int
		esc           string
		onRcpt        bool
		text          string
		wantReason    channels.Reason
		wantPermanent bool
	}{
		{name: "550 5.1.1 on RCPT", code: 550, esc: "5.1.1", onRcpt: true, wantReason: channels.ReasonDeadAddress, wantPermanent: true},
		{name: "550 5.1.1 on DATA is not about the address", code: 550, esc: "5.1.1", wantReason: channels.ReasonRejected, wantPermanent: true},
		{name: "550 without enhanced code on RCPT", code: 550, onRcpt: true, wantReason: channels.ReasonDeadAddress, wantPermanent: true},
		{name: "550 generic 5.0.0 on RCPT reads the basic code", code: 550, esc: "5.0.0", onRcpt: true, wantReason: channels.ReasonDeadAddress, wantPermanent: true},
		{name: "554 generic on RCPT is rejected", code: 554, esc: "5.0.0", onRcpt: true, wantReason: channels.ReasonRejected, wantPermanent: true},
		{name: "550 5.2.1 mailbox disabled", code: 550, esc: "5.2.1", onRcpt: true, wantReason: channels.ReasonDeadAddress, wantPermanent: true},
		{name: "552 5.2.2 mailbox full is rejected, not dead", code: 552, esc: "5.2.2", onRcpt: true, wantReason: channels.ReasonRejected, wantPermanent: true},
		{name: "550 5.7.1 policy", code: 550, esc: "5.7.1", onRcpt: true, wantReason: channels.ReasonRejected, wantPermanent: true},
		{name: "530 auth required", code: 530, esc: "5.7.0", wantReason: channels.ReasonAuth, wantPermanent: true},
		{name: "535 5.7.8 bad credentials", code: 535, esc: "5.7.8", wantReason: channels.ReasonAuth, wantPermanent: true},
		{name: "502 5.7.0 authenticate first", code: 502, esc: "5.7.0", text: "Please authenticate first", wantReason: channels.ReasonAuth, wantPermanent: true},
		{name: "552 5.3.4 too big", code: 552, esc: "5.3.4", wantReason: channels.ReasonInvalid, wantPermanent: true},
		{name: "421 service closing", code: 421, esc: "4.3.2", wantReason: channels.ReasonUnavailable},
		{name: "451 4.7.1 greylisted", code: 451, esc: "4.7.1", wantReason: channels.ReasonRateLimited},
		{name: "452 insufficient storage", code: 452, wantReason: channels.ReasonRateLimited},
		{name: "454 temporary auth failure", code: 454, esc: "4.7.0", wantReason: channels.ReasonRateLimited},
		{name: "451 local error", code: 451, esc: "4.3.0", wantReason: channels.ReasonUnavailable},
		{name: "unexpected 3xx", code: 354, wantReason: channels.ReasonUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ce := classifyReply(tc.code, tc.esc, tc.onRcpt, errors.New(tc.text))
			if ce.Reason != tc.wantReason || ce.Permanent != tc.wantPermanent {
				t.Fatalf("got %s permanent=%v, want %s permanent=%v", ce.Reason, ce.Permanent, tc.wantReason, tc.wantPermanent)
			}
		})
	}
}

func TestMessageIDKey(t *testing.T) {
	s := &Sender{cfg: Config{}}
	tests := []struct {
		name, key, from, want string
	}{
		{name: "dot-atom key kept", key: "camp1/u1/email", from: "a@example.com", want: "camp1/u1/email@example.com"},
		{name: "unsafe key hashed", key: "a b", from: "a@example.com", want: "c8687a08aa5d6ed2044328fa6a697ab8@example.com"},
		{name: "no domain in From falls back", key: "k", from: "nobody", want: "k@notifyd.invalid"},
		{name: "no key: let go-mail generate", key: "", from: "a@example.com", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := s.messageID(&channels.Message{IdempotencyKey: tc.key}, tc.from)
			if got != tc.want {
				t.Fatalf("messageID = %q, want %q", got, tc.want)
			}
		})
	}
}

package email

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/notifyd/notifyd/channels"
)

// classifyReply maps an SMTP reply to a reason. RFC 3463 enhanced codes are
// more precise than the basic code where the server sends them: 550 is used
// both for "no such user" (5.1.1) and for policy blocks (5.7.1), and only the
// first is a dead address.
func classifyReply(code int, esc string, onRcpt bool, err error) *channels.Error {
	c := strconv.Itoa(code)
	if esc != "" {
		c += " " + esc
	}
	if strings.HasSuffix(esc, ".0.0") {
		// "X.0.0" is the generic code servers attach when they have
		// nothing more specific: read the basic code instead.
		esc = ""
	}
	switch {
	case code == 421:
		return channels.Transient(channels.ReasonUnavailable, c, 0, err)
	case code >= 400 && code < 500:
		if code == 450 || code == 452 || strings.HasPrefix(esc, "4.7.") {
			return channels.Transient(channels.ReasonRateLimited, c, 0, err)
		}
		return channels.Transient(channels.ReasonUnavailable, c, 0, err)
	case code == 530 || code == 534 || code == 535 || code == 538 || esc == "5.7.8" || esc == "5.7.9" ||
		// "502 5.7.0 Please authenticate first" and friends: a security
		// refusal that names authentication.
		strings.HasPrefix(esc, "5.7.") && strings.Contains(strings.ToLower(err.Error()), "authenticat"):
		return channels.Permanent(channels.ReasonAuth, c, err)
	case onRcpt && isDeadRecipient(code, esc):
		return channels.Permanent(channels.ReasonDeadAddress, c, err)
	case esc == "5.3.4" || esc == "5.2.3" || esc == "5.6.0" || esc == "5.6.1":
		// Message too big for the system / malformed content.
		return channels.Permanent(channels.ReasonInvalid, c, err)
	case code >= 500 && code < 600:
		return channels.Permanent(channels.ReasonRejected, c, err)
	}
	return channels.Transient(channels.ReasonUnknown, c, 0, err)
}

func isDeadRecipient(code int, esc string) bool {
	if esc != "" {
		// X.1.x is addressing status: bad mailbox (5.1.1), bad system
		// (5.1.2), bad syntax (5.1.3), moved (5.1.6), null MX (5.1.10).
		// X.2.1 is "mailbox disabled".
		return strings.HasPrefix(esc, "5.1.") || esc == "5.2.1"
	}
	return code == 550 || code == 551 || code == 553
}

// classifyDial reads an error from opening a session (connect, greeting,
// EHLO, STARTTLS, AUTH).
func classifyDial(err error) *channels.Error {
	wrapped := fmt.Errorf("open SMTP session: %w", err)
	var tpe *textproto.Error
	if errors.As(err, &tpe) {
		esc, _, _ := strings.Cut(tpe.Msg, " ")
		if !looksEnhanced(esc) {
			esc = ""
		}
		if strings.Contains(err.Error(), "SMTP AUTH failed") && tpe.Code >= 500 {
			return channels.Permanent(channels.ReasonAuth, strconv.Itoa(tpe.Code), wrapped)
		}
		return classifyReply(tpe.Code, esc, false, wrapped)
	}
	switch {
	case errors.Is(err, smtp.ErrUnencrypted), errors.Is(err, smtp.ErrWrongHostname),
		errors.Is(err, mail.ErrPlainAuthNotSupported), errors.Is(err, mail.ErrLoginAuthNotSupported),
		errors.Is(err, mail.ErrCramMD5AuthNotSupported), strings.Contains(err.Error(), "does not support SMTP AUTH"):
		// Our configuration and the server disagree on how to log in;
		// retrying the message cannot fix that.
		return channels.Permanent(channels.ReasonAuth, "auth_unavailable", wrapped)
	case strings.Contains(err.Error(), "does not support STARTTLS"):
		// Mandatory STARTTLS and the server does not offer it: a
		// downgrade (or a misconfigured relay). Transient, so a fixed
		// server gets the mail, but visible as its own code.
		return channels.Transient(channels.ReasonNetwork, "starttls_unavailable", 0, wrapped)
	}
	var (
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
	)
	if errors.As(err, &certErr) || errors.As(err, &unknown) || errors.As(err, &hostname) {
		return channels.Transient(channels.ReasonNetwork, "tls_verify", 0, wrapped)
	}
	return channels.Transient(channels.ReasonNetwork, "", 0, wrapped)
}

func looksEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
}

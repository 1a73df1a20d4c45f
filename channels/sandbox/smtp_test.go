package sandbox

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// These tests drive the fake with the standard library's net/smtp, a client
// independent of the go-mail one the email channel uses.

func dialSMTPFake(t *testing.T, s *SMTP) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.StartTLS(&tls.Config{RootCAs: s.CertPool(), ServerName: "127.0.0.1"}); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	return c
}

func TestSMTPFakeAuth(t *testing.T) {
	s, err := NewSMTP(SMTPOptions{Username: "u", Password: "p4ss"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name     string
		auth     smtp.Auth
		wantCode int
	}{
		{name: "PLAIN ok", auth: smtp.PlainAuth("", "u", "p4ss", "127.0.0.1")},
		{name: "PLAIN wrong password", auth: smtp.PlainAuth("", "u", "nope", "127.0.0.1"), wantCode: 535},
		{name: "CRAM-MD5 ok", auth: smtp.CRAMMD5Auth("u", "p4ss")},
		{name: "CRAM-MD5 wrong secret", auth: smtp.CRAMMD5Auth("u", "nope"), wantCode: 535},
		{name: "no auth: MAIL refused", wantCode: 502},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSMTPFake(t, s)
			var err error
			if tc.auth != nil {
				err = c.Auth(tc.auth)
			}
			if err == nil {
				err = c.Mail("a@example.com")
			}
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var tpe *textproto.Error
			if !errors.As(err, &tpe) || tpe.Code != tc.wantCode {
				t.Fatalf("err = %v, want code %d", err, tc.wantCode)
			}
		})
	}
}

func TestSMTPFakeRecordsAndFaults(t *testing.T) {
	s, err := NewSMTP(SMTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Faults.Add(Fault{Match: "gone@*", Status: 550, Reason: "5.1.1 no such user"})
	s.DataFaults.Add(Fault{Match: "spam@*", Status: 554, Reason: "5.7.1 spam"})
	c := dialSMTPFake(t, s)

	send := func(to, body string) error {
		if err := c.Mail("from@example.com"); err != nil {
			return err
		}
		if err := c.Rcpt(to); err != nil {
			_ = c.Reset()
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, body); err != nil {
			return err
		}
		return w.Close()
	}
	raw := "From: a@example.com\r\nTo: ok@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=XX\r\n\r\n" +
		"--XX\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n" +
		"--XX\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+aGk8L3A+\r\n--XX--\r\n"

	tests := []struct {
		name     string
		to       string
		wantCode int
		wantEnh  string
	}{
		{name: "accepted", to: "ok@example.org"},
		{name: "RCPT fault with enhanced code", to: "gone@example.org", wantCode: 550, wantEnh: "5.1.1"},
		{name: "DATA fault", to: "spam@example.org", wantCode: 554, wantEnh: "5.7.1"},
		{name: "accepted after failures on the same connection", to: "ok2@example.org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := send(tc.to, raw)
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var tpe *textproto.Error
			if !errors.As(err, &tpe) || tpe.Code != tc.wantCode || !strings.HasPrefix(tpe.Msg, tc.wantEnh) {
				t.Fatalf("err = %v, want %d %s", err, tc.wantCode, tc.wantEnh)
			}
		})
	}
	msgs := s.Messages()
	if len(msgs) != 2 || s.Accepted() != 2 || s.Connections() != 1 {
		t.Fatalf("messages=%d accepted=%d conns=%d, want 2/2/1", len(msgs), s.Accepted(), s.Connections())
	}
	m := msgs[0]
	if m.From != "from@example.com" || m.To[0] != "ok@example.org" || !m.TLS || m.Conn != 1 {
		t.Fatalf("envelope %+v", m)
	}
	if m.Text != "Grüße" || m.HTML != "<p>hi</p>" || m.Header.Get("Subject") != "hi" {
		t.Fatalf("parsed text=%q html=%q subject=%q", m.Text, m.HTML, m.Header.Get("Subject"))
	}
	if rec := s.Recorder.All(); len(rec) != 2 || rec[0].Address != "ok@example.org" || rec[0].Headers[":mail-from"] != "from@example.com" {
		t.Fatalf("recorder %+v", rec)
	}
}

func TestSMTPFakeDropAndImplicitTLS(t *testing.T) {
	s, err := NewSMTP(SMTPOptions{TLS: SMTPImplicit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Faults.Add(Fault{Match: "drop@*", Drop: true})
	conn, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: s.CertPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("implicit TLS dial: %v", err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("drop@example.org"); err == nil {
		t.Fatal("RCPT on a dropping fault succeeded")
	}
	if _, err := NewSMTP(SMTPOptions{TLS: "ssl"}); err == nil {
		t.Fatal("unknown TLS mode accepted")
	}
	// The server closes its side right after the client saw EOF: poll.
	deadline := time.Now().Add(5 * time.Second)
	for s.liveConnections() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d live connections remain after a drop", s.liveConnections())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSMTPFakeLatencyStopsOnClose(t *testing.T) {
	s, err := NewSMTP(SMTPOptions{TLS: SMTPNoTLS})
	if err != nil {
		t.Fatal(err)
	}
	s.Faults.Add(Fault{Match: "slow@*", Latency: time.Minute})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.com"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Rcpt("slow@example.org") }()
	_ = s.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled RCPT did not end when the fake closed")
	}
}

package bench

import (
	"context"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPrivatePostfix starts the rig `notifyd bench email --postfix` uses,
// delivers a few messages through its smtpd, and checks that exactly those
// reach the Maildir of the current run (counting restarts from zero after
// fresh), that a recipient outside its domains is refused (nothing is
// relayed off the machine), and that stop removes everything. It skips
// where Postfix cannot run: no postfix package, not root, no tmpfs.
func TestPrivatePostfix(t *testing.T) {
	if _, ok := lookTool("postfix"); !ok {
		t.Skip("postfix not installed (Debian: apt-get install postfix)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the private Postfix needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t0 := time.Now()
	pf, err := startPostfix(ctx, "")
	t.Logf("Postfix started in %s (postfix-script checks its files first)", time.Since(t0))
	if err != nil {
		if strings.Contains(err.Error(), "not a tmpfs") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	dir := pf.dir
	stopped := false
	defer func() {
		if !stopped {
			pf.stop()
		}
	}()
	send := func(n int, rcpt string) error {
		c, err := smtp.Dial(pf.addr)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			if err := c.Mail(benchFrom); err != nil {
				return err
			}
			if err := c.Rcpt(rcpt); err != nil {
				return err
			}
			w, err := c.Data()
			if err != nil {
				return err
			}
			_, _ = w.Write([]byte("Subject: t\r\n\r\nmessage " + string(rune('a'+i)) + "\r\n"))
			if err := w.Close(); err != nil {
				return err
			}
		}
		return c.Quit()
	}
	for run, n := range []int{5, 3} {
		if err := pf.fresh(); err != nil {
			t.Fatal(err)
		}
		if err := send(n, "someone@gmail.com"); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if _, err := pf.waitDelivered(ctx, int64(n)); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		time.Sleep(300 * time.Millisecond) // a surplus delivery would show now
		if got, err := countDir(pf.maildir); err != nil || got != int64(n) {
			t.Fatalf("run %d: %d messages in the Maildir (%v), want %d", run, got, err, n)
		}
	}
	var te *textproto.Error
	if err := send(1, "someone@elsewhere.invalid"); !errors.As(err, &te) || te.Code/100 != 5 {
		t.Fatalf("relaying off the machine: err = %v, want a 5xx refusal", err)
	}
	pf.stop()
	stopped = true
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there after stop: %v", dir, err)
	}
	if c, err := net.DialTimeout("tcp", pf.addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("smtpd still listening on %s after stop", pf.addr)
	}
}

// TestWithoutTrace: the reference of --reference-workload campaign sends a
// delivered message as notifyd sent it: Postfix's delivery and Received
// lines (continuations too) go, the message's own headers and body stay.
func TestWithoutTrace(t *testing.T) {
	own := "Date: Sun, 06 Dec 2026 03:34:34 +0000\nFrom: <news@notifyd.test>\nReceived-By-Template: kept\n\nbody\nReceived: in the body stays\n"
	tests := []struct {
		name, in, want string
	}{
		{"delivered by virtual", "Return-Path: <news@notifyd.test>\nX-Original-To: a@b.test\nDelivered-To: a@b.test\nReceived: from localhost (localhost [127.0.0.1])\n\tby bench.notifyd.test (Postfix) with ESMTP id 0233\n\tfor <a@b.test>; Sun,  6 Dec 2026 03:34:35 +0000 (UTC)\n" + own, own},
		{"no trace at all", own, own},
		{"two Received lines", "Received: one\n two\nReceived: three\n" + own, own},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(withoutTrace([]byte(tc.in))); got != tc.want {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/notifyd/notifyd/daemon/tailview"
)

// runTail is the operators' live view: notifyd tail [--addr URL] [--campaign ID] [--token-file F].
func runTail(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("tail", "tail [flags]\n\nLive view of a running daemon: rate, failures by reason, latency, queues and campaign progress.\nCounts are messages (one per address); rates are per second, a campaign's averaged over the last 10s.\nOn a terminal, q (or Ctrl-C) quits; columns that do not fit the width are left out, never cut.", stderr)
	addr := fs.String("addr", envOr("NOTIFYD_ADDR", "http://127.0.0.1:8080"), "admin API base URL")
	campaign := fs.String("campaign", "", "show only this campaign")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (default: $NOTIFYD_ADMIN_TOKEN)")
	plain := fs.Bool("plain", false, "one line per second even on a terminal")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	token := os.Getenv("NOTIFYD_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd tail: read token file: %v\n", err)
			return 1
		}
		token = strings.TrimSpace(string(b))
	}
	terminal, width := false, func() int { return 120 }
	if f, ok := stdout.(*os.File); ok && !*plain && term.IsTerminal(int(f.Fd())) {
		terminal = true
		width = func() int {
			if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
				return w
			}
			return 120
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	restore := func() {}
	if terminal && term.IsTerminal(int(os.Stdin.Fd())) {
		// Raw mode so a single q quits without Enter; Ctrl-C then arrives as
		// a byte, which WatchKeys treats the same. Restored before the view
		// prints its last line.
		if old, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
			restore = func() { _ = term.Restore(int(os.Stdin.Fd()), old) }
			defer restore()
			go tailview.WatchKeys(os.Stdin, stop)
		}
	}
	view := tailview.NewView(stdout, terminal, width)
	c := &tailview.Client{Base: *addr, Token: token, HTTP: &http.Client{}}
	err := c.Follow(ctx, *campaign, view.Snapshot, view.Status)
	restore()
	if cerr := view.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "notifyd tail: %v\n", err)
		return 1
	}
	return 0
}

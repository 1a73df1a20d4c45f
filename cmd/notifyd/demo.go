package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"github.com/notifyd/notifyd/daemon/demo"
)

// runDemo is the embedded default: no network, Redis or credentials.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("demo", "demo [flags]\n\nRuns a campaign over every channel against in-process provider fakes: no network, Redis or credentials.", stderr)
	profiles := newCountFlag(fs, "profiles", 100_000, false, "profiles to generate (at least 1)")
	seed := fs.Uint64("seed", 1, "generator seed")
	dir := fs.String("dir", "", "keep the generated shard in this directory (default: a temporary one)")
	logPath := fs.String("log", "", "write the daemon's log (JSON) to this file")
	if err := fs.Parse(args); err != nil {
		return exitCode(err)
	}
	opts := demo.Options{Profiles: *profiles, Seed: *seed, Dir: *dir, Out: stdout, Progress: isTerminal(stdout)}
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd demo: %v\n", err)
			return 1
		}
		defer f.Close()
		opts.Log = slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := demo.Run(ctx, opts); err != nil {
		fmt.Fprintf(stderr, "notifyd demo: %v\n", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

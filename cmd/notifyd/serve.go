package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/notifyd/notifyd/daemon"
)

// runServe runs the daemon until SIGTERM/SIGINT, then drains and exits 0.
func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "notifyd.yaml", "YAML config file (see notifyd.example.yaml)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "notifyd serve: bad --log-level %q\n", *level)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg, err := daemon.LoadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	chans, err := daemon.BuildChannels(cfg.Channels, log)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	d, err := daemon.New(ctx, cfg, daemon.Deps{Channels: chans, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	return 0
}

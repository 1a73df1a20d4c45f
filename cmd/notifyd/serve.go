package main

import (
	"context"
	"errors"
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
	fs := newCommandFlags("serve", "serve [--config FILE]... [--log-level LEVEL]", stderr)
	var paths listFlag
	fs.Var(&paths, "config", "YAML config file (see notifyd.example.yaml); repeat to lay files over each other, e.g. examples/local.yaml then the sandbox's fragment (default notifyd.yaml)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "notifyd serve: unexpected arguments %q\n", pos)
		return 2
	}
	if len(paths) == 0 {
		paths = listFlag{"notifyd.yaml"}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "notifyd serve: bad --log-level %q\n", *level)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg, chans, err := loadDaemon(paths, log)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, cfg, chans, log); err != nil {
		fmt.Fprintf(stderr, "notifyd serve: %v\n", err)
		return 1
	}
	return 0
}

// loadDaemon reads the config files and builds every channel: all of the
// config is checked (every problem at once) before any channel is built,
// and a channel that fails to build takes the others down with it.
func loadDaemon(paths []string, log *slog.Logger) (*daemon.Config, map[string]daemon.ChannelSpec, error) {
	cfg, err := daemon.LoadConfig(paths...)
	if err != nil {
		return nil, nil, err
	}
	links, err := cfg.Tracking.Links(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("tracking: %w", err)
	}
	chans, err := daemon.BuildChannels(cfg.Channels, log, daemon.WithTracking(links))
	if err != nil {
		closeChannels(chans)
		return nil, nil, err
	}
	return cfg, chans, nil
}

func closeChannels(chans map[string]daemon.ChannelSpec) {
	for _, sp := range chans {
		if c, ok := sp.Channel.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// serve runs the daemon until ctx ends.
func serve(ctx context.Context, cfg *daemon.Config, chans map[string]daemon.ChannelSpec, log *slog.Logger) error {
	rt, err := daemon.ApplyRuntime(cfg.Runtime, os.Getenv, daemon.CgroupMemoryMax)
	if err != nil {
		closeChannels(chans)
		return err
	}
	log.Info("go runtime", "gc_percent", rt.GCPercent, "memory_limit_bytes", rt.MemoryLimit, "source", rt.Source)
	d, err := daemon.New(ctx, cfg, daemon.Deps{Channels: chans, Logger: log})
	if err != nil {
		closeChannels(chans)
		return err
	}
	return d.Run(ctx)
}

// runConfig is `notifyd config check FILE...`.
func runConfig(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("config", "config check FILE... (exit 0: valid, 1: not; files are laid over each other as serve does)", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) < 2 || pos[0] != "check" {
		fs.Usage()
		return 2
	}
	cfg, chans, err := loadDaemon(pos[1:], slog.New(slog.DiscardHandler))
	if err != nil {
		var ce daemon.ConfigErrors
		if errors.As(err, &ce) {
			fmt.Fprintln(stderr, err)
		} else {
			fmt.Fprintf(stderr, "notifyd config check: %v\n", err)
		}
		return 1
	}
	closeChannels(chans)
	state := "in memory (no redis.url or redis.cluster_addrs)"
	if cfg.Redis.Enabled() {
		state = "Redis"
	}
	names := make([]string, 0, len(chans))
	for _, n := range []string{"apns", "fcm", "email", "sms", "webpush", "webhook"} {
		if _, ok := chans[n]; ok {
			names = append(names, n)
		}
	}
	fmt.Fprintf(stdout, "config ok: shard %s, admin %s, state %s, channels %v\n", cfg.Shard.Path, cfg.Admin.Listen, state, names)
	return 0
}

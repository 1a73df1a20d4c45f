package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/channels"
	"github.com/notifyd/notifyd/daemon"
)

// gorushPushesPerSec is gorush's default configuration against the same
// 20 ms fake on this machine, as measured for issue 15 (gorush is not
// installable here, so the figure is quoted, not re-run).
const gorushPushesPerSec = 4650

// runBenchAPNs is `notifyd bench apns`: the APNs channel as the daemon
// builds it (its default pool unless --workers/--batch say otherwise)
// against the sandbox's APNs fake answering after --latency, in this
// process (the fake's CPU counts against notifyd: the figure is a floor).
func runBenchAPNs(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("bench apns", "bench apns [flags]\n\nThe APNs channel with the daemon's defaults against the sandbox's APNs fake answering after --latency: pushes/s, and the ratio to gorush's default (4,650 pushes/s at 20 ms on this machine).", stderr)
	n := newCountFlag(fs, "messages", 100_000, false, "pushes to send")
	latency := fs.Duration("latency", 20*time.Millisecond, "the fake's answer latency")
	workers := newCountFlag(fs, "workers", 0, true, "pool workers (0: the daemon's default for APNs)")
	batch := newCountFlag(fs, "batch", 0, true, "pool batch size (0: the daemon's default for APNs)")
	conns := newCountFlag(fs, "connections", 0, true, "HTTP/2 connections (0: the default)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitCode(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "notifyd bench apns: unexpected arguments %q\n", pos)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := benchAPNs(ctx, apnsBenchOptions{Messages: *n, Latency: *latency, Workers: *workers, Batch: *batch, Connections: *conns})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench apns: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "apns: %d pushes in %s with %d workers × batch %d over %d connection(s) (server max concurrent streams %d), fake latency %s\n",
		res.Sent, res.Elapsed.Round(time.Millisecond), res.Workers, res.Batch, res.Connections, res.ServerStreams, *latency)
	fmt.Fprintf(stdout, "pushes_per_s=%.0f vs_gorush=%.2f\n", res.PerSec, res.PerSec/gorushPushesPerSec)
	return 0
}

type apnsBenchOptions struct {
	Messages                    int
	Latency                     time.Duration
	Workers, Batch, Connections int
}

type apnsBenchResult struct {
	Sent                                       int64
	Elapsed                                    time.Duration
	PerSec                                     float64
	Workers, Batch, Connections, ServerStreams int
}

func benchAPNs(ctx context.Context, o apnsBenchOptions) (apnsBenchResult, error) {
	dir, err := os.MkdirTemp("", "notifyd-bench-apns-")
	if err != nil {
		return apnsBenchResult{}, fmt.Errorf("make directory: %w", err)
	}
	defer os.RemoveAll(dir)
	sb, err := startSandbox(sandboxOptions{Dir: dir, Ports: map[string]int{}, Profiles: 1,
		Faults: []faultSpec{{Channel: "apns", Match: "*", Latency: o.Latency.String()}}})
	if err != nil {
		return apnsBenchResult{}, err
	}
	defer sb.Close()
	cfg, err := daemon.LoadConfig(filepath.Join(dir, sandboxFragment))
	if err != nil {
		return apnsBenchResult{}, err
	}
	only := daemon.ChannelsConfig{APNs: cfg.Channels.APNs}
	if o.Connections > 0 {
		only.APNs.Connections = o.Connections
	}
	if o.Workers > 0 {
		only.APNs.Pool.Workers = o.Workers
	}
	if o.Batch > 0 {
		only.APNs.Pool.BatchSize = o.Batch
	}
	chans, err := daemon.BuildChannels(only, slog.New(slog.DiscardHandler))
	if err != nil {
		return apnsBenchResult{}, err
	}
	defer closeChannels(chans)
	spec := chans[channels.APNs]
	var done, accepted atomic.Int64
	finished := make(chan struct{})
	var once sync.Once
	pool, err := channels.NewWorkerPool(spec.Channel, channels.PoolConfig{
		Workers: spec.Pool.Workers, BatchSize: spec.Pool.BatchSize, QueueSize: spec.Pool.QueueSize, MaxAttempts: 1,
		Outcomes: channels.OutcomeFunc(func(_ context.Context, outs []channels.Outcome) {
			for _, out := range outs {
				if out.Status == channels.OutcomeAccepted {
					accepted.Add(1)
				}
			}
			if done.Add(int64(len(outs))) >= int64(o.Messages) {
				once.Do(func() { close(finished) })
			}
		}),
	})
	if err != nil {
		return apnsBenchResult{}, err
	}
	msgs := make([]*channels.Message, o.Messages)
	push := &channels.Push{Title: "Hi", Body: "Your order shipped."}
	for i := range msgs {
		msgs[i] = &channels.Message{ID: fmt.Sprint(i), IdempotencyKey: fmt.Sprint("k", i), To: fmt.Sprintf("%064x", i+1), Push: push, Campaign: "bench"}
	}
	// Warm the connections (dial, TLS, SETTINGS) outside the clock.
	if res := spec.Channel.Send(ctx, msgs[:1]); res[0].Err != nil {
		return apnsBenchResult{}, fmt.Errorf("warm-up push: %w", res[0].Err)
	}
	if err := pool.Start(ctx); err != nil {
		return apnsBenchResult{}, err
	}
	defer pool.Close(context.Background())
	start := time.Now()
	go func() {
		for i := 0; i < len(msgs); i += 1000 {
			if _, err := pool.Submit(ctx, channels.LaneNormal, msgs[i:min(i+1000, len(msgs))]...); err != nil {
				return
			}
		}
	}()
	select {
	case <-finished:
	case <-ctx.Done():
		return apnsBenchResult{}, ctx.Err()
	}
	elapsed := time.Since(start)
	if a := accepted.Load(); a != int64(o.Messages) {
		return apnsBenchResult{}, fmt.Errorf("%d of %d pushes accepted: a rate of failures would flatter the run", a, o.Messages)
	}
	res := apnsBenchResult{Sent: accepted.Load(), Elapsed: elapsed, PerSec: float64(o.Messages) / elapsed.Seconds(),
		Workers: spec.Pool.Workers, Batch: spec.Pool.BatchSize, Connections: max(only.APNs.Connections, 2)}
	if s, ok := spec.Channel.(interface{ ServerMaxStreams() int }); ok {
		res.ServerStreams = s.ServerMaxStreams()
	}
	return res, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/notifyd/notifyd/daemon/bench"
	"github.com/notifyd/notifyd/store/deliverylog"
)

// compareDeliveryLog runs the fan-out with the delivery log off and on in
// alternation (the machine is shared: one pair is noise), then exports the
// last run's log to Parquet, and prints the on/off ratio of medians, log
// bytes and Parquet bytes per message.
func compareDeliveryLog(ctx context.Context, opts bench.FanoutOptions, rounds int, stdout, stderr io.Writer) int {
	var off, on, ratios []float64
	var last *bench.FanoutResult
	var lastDir string
	for r := 1; r <= rounds; r++ {
		ro, err := bench.Fanout(ctx, opts)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fanout: round %d, log off: %v\n", r, err)
			return 1
		}
		if lastDir != "" {
			_ = os.RemoveAll(lastDir)
		}
		dir, err := os.MkdirTemp("", "notifyd-bench-dlog-")
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fanout: %v\n", err)
			return 1
		}
		lastDir = dir
		withLog := opts
		withLog.DeliveryLogDir = dir
		rl, err := bench.Fanout(ctx, withLog)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd bench fanout: round %d, log on: %v\n", r, err)
			return 1
		}
		fmt.Fprintf(stdout, "round %d: log off %.0f msgs/s, log on %.0f msgs/s (%d messages, %.1f bytes of log each); on/off %.2f\n",
			r, ro.MsgsPerSec, rl.MsgsPerSec, rl.Messages, float64(rl.LogBytes)/float64(rl.Messages), rl.MsgsPerSec/ro.MsgsPerSec)
		off, on, ratios = append(off, ro.MsgsPerSec), append(on, rl.MsgsPerSec), append(ratios, rl.MsgsPerSec/ro.MsgsPerSec)
		last = rl
	}
	defer os.RemoveAll(lastDir)
	lake, err := os.MkdirTemp("", "notifyd-bench-lake-")
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench fanout: %v\n", err)
		return 1
	}
	defer os.RemoveAll(lake)
	st, el, heap, err := timedExport(ctx, lastDir, lake)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd bench fanout: export: %v\n", err)
		return 1
	}
	if st.Rows != last.Messages {
		fmt.Fprintf(stderr, "notifyd bench fanout: exported %d rows for %d messages\n", st.Rows, last.Messages)
		return 1
	}
	fmt.Fprintf(stdout, "medians over %d rounds: log off %.0f msgs/s, log on %.0f msgs/s, on/off %.2f\n", rounds, median(off), median(on), median(ratios))
	fmt.Fprintf(stdout, "log %.1f bytes/message; Parquet %.1f bytes/message (%d rows, %d files, exported in %s = %.0f rows/s, peak heap %.1f MiB)\n",
		float64(last.LogBytes)/float64(last.Messages), float64(st.Bytes)/float64(st.Rows), st.Rows, st.Files, el.Round(time.Millisecond),
		float64(st.Rows)/el.Seconds(), heap)
	fmt.Fprintf(stdout, "log_off_msgs_per_s=%.0f log_on_msgs_per_s=%.0f ratio=%.2f log_bytes_per_msg=%.1f parquet_bytes_per_msg=%.1f\n",
		median(off), median(on), median(ratios), float64(last.LogBytes)/float64(last.Messages), float64(st.Bytes)/float64(st.Rows))
	return 0
}

// timedExport exports dir into lake and measures time and peak live heap.
func timedExport(ctx context.Context, dir, lake string) (deliverylog.ExportStats, time.Duration, float64, error) {
	ex, err := deliverylog.NewExporter(deliverylog.ExporterConfig{Dir: dir, Target: deliverylog.LocalTarget{Dir: lake}})
	if err != nil {
		return deliverylog.ExportStats{}, 0, 0, err
	}
	runtime.GC()
	stop := make(chan struct{})
	peak := make(chan float64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
		var max float64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := float64(s[1].Value.Uint64()); v > max {
				max = v
			}
			select {
			case <-stop:
				peak <- max / (1 << 20)
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	st, err := ex.Export(ctx)
	el := time.Since(start)
	close(stop)
	return st, el, <-peak, err
}

package deliverylog

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"
)

// BenchmarkExport generates a log of NOTIFYD_BENCH_ROWS records (default
// 1,000,000) like a campaign's (three channels, hashed addresses) and
// exports it to Parquet in a local directory, reporting rows/s, Parquet
// bytes per row and the peak heap (objects, garbage included).
//
//	NOTIFYD_BENCH_ROWS=10000000 go test -run XXX -bench Export -benchtime 1x ./store/deliverylog/
func BenchmarkExport(b *testing.B) {
	rows := 1_000_000
	if s := os.Getenv("NOTIFYD_BENCH_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	l, err := Open(Config{Dir: dir, Fsync: FsyncNone, Daemon: "bench-host/1", MaxDisk: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	m := &Masker{Token: AddressTruncate, Email: AddressHash, Phone: AddressHash}
	chans := []string{"apns", "email", "webhook"}
	base := time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC)
	ctx := context.Background()
	bt := l.Batch()
	var r Record
	for i := range rows {
		ch := chans[i%3]
		user := i / 3
		r = Record{MessageID: "campaign-" + strconv.Itoa(i/3_000_000) + ":" + strconv.FormatUint(uint64(user)*0x9e3779b97f4a7c15, 16) + ":" + ch + ":0",
			Event: "outcome", Kind: "campaign", Campaign: "campaign-" + strconv.Itoa(i/3_000_000), UserID: "user-" + strconv.Itoa(user),
			UserKey: int64(uint64(user) * 0x9e3779b97f4a7c15), Channel: ch, Outcome: "accepted", Attempt: 1,
			Address:  m.Mask(ch, fmt.Sprintf("user%d@example.com", user)),
			QueuedAt: base.Add(time.Duration(i) * 10 * time.Microsecond).UnixMicro(), AnsweredAt: base.Add(time.Duration(i)*10*time.Microsecond + 3*time.Millisecond).UnixMicro()}
		if i%50 == 0 {
			r.Outcome, r.Reason, r.ProviderCode, r.Attempt = "dead_address", "dead_address", "BadDeviceToken", 1
		}
		bt.Add(&r)
		if bt.Len() == 1000 {
			if err := l.Commit(ctx, bt); err != nil {
				b.Fatal(err)
			}
			bt = l.Batch()
		}
	}
	if err := l.Commit(ctx, bt); err != nil {
		b.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		b.Fatal(err)
	}
	var logBytes int64
	segs, _ := ListSegments(dir)
	for _, s := range segs {
		logBytes += s.Size
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for _, s := range segs { // un-export for the next iteration
			_ = os.Rename(dir+"/"+segmentName(s.ID, suffixDone), s.Path)
		}
		lake := b.TempDir()
		runtime.GC()
		stop, peak := make(chan struct{}), make(chan float64, 1)
		go func() {
			s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			var hi uint64
			for {
				metrics.Read(s)
				hi = max(hi, s[0].Value.Uint64())
				select {
				case <-stop:
					peak <- float64(hi) / (1 << 20)
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		ex, _ := NewExporter(ExporterConfig{Dir: dir, Target: LocalTarget{Dir: lake}})
		b.StartTimer()
		start := time.Now()
		st, err := ex.Export(ctx)
		el := time.Since(start)
		b.StopTimer()
		close(stop)
		hi := <-peak
		if err != nil || st.Rows != int64(rows) {
			b.Fatalf("export: %+v %v", st, err)
		}
		b.ReportMetric(float64(rows)/el.Seconds(), "rows/s")
		b.ReportMetric(float64(st.Bytes)/float64(rows), "parquet_B/row")
		b.ReportMetric(float64(logBytes)/float64(rows), "log_B/row")
		b.ReportMetric(hi, "peak_heap_MiB")
		b.StartTimer()
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/notifyd/notifyd/store/deliverylog"
)

func TestLogGrepAndExport(t *testing.T) {
	dir, lake := t.TempDir(), t.TempDir()
	l, err := deliverylog.Open(deliverylog.Config{Dir: dir, SegmentBytes: 2048, Daemon: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC).UnixMicro()
	for i := range 200 {
		r := deliverylog.Record{MessageID: fmt.Sprintf("c%d:%x:sms:0", i%2, i), Event: "outcome", Kind: "campaign", Campaign: fmt.Sprintf("c%d", i%2),
			UserID: fmt.Sprintf("u%d", i%20), Channel: "sms", Outcome: "accepted", Attempt: 1, AnsweredAt: at}
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	// The daemon "dies" without closing: its open segment is sealed by the export.
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"log", "grep", "--dir", dir, "--user", "u3", "--campaign", "c1"}, &out, &errb); code != 0 {
		t.Fatalf("grep: %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "10 records for user u3") {
		t.Fatalf("grep output:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"log", "export", "--dir", dir, "--to", lake}, &out, &errb); code != 0 {
		t.Fatalf("export while the writer holds the lock: %d %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "a daemon is writing this log") {
		t.Fatalf("export did not say the log is in use: %s", errb.String())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"log", "export", "--dir", dir, "--to", lake}, &out, &errb); code != 0 {
		t.Fatalf("export: %d %s", code, errb.String())
	}
	files, _ := filepath.Glob(filepath.Join(lake, "dt=2026-12-04", "hour=09", "*.parquet"))
	rows := map[string]int{}
	for _, f := range files {
		recs, err := parquet.ReadFile[deliverylog.Record](f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			rows[r.MessageID]++
		}
	}
	if len(rows) != 200 {
		t.Fatalf("%d message ids in the lake, want 200 (%s)", len(rows), out.String())
	}
	for id, n := range rows {
		if n != 1 {
			t.Fatalf("%s exported %d times", id, n)
		}
	}
	if code := run([]string{"log", "grep", "--dir", dir}, &out, &errb); code != 2 {
		t.Fatalf("grep without --user: exit %d, want 2", code)
	}
	_ = os.RemoveAll(lake)
}

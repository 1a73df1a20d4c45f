package deliverylog

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testRecord(i int) Record {
	return Record{
		MessageID: fmt.Sprintf("camp-1:%x:apns:0", i), Event: "outcome", Kind: "campaign", Campaign: "camp-1",
		UserID: fmt.Sprintf("user-%d", i), UserKey: int64(i) * 7919, Channel: "apns", Address: "abcdef12…",
		ProviderID: fmt.Sprintf("apns-%d", i), Outcome: "accepted", Attempt: 1,
		QueuedAt: 1_700_000_000_000_000 + int64(i), AnsweredAt: 1_700_000_000_100_000 + int64(i),
	}
}

func readAll(t *testing.T, dir string) ([]Record, []ScanStats) {
	t.Helper()
	segs, err := ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	var stats []ScanStats
	for _, s := range segs {
		st, err := ScanFile(s.Path, true, func(r *Record) error { out = append(out, *r); return nil })
		if err != nil {
			t.Fatal(err)
		}
		stats = append(stats, st)
	}
	return out, stats
}

func TestAppendReadBack(t *testing.T) {
	for _, policy := range []FsyncPolicy{FsyncNone, FsyncInterval, FsyncAlways} {
		t.Run(string(policy), func(t *testing.T) {
			dir := t.TempDir()
			l, err := Open(Config{Dir: dir, Fsync: policy, Daemon: "host-a/1", Shard: 3, SegmentBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 250 {
						if err := l.Append(ctx, testRecord(w*1000+i)); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			recs, stats := readAll(t, dir)
			if len(recs) != 1000 {
				t.Fatalf("read %d records, want 1000", len(recs))
			}
			seen := map[string]bool{}
			for _, r := range recs {
				seen[r.MessageID] = true
				if r.Daemon != "host-a/1" || r.Shard != 3 || r.Event != "outcome" || r.Attempt != 1 {
					t.Fatalf("record lost fields: %+v", r)
				}
			}
			if len(seen) != 1000 {
				t.Fatalf("%d distinct message ids, want 1000", len(seen))
			}
			if len(stats) < 10 {
				t.Fatalf("%d segments for ~100 KB at 4 KiB each: size rotation did not happen", len(stats))
			}
			for _, st := range stats {
				if st.Torn || st.Corrupt {
					t.Fatalf("clean close left %+v", st)
				}
			}
			segs, _ := ListSegments(dir)
			for _, s := range segs {
				if s.State != "closed" {
					t.Fatalf("segment %s is %s after Close, want closed", s.Path, s.State)
				}
			}
		})
	}
}

func TestRecordRoundTripKeepsEveryField(t *testing.T) {
	in := Record{MessageID: "f:welcome:k:order-1:1f:sms:0", Event: "outcome", Kind: "flow", Campaign: "f:welcome", Trigger: "k:order-1",
		UserID: "u-1", UserKey: -5, Channel: "sms", Address: "…1234", ProviderID: "SM123", Outcome: "failed", Reason: "provider_rejected",
		ProviderCode: "21211", Attempt: 3, Variant: "b", Locale: "de-DE", QueuedAt: 10, SentAt: 20, AnsweredAt: 30,
		Link: "https://shop.example.com/a?b=1"}
	b := appendRecord(nil, &in)
	var out Record
	if err := decodeRecord(b, &out, true); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// A later version's extra fields are ignored.
	if err := decodeRecord(append(b, 1, 2, 3), &out, true); err != nil || out != in {
		t.Fatalf("trailing fields: %v %+v", err, out)
	}
	// A record without a link ends where version 1's did.
	noLink := in
	noLink.Link = ""
	if err := decodeRecord(appendRecord(nil, &noLink), &out, true); err != nil || out != noLink {
		t.Fatalf("no link: %v %+v", err, out)
	}
	b = appendRecord(nil, &noLink)
	for cut := 2; cut < len(b)-1; cut += 5 {
		if err := decodeRecord(b[:cut], &out, true); err == nil {
			t.Fatalf("payload cut at %d of %d decoded", cut, len(b))
		}
	}
}

// writeSegment writes n records with a closed log and returns the one segment's path.
func writeSegment(t *testing.T, dir string, n int) string {
	t.Helper()
	l, err := Open(Config{Dir: dir, Fsync: FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Append(context.Background(), testRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs, _ := ListSegments(dir)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	return segs[0].Path
}

func TestReaderStopsAtTornTailAndBadChecksum(t *testing.T) {
	dir := t.TempDir()
	path := writeSegment(t, dir, 10)
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := frameOffsets(full) // off[0] is the header, off[i+1] record i, off[11] the end
	at := func(i int) int { return off[i+1] }
	cases := []struct {
		name        string
		mutate      func([]byte) []byte
		want        int
		torn, cCorr bool
	}{
		{"intact", func(b []byte) []byte { return b }, 10, false, false},
		{"torn inside a payload", func(b []byte) []byte { return b[:len(b)-3] }, 9, true, false},
		{"torn inside a frame header", func(b []byte) []byte { return b[:at(7)+5] }, 7, true, false},
		{"zeros after the last write", func(b []byte) []byte { return append(b[:at(8)], make([]byte, 4096)...) }, 8, true, false},
		{"flipped payload byte", func(b []byte) []byte { b[at(4)+20] ^= 0x40; return b }, 4, false, true},
		{"flipped checksum", func(b []byte) []byte { b[at(6)+5] ^= 1; return b }, 6, false, true},
		{"absurd length", func(b []byte) []byte { b[at(2)+3] = 0x7f; return b }, 2, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), segmentName(1, suffixSeg))
			if err := os.WriteFile(p, tc.mutate(append([]byte(nil), full...)), 0o600); err != nil {
				t.Fatal(err)
			}
			var got []Record
			st, err := ScanFile(p, true, func(r *Record) error { got = append(got, *r); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if st.Records != tc.want || len(got) != tc.want || st.Torn != tc.torn || st.Corrupt != tc.cCorr {
				t.Fatalf("got %d records, %+v; want %d torn=%v corrupt=%v", len(got), st, tc.want, tc.torn, tc.cCorr)
			}
			for i, r := range got {
				if want := testRecord(i).MessageID; r.MessageID != want {
					t.Fatalf("record %d is %q, want %q", i, r.MessageID, want)
				}
			}
		})
	}
}

// frameOffsets returns where each frame of a segment starts, and its end.
func frameOffsets(b []byte) []int {
	var off []int
	for o := 0; o < len(b); o += frameHeader + int(binary.LittleEndian.Uint32(b[o:])) {
		off = append(off, o)
	}
	return append(off, len(b))
}

func TestAgeRotationAndReopenSealsOpenSegments(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, err := Open(Config{Dir: dir, SegmentAge: 50 * time.Millisecond, FsyncInterval: 10 * time.Millisecond, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.Append(ctx, testRecord(1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		segs, _ := ListSegments(dir)
		if len(segs) == 1 && segs[0].State == "closed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("segment not rotated by age: %+v", segs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Append(ctx, testRecord(2)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A second writer on the same directory is refused.
	if _, err := Open(Config{Dir: dir}); err == nil {
		t.Fatal("a second Open of a locked directory succeeded")
	}
	// Simulate a crash: the lock goes, the .open stays.
	_ = l.lock.Close()
	l2, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close(ctx)
	segs, _ := ListSegments(dir)
	if len(segs) != 2 || segs[0].State != "closed" || segs[1].State != "closed" {
		t.Fatalf("after reopen: %+v, want two closed segments", segs)
	}
	recs, _ := readAll(t, dir)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
}

func TestDiskBoundPrunesExportedThenDrops(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	l, err := Open(Config{Dir: dir, SegmentBytes: 2000, MaxDisk: 10_000, Registerer: reg, Fsync: FsyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	frame := len(appendRecord(nil, &Record{})) // lower bound; real frames are bigger
	_ = frame
	// Fill the bound with unexported segments.
	written := 0
	for i := 0; ; i++ {
		err := l.Append(ctx, testRecord(i))
		if err == ErrDiskFull {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		written++
		if i > 10_000 {
			t.Fatal("never hit the bound")
		}
	}
	dropped := testutil.ToFloat64(l.m.dropped.WithLabelValues("disk_full"))
	if dropped != 1 {
		t.Fatalf("dropped_total{disk_full} = %v, want 1", dropped)
	}
	if err := l.Append(ctx, testRecord(99_999), testRecord(99_998)); err != ErrDiskFull {
		t.Fatalf("append over the bound: %v, want ErrDiskFull", err)
	}
	if got := testutil.ToFloat64(l.m.dropped.WithLabelValues("disk_full")); got != 3 {
		t.Fatalf("dropped_total{disk_full} = %v, want 3", got)
	}
	// Export (mark) the closed segments: the next append prunes them and fits.
	segs, _ := ListSegments(dir)
	marked := 0
	for _, s := range segs {
		if s.State == "closed" {
			if err := os.Rename(s.Path, filepath.Join(dir, segmentName(s.ID, suffixDone))); err != nil {
				t.Fatal(err)
			}
			marked++
		}
	}
	if marked == 0 {
		t.Fatal("no closed segment to export")
	}
	if err := l.Append(ctx, testRecord(100_000)); err != nil {
		t.Fatalf("append after export: %v", err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := readAll(t, dir)
	for _, r := range recs {
		if r.MessageID == testRecord(99_999).MessageID {
			t.Fatal("a dropped record is on disk")
		}
	}
	if recs[len(recs)-1].MessageID != testRecord(100_000).MessageID {
		t.Fatal("the record after pruning is not the newest on disk")
	}
	var disk int64
	segs, _ = ListSegments(dir)
	for _, s := range segs {
		disk += s.Size
	}
	if disk > 10_000 {
		t.Fatalf("%d bytes on disk, bound 10000", disk)
	}
	t.Logf("%d records fit before the bound; %d left after pruning", written, len(recs))
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Config{Dir: dir, SegmentBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 300 {
		r := testRecord(i)
		r.UserID = fmt.Sprintf("user-%d", i%10)
		if i%2 == 0 {
			r.Campaign = "camp-2"
		}
		if err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil { // the open segment is read too
		t.Fatal(err)
	}
	defer l.Close(ctx)
	for _, tc := range []struct {
		q     Query
		want  int
		trunc bool
	}{
		{Query{UserID: "user-3"}, 30, false},
		{Query{UserID: "user-4", Campaign: "camp-2"}, 30, false},
		{Query{UserID: "user-3", Campaign: "camp-2"}, 0, false},
		{Query{UserID: "user-3", Limit: 5}, 5, true},
		{Query{UserID: "nobody"}, 0, false},
	} {
		t.Run(fmt.Sprintf("%+v", tc.q), func(t *testing.T) {
			res, err := Find(dir, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Records) != tc.want || res.Truncated != tc.trunc || res.Scanned != 300 {
				t.Fatalf("got %d records (truncated %v, scanned %d), want %d (%v, 300)", len(res.Records), res.Truncated, res.Scanned, tc.want, tc.trunc)
			}
			if tc.trunc && res.Records[4].MessageID != testRecord(293).MessageID {
				t.Fatalf("kept %q last, want the newest match %q", res.Records[4].MessageID, testRecord(293).MessageID)
			}
		})
	}
	if _, err := Find(dir, Query{}); err == nil {
		t.Fatal("a query without a user succeeded")
	}
}

func TestMask(t *testing.T) {
	m := &Masker{Token: AddressTruncate, Email: AddressHash, Phone: AddressTruncate, Salt: "s3"}
	hm := &Masker{Token: AddressHash, Email: AddressHash, Phone: AddressHash}
	for _, tc := range []struct {
		m          *Masker
		ch, in, to string
	}{
		{m, "apns", "0123456789abcdef", "01234567"},
		{m, "webpush", "https://push.example.com/wpush/v2/abc", "https://push.example.com/…"},
		{m, "sms", "+4915112345678", "…5678"},
		{&Masker{Email: AddressTruncate}, "email", "jane.doe@example.com", "j…@example.com"},
		{&Masker{Email: AddressPlain}, "email", "jane.doe@example.com", "jane.doe@example.com"},
		{&Masker{Email: AddressOmit}, "email", "jane.doe@example.com", ""},
		{hm, "email", "jane.doe@example.com", "86e0b9e56c17cc4d12387e19"},
	} {
		t.Run(tc.ch+" "+tc.in, func(t *testing.T) {
			if got := string(tc.m.AppendMask([]byte("x"), tc.ch, tc.in)); got != "x"+tc.to {
				t.Fatalf("AppendMask(%s, %q) = %q, want x%q", tc.ch, tc.in, got, tc.to)
			}
			if got := tc.m.Mask(tc.ch, tc.in); got != tc.to {
				t.Fatalf("Mask(%s, %s) = %q, want %q", tc.ch, tc.in, got, tc.to)
			}
		})
	}
	if a, b := m.Mask("email", "x@y.z"), hm.Mask("email", "x@y.z"); a == b || len(a) != 24 {
		t.Fatalf("salted %q vs unsalted %q: the salt must change the hash", a, b)
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, policy := range []FsyncPolicy{FsyncNone, FsyncInterval, FsyncAlways} {
		b.Run(string(policy), func(b *testing.B) {
			l, err := Open(Config{Dir: b.TempDir(), Fsync: policy})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			recs := make([]Record, 1000)
			for i := range recs {
				recs[i] = testRecord(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += len(recs) {
				bt := l.Batch()
				for j := range min(len(recs), b.N-i) {
					bt.Add(&recs[j])
				}
				if err := l.Commit(ctx, bt); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			st, _ := os.Stat(l.Dir())
			_ = st
			if err := l.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

package shard_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/store/shard"
	"github.com/notifyd/notifyd/store/shard/shardgen"
)

// Benchmarks run on a generated shard cached outside the repository
// ($TMPDIR/notifyd-bench/rows-N-vV.shard, seed 1, V the format version),
// built on first use. N is
// 100000 unless NOTIFYD_BENCH_ROWS says otherwise; the figures use
// NOTIFYD_BENCH_ROWS=10000000 (the file is built once, about 2 GB).
func benchRows(b *testing.B) uint64 {
	if s := os.Getenv("NOTIFYD_BENCH_ROWS"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			b.Fatalf("NOTIFYD_BENCH_ROWS=%q: want a positive integer", s)
		}
		return n
	}
	return 100_000
}

func benchShard(b *testing.B, n uint64) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "notifyd-bench")
	path := filepath.Join(dir, fmt.Sprintf("rows-%d-v%d.shard", n, shard.FormatVersion))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if testing.Short() {
		b.Skip("no cached bench shard and -short is set")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	w, err := shard.NewWriter(path, shard.WriterOptions{Generation: 1})
	if err != nil {
		b.Fatal(err)
	}
	g := shardgen.New(1)
	var p shard.Profile
	for i := range n {
		g.Profile(i, &p)
		if err := w.Add(&p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		b.Fatal(err)
	}
	return path
}

// cpuTimer reports process CPU time per op next to wall time: on a shared
// machine wall ns/op mostly measures the scheduler, CPU ns/op the code.
type cpuTimer struct{ start time.Duration }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuTimer { return cpuTimer{start: cpuNow()} }

func (c cpuTimer) report(b *testing.B, per float64, unit string) {
	b.ReportMetric(float64((cpuNow()-c.start).Nanoseconds())/per, unit)
}

func openBench(b *testing.B) *shard.Reader {
	r, err := shard.Open(benchShard(b, benchRows(b)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Release() })
	// Steady state: verify every block (a once-per-mapping cost, measured by
	// BenchmarkVerify) and fault the pages in before timing.
	if rep := r.Verify(context.Background()); !rep.OK() {
		b.Fatalf("bench shard is corrupt: %v", rep.Problems)
	}
	b.ResetTimer()
	return r
}

// BenchmarkVerify checks every checksum of a freshly mapped shard: the
// once-per-mapping cost that first use spreads over the blocks, and what
// `notifyd shard inspect` pays.
func BenchmarkVerify(b *testing.B) {
	path := benchShard(b, benchRows(b))
	cpu := startCPU()
	var size int
	for b.Loop() {
		r, err := shard.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if rep := r.Verify(context.Background()); !rep.OK() {
			b.Fatal(rep.Problems)
		}
		size = r.Size()
		r.Release()
	}
	b.SetBytes(int64(size))
	cpu.report(b, float64(b.N), "cpu-ns/op")
}

// BenchmarkOpen maps and validates a shard. Compare rows=1000 with the large
// size: the cost must not grow with the row count.
func BenchmarkOpen(b *testing.B) {
	for _, n := range []uint64{1000, benchRows(b)} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			path := benchShard(b, n)
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				r, err := shard.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				r.Release()
			}
			cpu.report(b, float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkIterateSegment walks a whole segment in batches of 1024 row
// indices and reports ns per member.
func BenchmarkIterateSegment(b *testing.B) {
	r := openBench(b)
	for _, name := range []string{"all", "newsletter", "active_30d", "vip"} {
		b.Run(name, func(b *testing.B) {
			seg, err := r.Segment(name)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]uint32, 1024)
			var members uint64
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				for it := seg.Iter(); ; {
					k := it.Next(buf)
					if k == 0 {
						break
					}
					members += uint64(k)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(members), "ns/member")
			cpu.report(b, float64(members), "cpu-ns/member")
		})
	}
}

// BenchmarkResumeAfterKey starts iterating the 90% segment after the key of
// its middle member (a campaign resuming from its checkpoint) and reads the
// first batch.
func BenchmarkResumeAfterKey(b *testing.B) {
	r := openBench(b)
	seg, err := r.Segment("newsletter")
	if err != nil {
		b.Fatal(err)
	}
	mid, err := r.Row(uint32(r.Rows() / 2))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]uint32, 1024)
	cpu := startCPU()
	for b.Loop() {
		it, err := seg.IterAfterKey(mid.Key())
		if err != nil {
			b.Fatal(err)
		}
		if it.Next(buf) == 0 || uint64(buf[0]) <= r.Rows()/2 {
			b.Fatalf("resumed at row %d", buf[0])
		}
	}
	cpu.report(b, float64(b.N), "cpu-ns/op")
}

// BenchmarkResolve reads email and first_name of consecutive members of the
// 90% segment: one op is one member.
func BenchmarkResolve(b *testing.B) {
	r := openBench(b)
	seg, err := r.Segment("newsletter")
	if err != nil {
		b.Fatal(err)
	}
	firstName, ok := r.AttrID("first_name")
	if !ok {
		b.Fatal("no first_name attribute")
	}
	buf := make([]uint32, 1024)
	it := seg.Iter()
	var n, pos int
	var sink int
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		if pos == n {
			if n = it.Next(buf); n == 0 {
				it = seg.Iter()
				n = it.Next(buf)
			}
			pos = 0
		}
		row, err := r.Row(buf[pos])
		if err != nil {
			b.Fatal(err)
		}
		pos++
		name, _ := row.StringAttr(firstName)
		sink += len(row.Email()) + len(name)
	}
	cpu.report(b, float64(b.N), "cpu-ns/op")
	if sink == 0 {
		b.Fatal("resolved nothing")
	}
}

// BenchmarkLookup finds rows by external id (binary search on the key).
func BenchmarkLookup(b *testing.B) {
	r := openBench(b)
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = shardgen.ID(uint64(i) * 2654435761 % r.Rows())
	}
	b.ReportAllocs()
	i := 0
	cpu := startCPU()
	for b.Loop() {
		if _, ok := r.Lookup(ids[i&4095]); !ok {
			b.Fatalf("lookup %s failed", ids[i&4095])
		}
		i++
	}
	cpu.report(b, float64(b.N), "cpu-ns/op")
}

// BenchmarkHeapWhileIterating iterates the "all" segment and resolves every
// member, reporting heap growth in MiB (it should stay near zero).
func BenchmarkHeapWhileIterating(b *testing.B) {
	r := openBench(b)
	seg, err := r.Segment("all")
	if err != nil {
		b.Fatal(err)
	}
	firstName, _ := r.AttrID("first_name")
	buf := make([]uint32, 1024)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var sink, members int
	cpu := startCPU()
	for b.Loop() {
		for it := seg.Iter(); ; {
			k := it.Next(buf)
			if k == 0 {
				break
			}
			for _, i := range buf[:k] {
				row, err := r.Row(i)
				if err != nil {
					b.Fatal(err)
				}
				name, _ := row.StringAttr(firstName)
				sink += len(row.Email()) + len(name)
			}
			members += k
		}
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), "heap-MiB")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/(1<<20), "alloc-MiB")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(members), "ns/member")
	cpu.report(b, float64(members), "cpu-ns/member")
	if sink == 0 {
		b.Fatal("resolved nothing")
	}
}

// BenchmarkFileSize reports shard bytes per profile against the JSON Lines
// bytes of the same profiles (what `notifyd shard generate` writes).
func BenchmarkFileSize(b *testing.B) {
	n := benchRows(b)
	st, err := os.Stat(benchShard(b, n))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	g := shardgen.New(1)
	var p shard.Profile
	var line []byte
	var jsonBytes uint64
	for i := range n {
		g.Profile(i, &p)
		line = shard.AppendJSON(line[:0], &p)
		jsonBytes += uint64(len(line)) + 1
	}
	for b.Loop() {
	}
	b.ReportMetric(float64(st.Size())/float64(n), "shard-B/profile")
	b.ReportMetric(float64(jsonBytes)/float64(n), "jsonl-B/profile")
	b.ReportMetric(float64(jsonBytes)/float64(st.Size()), "ratio")
	b.Logf("%d profiles: shard %d bytes, JSON Lines %d bytes (measured in %s)", n, st.Size(), jsonBytes, time.Since(start))
}

// BenchmarkWriter measures the writer end to end (generate, spill, sort,
// write, fsync) on 20000 profiles.
func BenchmarkWriter(b *testing.B) {
	const n = 20000
	g := shardgen.New(1)
	profiles := make([]shard.Profile, n)
	for i := range profiles {
		g.Profile(uint64(i), &profiles[i])
	}
	dir := b.TempDir()
	b.ReportAllocs()
	for b.Loop() {
		w, err := shard.NewWriter(filepath.Join(dir, "w.shard"), shard.WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range profiles {
			if err := w.Add(&profiles[i]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Commit(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/profile")
}

// BenchmarkCalibrate is the machine's own yardstick for the figures above: a
// dependent chain of 1000 multiply-adds, about 4000 cycles (1.3 µs at 3 GHz)
// on an idle core. On a shared machine, divide other results by
// (this result / 1.3 µs) to estimate idle-machine figures.
func BenchmarkCalibrate(b *testing.B) {
	x := uint32(1)
	cpu := startCPU()
	for b.Loop() {
		for range 1000 {
			x = x*1664525 + 1013904223
		}
	}
	cpu.report(b, float64(b.N), "cpu-ns/op")
	if x == 0 {
		b.Fatal("unreachable")
	}
}

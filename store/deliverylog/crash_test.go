package deliverylog

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
)

// The crash tests re-execute the test binary as a child that writes (or
// exports) until it is SIGKILLed.
const (
	envChild = "NOTIFYD_DELIVERYLOG_CHILD"
	envDir   = "NOTIFYD_DELIVERYLOG_DIR"
	envLake  = "NOTIFYD_DELIVERYLOG_LAKE"
	envStart = "NOTIFYD_DELIVERYLOG_START"
)

func crashRecord(i int) Record {
	r := testRecord(i)
	r.MessageID = "crash:" + strconv.Itoa(i)
	return r
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	switch os.Getenv(envChild) {
	case "append":
		// Append forever with fsync always; print each acknowledged id.
		l, err := Open(Config{Dir: os.Getenv(envDir), Fsync: FsyncAlways, SegmentBytes: 64 << 10})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		next, _ := strconv.Atoi(os.Getenv(envStart))
		out := bufio.NewWriter(os.Stdout)
		for n := 1; ; n = n%37 + 1 {
			recs := make([]Record, n)
			for j := range recs {
				recs[j] = crashRecord(next + j)
			}
			if err := l.Append(context.Background(), recs...); err != nil {
				fmt.Fprintln(out, "error", err)
				out.Flush()
				os.Exit(1)
			}
			next += n
			fmt.Fprintln(out, "ack", next) // every id below next is acknowledged
			out.Flush()
		}
	case "export":
		ex, err := NewExporter(ExporterConfig{Dir: os.Getenv(envDir), Target: LocalTarget{Dir: os.Getenv(envLake)}, RowGroupRows: 5000})
		if err != nil {
			os.Exit(1)
		}
		fmt.Println("started")
		if _, err := ex.Export(context.Background()); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("done")
		os.Exit(0)
	}
}

func startChild(t *testing.T, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(stdout)
}

// TestCrashSafetySIGKILL kills a writer with fsync always in the middle of
// its appends, several times over one directory: every record acknowledged
// before a kill is read back, none twice, and nothing that did not verify
// is returned. Then it kills exports of the result part-way and re-runs
// them: each message is in the Parquet output exactly once.
func TestCrashSafetySIGKILL(t *testing.T) {
	if os.Getenv(envChild) != "" {
		t.Skip("child")
	}
	dir, lake := t.TempDir(), t.TempDir()
	acked, next := 0, 0
	type span struct{ from, to int }
	var spans []span // acknowledged ids of every round
	for round, wait := range []time.Duration{150 * time.Millisecond, 400 * time.Millisecond, 50 * time.Millisecond, 700 * time.Millisecond} {
		cmd, sc := startChild(t, envChild+"=append", envDir+"="+dir, envStart+"="+strconv.Itoa(next))
		deadline := time.Now().Add(wait)
		start := next
		roundAcked := next
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "ack" {
				roundAcked, _ = strconv.Atoi(f[1])
			} else if len(f) > 0 && f[0] == "error" {
				t.Fatalf("child: %s", sc.Text())
			}
			if time.Now().After(deadline) {
				break
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if roundAcked == next {
			t.Fatalf("round %d: the child acknowledged nothing", round)
		}
		acked += roundAcked - start
		spans = append(spans, span{start, roundAcked})
		// Ids go on past anything the child may have written unacknowledged.
		next = roundAcked + 100_000
		seen := map[string]int{}
		segs, err := ListSegments(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range segs {
			if _, err := ScanFile(s.Path, true, func(r *Record) error {
				i, err := strconv.Atoi(strings.TrimPrefix(r.MessageID, "crash:"))
				want := crashRecord(i)
				want.Daemon, want.Shard, want.Segment, want.Seq = r.Daemon, r.Shard, r.Segment, r.Seq
				if err != nil || *r != want {
					return fmt.Errorf("returned a record that is not one written: %+v", r)
				}
				seen[r.MessageID]++
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("%s read %d times", id, n)
			}
		}
		// Every acknowledged id of every round so far is there.
		missing := 0
		for _, sp := range spans {
			for i := sp.from; i < sp.to; i++ {
				if seen[crashRecord(i).MessageID] == 0 {
					missing++
				}
			}
		}
		if missing > 0 {
			t.Fatalf("round %d: %d acknowledged records missing after SIGKILL", round, missing)
		}
		t.Logf("round %d: killed after %s, %d records acknowledged this round, %d on disk in all", round, wait, roundAcked-start, len(seen))
	}
	// Open once more (as the next daemon would) and close: every segment is sealed.
	l, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	all, _ := readAll(t, dir)
	onDisk := map[string]bool{}
	for _, r := range all {
		onDisk[r.MessageID] = true
	}
	if len(onDisk) < acked {
		t.Fatalf("%d records on disk, %d acknowledged", len(onDisk), acked)
	}

	// Exports killed part-way, then a full one.
	for _, wait := range []time.Duration{5 * time.Millisecond, 30 * time.Millisecond, 80 * time.Millisecond} {
		cmd, sc := startChild(t, envChild+"=export", envDir+"="+dir, envLake+"="+lake)
		if sc.Scan() && sc.Text() != "started" {
			t.Fatalf("export child: %s", sc.Text())
		}
		time.Sleep(wait)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	ex, _ := NewExporter(ExporterConfig{Dir: dir, Target: LocalTarget{Dir: lake}, RowGroupRows: 5000})
	if _, err := ex.Export(context.Background()); err != nil {
		t.Fatal(err)
	}
	inLake := map[string]int{}
	if err := filepath.WalkDir(lake, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".parquet" || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		rows, err := parquet.ReadFile[Record](p)
		for _, r := range rows {
			inLake[r.MessageID]++
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(inLake) != len(onDisk) {
		t.Fatalf("%d message ids in the lake, %d in the log", len(inLake), len(onDisk))
	}
	for id, n := range inLake {
		if n != 1 || !onDisk[id] {
			t.Fatalf("%s: %d times in the lake (in the log: %v)", id, n, onDisk[id])
		}
	}
	t.Logf("%d acknowledged, %d on disk, %d in the lake once each", acked, len(onDisk), len(inLake))
}

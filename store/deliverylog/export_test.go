package deliverylog

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/parquet-go/parquet-go"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestSchemaGolden pins the lake's schema: a change to Record's columns
// must be deliberate (update testdata/schema.golden and docs/delivery-log.md).
func TestSchemaGolden(t *testing.T) {
	got := Schema().String() + "\n"
	path := filepath.Join("testdata", "schema.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("Parquet schema changed (run with -update if deliberate, and update docs/delivery-log.md):\n got:\n%s\nwant:\n%s", got, want)
	}
}

// fillLog writes n records spread over three hours into closed segments.
func fillLog(t testing.TB, dir string, n int) {
	t.Helper()
	l, err := Open(Config{Dir: dir, SegmentBytes: 16 << 10, Daemon: "host-a/7", Shard: 2, Fsync: FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 4, 22, 30, 0, 0, time.UTC)
	for i := range n {
		r := testRecord(i)
		r.AnsweredAt = base.Add(time.Duration(i%3) * time.Hour).UnixMicro()
		if i%5 == 0 {
			r.Reason, r.Outcome = "expired", "expired"
		}
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// readLake reads every Parquet file under root with parquet-go's reader and
// counts rows by message id.
func readLake(t *testing.T, root string) (map[string]int, map[string]int) {
	t.Helper()
	byID, byPart := map[string]int{}, map[string]int{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".parquet") {
			return err
		}
		rows, err := parquet.ReadFile[Record](p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		for _, r := range rows {
			byID[r.MessageID]++
			byPart[rel]++
			if want := time.UnixMicro(r.AnsweredAt).UTC().Format("dt=2006-01-02/hour=15"); want != filepath.ToSlash(rel) {
				return fmt.Errorf("row answered at %s is in partition %s", want, rel)
			}
			if r.Daemon != "host-a/7" || r.Shard != 2 || r.Event != "outcome" {
				return fmt.Errorf("row lost fields: %+v", r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byID, byPart
}

func TestExportLocalExactlyOnce(t *testing.T) {
	dir, lake := t.TempDir(), t.TempDir()
	const n = 5000
	fillLog(t, dir, n)
	ex, err := NewExporter(ExporterConfig{Dir: dir, Target: LocalTarget{Dir: lake}, RowGroupRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ex.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != n || st.Segments < 2 {
		t.Fatalf("export: %+v, want %d rows over several segments", st, n)
	}
	byID, byPart := readLake(t, lake)
	if len(byID) != n {
		t.Fatalf("%d distinct message ids in the lake, want %d", len(byID), n)
	}
	for id, c := range byID {
		if c != 1 {
			t.Fatalf("message %s is in the lake %d times", id, c)
		}
	}
	want := map[string]int{"dt=2026-12-04/hour=22": 1667, "dt=2026-12-04/hour=23": 1667, "dt=2026-12-05/hour=00": 1666}
	for k, v := range want {
		if byPart[k] != v {
			t.Fatalf("partitions %v, want %v", byPart, want)
		}
	}
	// A second run finds nothing left to do.
	if st, err := ex.Export(context.Background()); err != nil || st.Segments != 0 {
		t.Fatalf("second export: %+v, %v", st, err)
	}
	segs, _ := ListSegments(dir)
	for _, s := range segs {
		if s.State != "exported" {
			t.Fatalf("segment %d is %s after export", s.ID, s.State)
		}
	}
	// Dictionary encoding and zstd are on.
	f, err := os.Open(filepath.Join(lake, "dt=2026-12-04", "hour=22", partName("host-a/7", 2, segs[0].ID)+".parquet"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range pf.Metadata().RowGroups {
		for _, c := range rg.Columns {
			if c.MetaData.Codec.String() != "ZSTD" {
				t.Fatalf("column %v codec %v, want ZSTD", c.MetaData.PathInSchema, c.MetaData.Codec)
			}
			if c.MetaData.PathInSchema[0] == "channel" && c.MetaData.DictionaryPageOffset == 0 {
				t.Fatal("channel column has no dictionary page")
			}
		}
	}
}

// failingTarget fails the put after `after` successful ones, as a crash
// in the middle of an export would leave things.
type failingTarget struct {
	Target
	after int
}

func (f *failingTarget) Put(ctx context.Context, name string, file *os.File, size int64) error {
	if f.after == 0 {
		return errors.New("injected: export killed")
	}
	f.after--
	return f.Target.Put(ctx, name, file, size)
}

func TestExportInterruptedThenRerunIsExactlyOnce(t *testing.T) {
	for _, after := range []int{0, 1, 2, 3, 4, 7} {
		t.Run(fmt.Sprintf("fails after %d puts", after), func(t *testing.T) {
			dir, lake := t.TempDir(), t.TempDir()
			fillLog(t, dir, 3000)
			ex, _ := NewExporter(ExporterConfig{Dir: dir, Target: &failingTarget{Target: LocalTarget{Dir: lake}, after: after}})
			if _, err := ex.Export(context.Background()); err == nil {
				t.Fatal("the injected failure did not surface")
			}
			ex2, _ := NewExporter(ExporterConfig{Dir: dir, Target: LocalTarget{Dir: lake}})
			if _, err := ex2.Export(context.Background()); err != nil {
				t.Fatal(err)
			}
			byID, _ := readLake(t, lake)
			if len(byID) != 3000 {
				t.Fatalf("%d message ids in the lake, want 3000", len(byID))
			}
			for id, c := range byID {
				if c != 1 {
					t.Fatalf("message %s in the lake %d times", id, c)
				}
			}
		})
	}
}

// TestExportS3 exports into an in-process fake S3 (gofakes3 over
// httptest: no S3 server can be installed here) through minio-go, path
// style, static credentials, and reads the objects back.
func TestExportS3(t *testing.T) {
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	endpoint := strings.TrimPrefix(srv.URL, "http://")
	if err := backend.CreateBucket("lake"); err != nil {
		t.Fatal(err)
	}
	target, err := NewS3Target(S3Config{Endpoint: endpoint, Region: "us-east-1", Bucket: "lake", Prefix: "notifyd/delivery", PathStyle: true,
		AccessKey: "AKIDEXAMPLE", SecretKey: "secret-example"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fillLog(t, dir, 2000)
	ex, _ := NewExporter(ExporterConfig{Dir: dir, Target: target})
	st, err := ex.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 2000 {
		t.Fatalf("exported %d rows, want 2000", st.Rows)
	}
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4("AKIDEXAMPLE", "secret-example", ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	local := t.TempDir()
	manifests, files := 0, 0
	for obj := range c.ListObjects(ctx, "lake", minio.ListObjectsOptions{Prefix: "notifyd/delivery/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		rel := strings.TrimPrefix(obj.Key, "notifyd/delivery/")
		if strings.HasPrefix(rel, "_manifests/") {
			manifests++
			continue
		}
		files++
		if err := c.FGetObject(ctx, "lake", obj.Key, filepath.Join(local, filepath.FromSlash(rel)), minio.GetObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if manifests != st.Segments || files != st.Files {
		t.Fatalf("bucket holds %d manifests and %d files, export said %d segments and %d files", manifests, files, st.Segments, st.Files)
	}
	byID, _ := readLake(t, local)
	if len(byID) != 2000 {
		t.Fatalf("%d message ids in the bucket, want 2000", len(byID))
	}
}

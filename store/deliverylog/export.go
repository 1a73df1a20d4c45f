package deliverylog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
)

// SchemaVersion is written into every Parquet file's metadata
// (notifyd.schema_version); it changes only when a column changes meaning.
const SchemaVersion = "1"

// Schema is the Parquet schema of exported files (docs/delivery-log.md).
func Schema() *parquet.Schema { return parquet.SchemaOf(Record{}) }

// Target is where exported files go. Put must make name appear whole or
// not at all, and overwrite an object of the same name (a re-run of an
// export that crashed writes the same names again).
type Target interface {
	Put(ctx context.Context, name string, f *os.File, size int64) error
	String() string
}

// ExporterConfig configures an Exporter.
type ExporterConfig struct {
	// Dir is the delivery log's directory.
	Dir    string
	Target Target
	// RowGroupRows is the most rows per row group (default 262,144: large
	// enough for column scans, small enough to bound the exporter's heap).
	RowGroupRows int64
	Logger       *slog.Logger
	Now          func() time.Time
	Registerer   prometheus.Registerer
}

// Exporter turns closed segments into Parquet files on a Target.
type Exporter struct {
	cfg          ExporterConfig
	rows, errors prometheus.Counter
	files        prometheus.Counter
}

// NewExporter checks cfg and registers the export metrics.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if cfg.Dir == "" || cfg.Target == nil {
		return nil, errors.New("create delivery log exporter: a log directory and a target are required")
	}
	if cfg.RowGroupRows <= 0 {
		cfg.RowGroupRows = 262_144
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Exporter{cfg: cfg,
		rows: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_exported_rows_total",
			Help: "Delivery log records exported to Parquet."}),
		files: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_exported_files_total",
			Help: "Parquet files written by the delivery log export."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_export_errors_total",
			Help: "Delivery log segments whose export failed (retried on the next run)."}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{e.rows, e.files, e.errors} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register delivery log export metrics: %w", err)
			}
		}
	}
	return e, nil
}

// ExportStats sums one Export run.
type ExportStats struct {
	Segments int
	Rows     int64
	Files    int
	Bytes    int64
	// Damaged counts segments that ended in a torn tail or a bad frame (what
	// verified before it was exported).
	Damaged int
}

// Manifest is written next to the data for each exported segment
// (_manifests/<part>.json), after its files: a segment with a manifest is
// complete in the lake.
type Manifest struct {
	Segment    int64          `json:"segment"`
	Daemon     string         `json:"daemon"`
	Shard      int32          `json:"shard"`
	Rows       int64          `json:"rows"`
	Files      []ManifestFile `json:"files"`
	Torn       bool           `json:"torn,omitempty"`
	Corrupt    bool           `json:"corrupt,omitempty"`
	ExportedAt time.Time      `json:"exported_at"`
}

// ManifestFile is one Parquet file of a segment.
type ManifestFile struct {
	Name  string `json:"name"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
}

// Export exports every closed segment, oldest first, and marks each
// exported (.done) once its files and manifest are on the target. A crash
// or error leaves the segment closed: the next run writes the same object
// names again, so rows are neither lost nor duplicated.
func (e *Exporter) Export(ctx context.Context) (ExportStats, error) {
	var total ExportStats
	segs, err := ListSegments(e.cfg.Dir)
	if err != nil {
		return total, err
	}
	e.cleanSpool()
	for _, s := range segs {
		if s.State != "closed" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("export delivery log: %w", err)
		}
		st, err := e.exportSegment(ctx, s)
		if err != nil {
			e.errors.Inc()
			return total, fmt.Errorf("export segment %d: %w", s.ID, err)
		}
		total.Segments++
		total.Rows += st.Rows
		total.Files += st.Files
		total.Bytes += st.Bytes
		total.Damaged += st.Damaged
	}
	return total, nil
}

// partition is one dt/hour's spool file of a segment.
type partition struct {
	key  string // dt=YYYY-MM-DD/hour=HH
	f    *os.File
	w    *parquet.GenericWriter[Record]
	buf  []Record
	rows int64
}

func (p *partition) flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	if _, err := p.w.Write(p.buf); err != nil {
		return err
	}
	p.rows += int64(len(p.buf))
	clear(p.buf)
	p.buf = p.buf[:0]
	return nil
}

func (e *Exporter) exportSegment(ctx context.Context, s SegmentFile) (ExportStats, error) {
	var st ExportStats
	spool := filepath.Join(e.cfg.Dir, "export.tmp")
	if err := os.MkdirAll(spool, 0o750); err != nil {
		return st, fmt.Errorf("create export spool: %w", err)
	}
	parts := map[string]*partition{}
	defer func() {
		for _, p := range parts {
			_ = p.f.Close()
			_ = os.Remove(p.f.Name())
		}
	}()
	var daemon string
	var shard int32
	scanSt, err := ScanFile(s.Path, true, func(r *Record) error {
		daemon, shard = r.Daemon, r.Shard
		at := time.UnixMicro(r.AnsweredAt).UTC()
		key := at.Format("dt=2006-01-02/hour=15")
		p := parts[key]
		if p == nil {
			f, err := os.CreateTemp(spool, "part-*.parquet")
			if err != nil {
				return fmt.Errorf("create spool file: %w", err)
			}
			w := parquet.NewGenericWriter[Record](f,
				parquet.Compression(&parquet.Zstd),
				parquet.MaxRowsPerRowGroup(e.cfg.RowGroupRows),
				parquet.KeyValueMetadata("notifyd.schema_version", SchemaVersion),
				parquet.KeyValueMetadata("notifyd.segment", strconv.FormatInt(s.ID, 10)),
				parquet.CreatedBy("notifyd", "", ""))
			p = &partition{key: key, f: f, w: w, buf: make([]Record, 0, 4096)}
			parts[key] = p
		}
		p.buf = append(p.buf, *r)
		if len(p.buf) == cap(p.buf) {
			return p.flush()
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if scanSt.Torn || scanSt.Corrupt {
		st.Damaged = 1
		e.cfg.Logger.Warn("delivery log segment ends early: exporting what verified", "segment", s.ID, "records", scanSt.Records,
			"torn", scanSt.Torn, "corrupt", scanSt.Corrupt, "offset", scanSt.Offset)
	}
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := Manifest{Segment: s.ID, Daemon: daemon, Shard: shard, Torn: scanSt.Torn, Corrupt: scanSt.Corrupt, ExportedAt: e.cfg.Now().UTC()}
	base := partName(daemon, shard, s.ID)
	for _, k := range keys {
		p := parts[k]
		if err := p.flush(); err != nil {
			return st, fmt.Errorf("write parquet: %w", err)
		}
		if err := p.w.Close(); err != nil {
			return st, fmt.Errorf("finish parquet: %w", err)
		}
		size, err := p.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return st, fmt.Errorf("size parquet: %w", err)
		}
		if err := p.f.Sync(); err != nil {
			return st, fmt.Errorf("sync parquet: %w", err)
		}
		if _, err := p.f.Seek(0, io.SeekStart); err != nil {
			return st, fmt.Errorf("rewind parquet: %w", err)
		}
		name := k + "/" + base + ".parquet"
		if err := e.cfg.Target.Put(ctx, name, p.f, size); err != nil {
			return st, fmt.Errorf("put %s: %w", name, err)
		}
		m.Files = append(m.Files, ManifestFile{Name: name, Rows: p.rows, Bytes: size})
		m.Rows += p.rows
		st.Files++
		st.Bytes += size
		e.files.Inc()
	}
	if err := e.putManifest(ctx, spool, "_manifests/"+base+".json", &m); err != nil {
		return st, err
	}
	if err := os.Rename(s.Path, filepath.Join(e.cfg.Dir, segmentName(s.ID, suffixDone))); err != nil {
		return st, fmt.Errorf("mark segment exported: %w", err)
	}
	syncDir(e.cfg.Dir)
	st.Rows = m.Rows
	e.rows.Add(float64(m.Rows))
	return st, nil
}

func (e *Exporter) putManifest(ctx context.Context, spool, name string, m *Manifest) error {
	f, err := os.CreateTemp(spool, "manifest-*.json")
	if err != nil {
		return fmt.Errorf("create manifest: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind manifest: %w", err)
	}
	if err := e.cfg.Target.Put(ctx, name, f, size); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// partName names a segment's files: the daemon, its shard and the segment
// id make it unique across a fleet writing into one bucket, and the same on
// every re-run.
func partName(daemon string, shard int32, id int64) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, daemon)
	if safe == "" {
		safe = "notifyd"
	}
	return fmt.Sprintf("part-%s-s%d-%020d", safe, shard, id)
}

// LocalTarget writes into a directory: a temporary file beside the final
// name, synced, then renamed over it.
type LocalTarget struct{ Dir string }

func (t LocalTarget) String() string { return "dir " + t.Dir }

// Put copies f to Dir/name atomically.
func (t LocalTarget) Put(_ context.Context, name string, f *os.File, _ int64) error {
	dst := filepath.Join(t.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fmt.Errorf("create export directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-*")
	if err != nil {
		return fmt.Errorf("create export file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: a no-op
	if _, err := io.Copy(tmp, f); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("copy export file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("sync export file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close export file: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("publish export file: %w", err)
	}
	syncDir(filepath.Dir(dst))
	return nil
}

// cleanSpool removes spool files an export killed part-way left behind.
// Only old ones: another exporter (the CLI beside the daemon) may be using
// fresh ones.
func (e *Exporter) cleanSpool() {
	spool := filepath.Join(e.cfg.Dir, "export.tmp")
	ents, err := os.ReadDir(spool)
	if err != nil {
		return
	}
	for _, ent := range ents {
		if info, err := ent.Info(); err == nil && e.cfg.Now().Sub(info.ModTime()) > time.Hour {
			_ = os.Remove(filepath.Join(spool, ent.Name()))
		}
	}
}

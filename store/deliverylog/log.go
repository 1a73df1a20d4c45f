package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// FsyncPolicy says when the log's writes are synced to disk.
type FsyncPolicy string

// Fsync policies.
const (
	// FsyncNone leaves flushing to the OS (segments are synced when closed).
	FsyncNone FsyncPolicy = "none"
	// FsyncInterval syncs at most every Config.FsyncInterval.
	FsyncInterval FsyncPolicy = "interval"
	// FsyncAlways syncs before Append returns (group commit per batch).
	FsyncAlways FsyncPolicy = "always"
)

// ParseFsyncPolicy checks a policy name.
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch p := FsyncPolicy(s); p {
	case FsyncNone, FsyncInterval, FsyncAlways:
		return p, nil
	case "":
		return FsyncInterval, nil
	}
	return "", fmt.Errorf("fsync %q: want none, interval or always", s)
}

// Errors a waiting Append returns.
var (
	ErrClosed   = errors.New("delivery log is closed")
	ErrDiskFull = errors.New("delivery log reached max_disk with unexported segments: records dropped")
)

// Config configures a Log. Zero fields take the defaults named.
type Config struct {
	Dir string
	// SegmentBytes rotates a segment once it holds this much (default 64 MiB).
	SegmentBytes int64
	// SegmentAge rotates a non-empty segment this long after it was opened
	// (default 15m), so exports see records within about that.
	SegmentAge time.Duration
	// Fsync is the sync policy (default interval); FsyncInterval its period (default 1s).
	Fsync         FsyncPolicy
	FsyncInterval time.Duration
	// MaxDisk bounds all segment files together (default 4 GiB).
	MaxDisk int64
	// QueueBatches is how many appended batches may wait for the writer (default 256).
	QueueBatches int
	// Daemon and Shard are written into every segment's header.
	Daemon string
	Shard  int
	Now    func() time.Time
	Logger *slog.Logger
	// Registerer receives the log's metrics (nil: not registered).
	Registerer prometheus.Registerer
}

func (c *Config) defaults() {
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = 64 << 20
	}
	if c.SegmentAge <= 0 {
		c.SegmentAge = 15 * time.Minute
	}
	if c.Fsync == "" {
		c.Fsync = FsyncInterval
	}
	if c.FsyncInterval <= 0 {
		c.FsyncInterval = time.Second
	}
	if c.MaxDisk <= 0 {
		c.MaxDisk = 4 << 30
	}
	if c.QueueBatches <= 0 {
		c.QueueBatches = 256
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

type logMetrics struct {
	records, bytes, segments prometheus.Counter
	dropped                  *prometheus.CounterVec
	disk                     prometheus.Gauge
}

func newLogMetrics(reg prometheus.Registerer) (*logMetrics, error) {
	m := &logMetrics{
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_records_total",
			Help: "Records written to the local delivery log."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_bytes_total",
			Help: "Bytes written to the local delivery log (frames and segment headers)."}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{Name: "notifyd_delivery_log_segments_total",
			Help: "Delivery log segments closed (rotated by size or age, or at shutdown)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "notifyd_delivery_log_dropped_total",
			Help: "Delivery log records not written, by reason (disk_full: max_disk reached with unexported segments; write_error: the disk refused the write)."},
			[]string{"reason"}),
		disk: prometheus.NewGauge(prometheus.GaugeOpts{Name: "notifyd_delivery_log_disk_bytes",
			Help: "Bytes the delivery log's segments take on disk."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.records, m.bytes, m.segments, m.dropped, m.disk} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register delivery log metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Batch collects encoded records for one Commit. Get one from Log.Batch.
type Batch struct {
	buf  []byte
	n    int
	sync bool // the writer syncs before done
	done chan error
}

// Add encodes r into the batch. r is not retained.
func (b *Batch) Add(r *Record) {
	start := len(b.buf)
	b.buf = append(b.buf, make([]byte, frameHeader)...)
	b.buf = appendRecord(b.buf, r)
	sealFrame(b.buf, start)
	b.n++
}

// Grow makes room for n more bytes of records: a batch whose size the
// caller can guess is encoded without re-copying its buffer as it grows.
func (b *Batch) Grow(n int) { b.buf = slices.Grow(b.buf, n) }

// Len is the number of records added.
func (b *Batch) Len() int { return b.n }

// Log is an open delivery log directory: Append from any goroutine; one
// writer goroutine writes. Close it to seal the open segment.
type Log struct {
	cfg  Config
	m    *logMetrics
	q    chan *Batch
	mu   sync.RWMutex // Commit holds it shared while sending; Close exclusively
	shut bool
	pool sync.Pool
	lock *os.File
	done chan struct{}

	// writer goroutine only
	f          *os.File
	id, nextID int64
	size       int64
	opened     time.Time
	disk       int64
	dirty      bool
	lastSync   time.Time
	lastDrop   time.Time
}

// Open opens (creating) the log directory, takes its lock (one writer per
// directory), seals segments a crash left open, and starts the writer.
func Open(cfg Config) (*Log, error) {
	cfg.defaults()
	if cfg.Dir == "" {
		return nil, errors.New("open delivery log: no directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("open delivery log: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	m, err := newLogMetrics(cfg.Registerer)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	l := &Log{cfg: cfg, m: m, q: make(chan *Batch, cfg.QueueBatches), lock: lock, done: make(chan struct{})}
	l.pool.New = func() any { return &Batch{buf: make([]byte, 0, 64<<10)} }
	segs, err := sealOpen(cfg.Dir)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	for _, s := range segs {
		l.disk += s.Size
		l.nextID = max(l.nextID, s.ID+1)
	}
	m.disk.Set(float64(l.disk))
	l.lastSync = cfg.Now()
	go l.run()
	return l, nil
}

// lockDir takes an exclusive advisory lock on dir/LOCK, so two daemons never
// write one directory; the lock goes with the process.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock delivery log: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock delivery log %s: another process writes it: %w", dir, err)
	}
	return f, nil
}

// SealIfUnlocked seals segments a dead writer left open, when no process
// holds dir's lock (the CLI's export of a stopped daemon's log). It reports
// whether it could.
func SealIfUnlocked(dir string) (bool, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return false, nil
	}
	defer lock.Close()
	_, err = sealOpen(dir)
	return err == nil, err
}

// sealOpen renames every .open segment to .seg and lists the segments.
func sealOpen(dir string) ([]SegmentFile, error) {
	segs, err := ListSegments(dir)
	if err != nil {
		return nil, err
	}
	for i, s := range segs {
		if s.State != "open" {
			continue
		}
		to := filepath.Join(dir, segmentName(s.ID, suffixSeg))
		if err := os.Rename(s.Path, to); err != nil {
			return nil, fmt.Errorf("seal delivery log segment: %w", err)
		}
		segs[i].Path, segs[i].State = to, "closed"
	}
	return segs, nil
}

// Batch returns an empty batch to fill and Commit.
func (l *Log) Batch() *Batch {
	b := l.pool.Get().(*Batch)
	b.buf, b.n, b.sync, b.done = b.buf[:0], 0, false, nil
	return b
}

// Commit hands b to the writer. It waits for a place in the queue (a disk
// slower than the senders slows them); with FsyncAlways it also waits for
// the sync that covers b. b belongs to the log afterwards.
func (l *Log) Commit(ctx context.Context, b *Batch) error {
	if b.n == 0 {
		l.pool.Put(b)
		return nil
	}
	var done chan error
	if l.cfg.Fsync == FsyncAlways {
		done = make(chan error, 1)
		b.done, b.sync = done, true
	}
	if err := l.send(ctx, b); err != nil {
		return err
	}
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("append to delivery log: %w", ctx.Err())
	}
}

func (l *Log) send(ctx context.Context, b *Batch) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.shut {
		return ErrClosed
	}
	select {
	case l.q <- b:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("append to delivery log: %w", ctx.Err())
	}
}

// Append encodes and commits records (tests, tools; the daemon fills a Batch).
func (l *Log) Append(ctx context.Context, recs ...Record) error {
	b := l.Batch()
	for i := range recs {
		b.Add(&recs[i])
	}
	return l.Commit(ctx, b)
}

// Flush waits until everything committed before it is written and synced.
func (l *Log) Flush(ctx context.Context) error {
	b := l.Batch()
	done := make(chan error, 1)
	b.sync, b.done = true, done
	if err := l.send(ctx, b); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("flush delivery log: %w", ctx.Err())
	}
}

// Close writes what is queued, seals the open segment and releases the
// directory. Appends after Close fail with ErrClosed.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if !l.shut {
		l.shut = true
		close(l.q)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("close delivery log: %w", ctx.Err())
	}
	return l.lock.Close()
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.cfg.Dir }

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(min(l.cfg.FsyncInterval, l.cfg.SegmentAge, time.Second))
	defer tick.Stop()
	var waiting []chan error
	for {
		select {
		case b, ok := <-l.q:
			if !ok {
				l.rotate()
				return
			}
			needSync := false
			for {
				err := l.write(b)
				needSync = needSync || b.sync
				if b.done != nil {
					if err != nil {
						b.done <- err
					} else {
						waiting = append(waiting, b.done)
					}
				}
				l.pool.Put(b)
				// Drain what else is queued: one sync for all of it.
				select {
				case b, ok = <-l.q:
					if ok {
						continue
					}
					l.q = nil // closed: finish this round, then the loop sees it
				default:
				}
				break
			}
			if needSync || (l.cfg.Fsync == FsyncInterval && l.cfg.Now().Sub(l.lastSync) >= l.cfg.FsyncInterval) {
				err := l.sync()
				for _, c := range waiting {
					c <- err
				}
			} else {
				for _, c := range waiting {
					c <- nil
				}
			}
			waiting = waiting[:0]
			if l.q == nil {
				l.rotate()
				return
			}
		case <-tick.C:
			now := l.cfg.Now()
			if l.f != nil && now.Sub(l.opened) >= l.cfg.SegmentAge {
				l.rotate()
			} else if l.cfg.Fsync == FsyncInterval && l.dirty && now.Sub(l.lastSync) >= l.cfg.FsyncInterval {
				_ = l.sync()
			}
		}
	}
}

// write appends one batch to the open segment, opening one when needed.
func (l *Log) write(b *Batch) error {
	if b.n == 0 {
		return nil
	}
	need := int64(len(b.buf))
	if l.f == nil {
		need += 64 // the header frame
	}
	if l.disk+need > l.cfg.MaxDisk {
		l.prune(need)
		if l.disk+need > l.cfg.MaxDisk {
			l.drop("disk_full", b.n, nil)
			return ErrDiskFull
		}
	}
	if l.f == nil {
		if err := l.openSegment(); err != nil {
			l.drop("write_error", b.n, err)
			return err
		}
	}
	n, err := l.f.Write(b.buf)
	l.size += int64(n)
	l.disk += int64(n)
	l.m.bytes.Add(float64(n))
	l.m.disk.Set(float64(l.disk))
	if err != nil {
		// A partial frame ends the segment: readers stop there, so later
		// records go to a new one.
		l.drop("write_error", b.n, err)
		l.rotate()
		return fmt.Errorf("write delivery log: %w", err)
	}
	l.dirty = true
	l.m.records.Add(float64(b.n))
	if l.size >= l.cfg.SegmentBytes {
		l.rotate()
	}
	return nil
}

func (l *Log) drop(reason string, n int, err error) {
	l.m.dropped.WithLabelValues(reason).Add(float64(n))
	now := l.cfg.Now()
	if now.Sub(l.lastDrop) < time.Minute {
		return
	}
	l.lastDrop = now
	if reason == "disk_full" {
		l.cfg.Logger.Error("delivery log full: dropping new records until segments are exported (see notifyd_delivery_log_dropped_total)",
			"dir", l.cfg.Dir, "max_disk", l.cfg.MaxDisk, "disk", l.disk, "records", n)
		return
	}
	l.cfg.Logger.Error("delivery log write failed: records dropped", "dir", l.cfg.Dir, "error", err, "records", n)
}

func (l *Log) openSegment() error {
	now := l.cfg.Now()
	// Ids grow and derive from the clock, so an id is never reused even
	// after every older segment was pruned: export names depend on it.
	id := max(l.nextID, now.UnixMicro())
	path := filepath.Join(l.cfg.Dir, segmentName(id, suffixOpen))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create delivery log segment: %w", err)
	}
	hb := make([]byte, frameHeader, 64)
	hb = appendHeader(hb, segmentHeader{Daemon: l.cfg.Daemon, Shard: int32(l.cfg.Shard), Created: now.UnixMicro()})
	sealFrame(hb, 0)
	if _, err := f.Write(hb); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("write delivery log segment header: %w", err)
	}
	l.f, l.id, l.nextID, l.size, l.opened = f, id, id+1, int64(len(hb)), now
	l.disk += int64(len(hb))
	return nil
}

func (l *Log) sync() error {
	l.lastSync = l.cfg.Now()
	if l.f == nil || !l.dirty {
		return nil
	}
	l.dirty = false
	if err := l.f.Sync(); err != nil {
		l.cfg.Logger.Error("sync delivery log", "error", err)
		return fmt.Errorf("sync delivery log: %w", err)
	}
	return nil
}

// rotate syncs, closes and seals the open segment (whatever the fsync
// policy: a sealed segment is complete on disk before anyone exports it).
func (l *Log) rotate() {
	if l.f == nil {
		return
	}
	if err := l.f.Sync(); err != nil {
		l.cfg.Logger.Error("sync delivery log segment", "error", err)
	}
	_ = l.f.Close()
	l.f, l.dirty = nil, false
	from := filepath.Join(l.cfg.Dir, segmentName(l.id, suffixOpen))
	if err := os.Rename(from, filepath.Join(l.cfg.Dir, segmentName(l.id, suffixSeg))); err != nil {
		l.cfg.Logger.Error("seal delivery log segment (the next start seals it)", "error", err)
	}
	syncDir(l.cfg.Dir)
	l.m.segments.Inc()
}

// prune removes the oldest exported segments until need more bytes fit.
func (l *Log) prune(need int64) {
	segs, err := ListSegments(l.cfg.Dir)
	if err != nil {
		return
	}
	var disk int64
	for _, s := range segs {
		disk += s.Size
	}
	if l.f != nil {
		// The open segment's size on disk may lag what was written; count ours.
		for _, s := range segs {
			if s.ID == l.id {
				disk += l.size - s.Size
			}
		}
	}
	for _, s := range segs {
		if disk+need <= l.cfg.MaxDisk {
			break
		}
		if s.State != "exported" {
			continue
		}
		if err := os.Remove(s.Path); err == nil {
			disk -= s.Size
		}
	}
	l.disk = disk
	l.m.disk.Set(float64(disk))
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Store follows a published shard path. New work takes the newest generation
// with Acquire; work already running keeps the Reader it acquired, whose
// mapping stays valid until its last Release, even after the Store moved on.
type Store struct {
	path   string
	logger *slog.Logger
	after  func(time.Duration) <-chan time.Time

	mu      sync.Mutex
	cur     *Reader
	curID   fileID
	closed  bool
	lastErr error
	// truncLogged is the generation whose truncation was logged (Refresh
	// runs on one goroutine).
	truncLogged *Reader

	// warm: verify every block of a generation before lookups need it
	// (WithWarmUp). The first generation warms in the background (Open
	// stays O(1)); later ones warm before they are swapped in.
	warm       bool
	warmed     chan struct{} // closed when the first generation's warm-up ends
	stopWarm   context.CancelFunc
	warmReport WarmReport
	// curWarm is the warm-up report of the generation in service, once
	// its warm-up finished (s.mu).
	curWarm *WarmReport
}

// fileID identifies one published file: an atomic rename changes the inode.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) StoreOption { return func(s *Store) { s.logger = l } }

// WithAfter replaces time.After in Run, so tests drive polling by hand.
func WithAfter(after func(time.Duration) <-chan time.Time) StoreOption {
	return func(s *Store) { s.after = after }
}

// WithWarmUp makes the Store verify every block of each generation ahead
// of use (Reader.Warm): the generation found at open in the background, each
// new one before Refresh swaps it in, while the previous one serves. Lookups
// then never pay a block's first-visit verification, which right after a
// start or a swap is most of a trigger's latency.
func WithWarmUp() StoreOption { return func(s *Store) { s.warm = true } }

// OpenStore maps the generation currently published at path.
func OpenStore(path string, opts ...StoreOption) (*Store, error) {
	s := &Store{path: path, logger: slog.New(slog.DiscardHandler), after: time.After, warmed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	id, err := statID(path)
	if err != nil {
		return nil, fmt.Errorf("open shard store: %w", err)
	}
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	if !r.Leased() && r.Size() > 0 {
		s.logger.Warn("no read lease on the shard file: a truncation in place could crash the daemon before it is noticed; run as the file's owner or grant CAP_LEASE (docs/operations.md)", "path", path)
	}
	s.cur, s.curID = r, id
	if !s.warm {
		close(s.warmed)
		return s, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWarm = cancel
	r.Acquire() // the warm-up's own reference: Close may drop the store's meanwhile
	go func() {
		defer close(s.warmed)
		defer r.Release()
		rep, err := s.warmUp(ctx, r)
		s.mu.Lock()
		s.warmReport = rep
		if err == nil && s.cur == r && s.curWarm == nil {
			s.curWarm = &rep
		}
		s.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.logger.Error("warm shard generation", "path", path, "generation", r.Generation(), "err", err)
		}
	}()
	return s, nil
}

// warmUp warms r and logs what it found.
func (s *Store) warmUp(ctx context.Context, r *Reader) (WarmReport, error) {
	rep, err := r.Warm(ctx)
	if err != nil {
		return rep, err
	}
	if rep.Bad > 0 {
		s.logger.Error("shard generation has corrupt blocks: their rows are skipped (notifyd shard inspect names them)",
			"path", s.path, "generation", r.Generation(), "bad_blocks", rep.Bad, "blocks", rep.Blocks)
	}
	s.logger.Info("shard generation warmed", "path", s.path, "generation", r.Generation(),
		"blocks", rep.Blocks, "took", rep.Took.Round(time.Millisecond).String())
	return rep, nil
}

// Warmed is the warm-up report of the generation in service, once its
// warm-up has finished (never without WithWarmUp).
func (s *Store) Warmed() (WarmReport, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.curWarm == nil {
		return WarmReport{}, false
	}
	return *s.curWarm, true
}

// WaitWarm waits until the generation found at open is warm (WithWarmUp;
// at once without it) or ctx ends, and returns what the warm-up did.
// Generations swapped in later are warm before they serve.
func (s *Store) WaitWarm(ctx context.Context) (WarmReport, error) {
	select {
	case <-s.warmed:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.warmReport, nil
	case <-ctx.Done():
		return WarmReport{}, fmt.Errorf("wait for shard warm-up: %w", ctx.Err())
	}
}

// Acquire pins the newest generation. The caller must Release it.
func (s *Store) Acquire() (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("acquire shard: store closed")
	}
	if err := s.cur.Check(); err != nil {
		return nil, fmt.Errorf("acquire shard: %w", err)
	}
	s.cur.Acquire() // cannot fail: the store holds a reference
	return s.cur, nil
}

// Refresh checks the published path once and swaps to a new generation if
// the file changed. It reports whether it swapped. A new file that fails to
// open is reported and the current generation stays in service.
func (s *Store) Refresh(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("refresh shard: %w", err)
	}
	s.mu.Lock()
	closed, cur := s.closed, s.cur
	s.mu.Unlock()
	if !closed {
		// A truncation under the mapping is fenced here, at the poll,
		// even when nothing acquires (see fence.go).
		if err := cur.Check(); err != nil && s.truncLogged != cur {
			s.truncLogged = cur
			s.logger.Error("shard generation in service was truncated", "path", s.path, "err", err)
		}
	}
	id, err := statID(s.path)
	if err != nil {
		return false, fmt.Errorf("refresh shard: %w", err)
	}
	s.mu.Lock()
	same := id == s.curID || s.closed
	s.mu.Unlock()
	if same {
		return false, nil
	}
	r, err := Open(s.path)
	if err != nil {
		return false, fmt.Errorf("refresh shard: %w", err)
	}
	var warmed *WarmReport
	if s.warm {
		rep, err := s.warmUp(ctx, r)
		if err != nil {
			r.Release()
			return false, fmt.Errorf("refresh shard: %w", err)
		}
		warmed = &rep
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.Release()
		return false, nil
	}
	old := s.cur
	s.cur, s.curID, s.curWarm = r, id, warmed
	s.mu.Unlock()
	s.logger.Info("shard generation swapped", "path", s.path,
		"old_generation", old.Generation(), "new_generation", r.Generation(), "rows", r.Rows())
	if r.Generation() <= old.Generation() {
		s.logger.Warn("shard generation did not increase", "path", s.path,
			"old_generation", old.Generation(), "new_generation", r.Generation())
	}
	return true, old.Release()
}

// Run polls the published path every interval until ctx ends. Errors are
// logged once per distinct message so a bad publication does not flood logs.
func (s *Store) Run(ctx context.Context, interval time.Duration) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.after(interval):
		}
		_, err := s.Refresh(ctx)
		if err != nil && ctx.Err() == nil && (s.lastErr == nil || s.lastErr.Error() != err.Error()) {
			s.logger.Error("shard refresh failed; keeping current generation", "path", s.path, "err", err)
		}
		s.lastErr = err
	}
}

// Close drops the store's reference. Readers still acquired stay mapped
// until they are released.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stopWarm != nil {
		s.stopWarm()
	}
	return s.cur.Release()
}

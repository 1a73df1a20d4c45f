package shard

import "fmt"

// sentinel is a constant error value.
type sentinel string

func (e sentinel) Error() string { return string(e) }

const (
	// ErrCorrupt matches every *CorruptError with errors.Is.
	ErrCorrupt = sentinel("shard corrupt")
	// ErrNoSegment is returned (wrapped) for a segment name a generation lacks.
	ErrNoSegment = sentinel("no such segment")
	// ErrUnsupportedVersion is returned (wrapped) by Open for a file written
	// in another format version. The file is intact; rebuild it.
	ErrUnsupportedVersion = sentinel("unsupported shard format version")
	// ErrNotInShard is returned (wrapped) by Writer.Add for a profile whose
	// user key the writer's ring assigns to another shard.
	ErrNotInShard = sentinel("user belongs to another shard")
)

// CorruptError says which part of which file failed a check and which rows
// it takes down. Rows outside the range keep working.
type CorruptError struct {
	Path    string
	Section string // "header", "section table", "keys", "rows", "strings", ...
	Block   int64  // -1 when the whole section is affected
	// Rows is the inclusive row range affected; HasRows is false when the
	// damage is not tied to rows (e.g. a segment's bitmap).
	FirstRow, LastRow uint64
	HasRows           bool
	Segment           string
	Reason            string
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("shard %s: %s", e.Path, e.Section)
	if e.Segment != "" {
		s += fmt.Sprintf(" (segment %q)", e.Segment)
	}
	if e.Block >= 0 {
		s += fmt.Sprintf(" block %d", e.Block)
	}
	if e.HasRows {
		s += fmt.Sprintf(" (rows %d-%d)", e.FirstRow, e.LastRow)
	}
	return s + ": " + e.Reason
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func (r *Reader) corrupt(section string, format string, args ...any) *CorruptError {
	return &CorruptError{Path: r.path, Section: section, Block: -1, Reason: fmt.Sprintf(format, args...)}
}

package shard

import (
	"context"
	"encoding/binary"
	"fmt"
)

// VerifyReport is the outcome of checking every checksum of a generation.
type VerifyReport struct {
	Sections int
	Blocks   int
	Segments int
	// Problems lists every failure found (each a *CorruptError, or the
	// context's error); empty means the file is intact.
	Problems []error
}

// OK reports whether no problem was found.
func (v VerifyReport) OK() bool { return len(v.Problems) == 0 }

// Verify checks every section checksum, every block (with its records),
// global key order, and every segment bitmap. It keeps going after a failure
// so that the report lists all damage. Blocks that pass are remembered as
// verified for this mapping.
func (r *Reader) Verify(ctx context.Context) VerifyReport {
	var rep VerifyReport
	add := func(err error) {
		if err != nil {
			rep.Problems = append(rep.Problems, err)
		}
	}
	for i, e := range r.sections {
		rep.Sections++
		if got := crc(r.section(e)); got != e.crc {
			add(&CorruptError{Path: r.path, Section: kindName(e.kind), Block: -1,
				Reason: fmt.Sprintf("section %d checksum mismatch (stored %08x, computed %08x)", i, e.crc, got)})
		}
	}
	var prev uint64
	havePrev := false
	for b := uint64(0); b < r.keyStates.n; b++ {
		if err := ctx.Err(); err != nil {
			add(fmt.Errorf("verify %s: %w", r.path, err))
			return rep
		}
		rep.Blocks++
		if err := r.keyBlock(b); err != nil {
			add(err)
			havePrev = false
			continue
		}
		first, last := r.rowRangeOfBlock(b)
		if binaryKey(r.fences, b) != binaryKey(r.keys, first) {
			add(&CorruptError{Path: r.path, Section: "fences", Block: int64(b), FirstRow: first, LastRow: last, HasRows: true,
				Reason: "fence disagrees with the block's first key"})
		}
		if havePrev && binaryKey(r.keys, first) < prev {
			add(&CorruptError{Path: r.path, Section: "keys", Block: int64(b), FirstRow: first, LastRow: last, HasRows: true,
				Reason: "first key is lower than the previous block's last key"})
		}
		prev, havePrev = binaryKey(r.keys, last), true
	}
	for _, t := range []*varTable{&r.strTable, &r.rowTable} {
		for b := uint64(0); b < t.nb; b++ {
			if err := ctx.Err(); err != nil {
				add(fmt.Errorf("verify %s: %w", r.path, err))
				return rep
			}
			rep.Blocks++
			if t == &r.rowTable {
				rep.Blocks++ // its push block, verified with it (and reported through it)
			}
			add(r.checkBlock(t, b))
		}
	}
	for i := range r.segments {
		rep.Segments++
		_, err := r.Segment(r.segments[i].name)
		add(err)
	}
	return rep
}

func binaryKey(keys []byte, i uint64) uint64 { return binary.LittleEndian.Uint64(keys[i*8:]) }

package shard

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"
)

type segment struct {
	name    string
	bitmap  []byte
	members uint64
	crc     uint32

	once sync.Once
	seg  *Segment
	err  error
}

// SegmentInfo names a segment and its member count (from the directory,
// without touching the bitmap).
type SegmentInfo struct {
	Name    string
	Members uint64
}

func (r *Reader) initSegments(dir, bitmaps sectionEntry) error {
	sec := r.section(dir)
	if got := crc(sec); got != dir.crc {
		return r.corrupt("segments", "checksum mismatch (stored %08x, computed %08x)", dir.crc, got)
	}
	if dir.count > 1<<20 || dir.count*32 > uint64(len(sec)) {
		return r.corrupt("segments", "%d segments do not fit in %d bytes", dir.count, len(sec))
	}
	pos := dir.count * 32
	r.segments = make([]segment, dir.count)
	r.segIndex = make(map[string]int, dir.count)
	for i := range dir.count {
		e := sec[i*32:]
		off, n, card := binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(e[8:]), binary.LittleEndian.Uint64(e[16:])
		nameLen := uint64(binary.LittleEndian.Uint32(e[28:]))
		if nameLen == 0 || nameLen > maxNameLen || nameLen > uint64(len(sec))-pos {
			return r.corrupt("segments", "segment %d: bad name length %d", i, nameLen)
		}
		name := bstr(sec[pos : pos+nameLen])
		pos += nameLen
		if err := checkName(name); err != nil {
			return r.corrupt("segments", "segment %d: name %v", i, err)
		}
		if off%8 != 0 || off < bitmaps.offset || n > bitmaps.length || off-bitmaps.offset > bitmaps.length-n {
			return r.corrupt("segments", "segment %q: bitmap at %d length %d outside the bitmaps section", name, off, n)
		}
		if card > r.rows {
			return r.corrupt("segments", "segment %q: %d members but %d rows", name, card, r.rows)
		}
		if _, dup := r.segIndex[name]; dup {
			return r.corrupt("segments", "segment %q listed twice", name)
		}
		r.segIndex[name] = int(i)
		r.segments[i] = segment{name: name, bitmap: r.data[off : off+n], members: card, crc: binary.LittleEndian.Uint32(e[24:])}
	}
	return nil
}

// Segments lists the segments with their member counts, in file order.
func (r *Reader) Segments() []SegmentInfo {
	out := make([]SegmentInfo, len(r.segments))
	for i := range r.segments {
		out[i] = SegmentInfo{Name: r.segments[i].name, Members: r.segments[i].members}
	}
	return out
}

// Segment returns a segment, verifying its bitmap on first use. A corrupt
// bitmap yields a *CorruptError naming the segment; other segments work.
func (r *Reader) Segment(name string) (*Segment, error) {
	i, ok := r.segIndex[name]
	if !ok {
		return nil, fmt.Errorf("open segment %q in %s: %w", name, r.path, ErrNoSegment)
	}
	s := &r.segments[i]
	s.once.Do(func() { s.seg, s.err = r.loadSegment(s) })
	return s.seg, s.err
}

func (r *Reader) loadSegment(s *segment) (seg *Segment, err error) {
	defer r.guardFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	bad := func(format string, args ...any) error {
		return &CorruptError{Path: r.path, Section: "bitmaps", Block: -1, Segment: s.name,
			Reason: fmt.Sprintf(format, args...) + "; all members of the segment are affected"}
	}
	if got := crc(s.bitmap); got != s.crc {
		return nil, bad("checksum mismatch (stored %08x, computed %08x)", s.crc, got)
	}
	// roaring trusts its input; a file that passes the CRC but was written
	// by a buggy or hostile producer must still not take the daemon down.
	defer func() {
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); fault {
				panic(p) // a truncated file, for guardFault
			}
			seg, err = nil, bad("malformed roaring bitmap: %v", p)
		}
	}()
	bm := roaring.New()
	n, err := bm.FromBuffer(s.bitmap)
	if err != nil {
		return nil, bad("read roaring bitmap: %v", err)
	}
	if uint64(n) != uint64(len(s.bitmap)) {
		return nil, bad("roaring bitmap is %d bytes, directory says %d", n, len(s.bitmap))
	}
	if err := bm.Validate(); err != nil {
		return nil, bad("invalid roaring bitmap: %v", err)
	}
	if c := bm.GetCardinality(); c != s.members {
		return nil, bad("bitmap holds %d members, directory says %d", c, s.members)
	}
	if !bm.IsEmpty() && uint64(bm.Maximum()) >= r.rows {
		return nil, bad("member row %d out of range (%d rows)", bm.Maximum(), r.rows)
	}
	return &Segment{r: r, name: s.name, bm: bm}, nil
}

// Segment is a verified segment of one generation: a roaring bitmap of row
// indices read in place from the mapping.
type Segment struct {
	r    *Reader
	name string
	bm   *roaring.Bitmap
}

// Name returns the segment's name.
func (s *Segment) Name() string { return s.name }

// Members returns the member count.
func (s *Segment) Members() uint64 { return s.bm.GetCardinality() }

// Contains reports whether row i is a member.
func (s *Segment) Contains(i uint32) bool { return s.bm.Contains(i) }

// Iter iterates every member in row (= user key) order.
func (s *Segment) Iter() *SegmentIter {
	return &SegmentIter{it: s.bm.ManyIterator()}
}

// IterAfterKey iterates the members whose user key is greater than k: the
// resume point of a campaign whose checkpoint is k. The start row is found by
// binary search; members before it are skipped without being returned (the
// roaring many-iterator cannot seek, so skipping costs about 1 ns per skipped
// member, once).
func (s *Segment) IterAfterKey(k uint64) (*SegmentIter, error) {
	start, err := s.r.FirstRowAfter(k)
	if err != nil {
		return nil, fmt.Errorf("resume segment %q after key %d: %w", s.name, k, err)
	}
	it := &SegmentIter{it: s.bm.ManyIterator()}
	if start > 0 {
		skip := s.bm.Rank(start - 1)
		var scratch [1024]uint32
		for skip > 0 {
			n := it.it.NextMany(scratch[:min(skip, uint64(len(scratch)))])
			if n == 0 {
				break
			}
			skip -= uint64(n)
		}
	}
	return it, nil
}

// SegmentIter yields row indices in ascending order, in batches.
type SegmentIter struct {
	it roaring.ManyIntIterable
}

// Next fills buf with the next row indices and returns how many it wrote;
// 0 means the segment is exhausted. It does not allocate.
func (it *SegmentIter) Next(buf []uint32) int { return it.it.NextMany(buf) }

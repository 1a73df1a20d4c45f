package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"unicode/utf8"
	"unsafe"
)

const (
	blockUnchecked uint32 = iota
	blockOK
	blockBad
)

// blockStates records per block whether its checksum was verified. It is
// allocated on first use so that Open stays O(1) in the row count.
type blockStates struct {
	once sync.Once
	n    uint64
	s    []atomic.Uint32
}

func (b *blockStates) get() []atomic.Uint32 {
	b.once.Do(b.init)
	return b.s
}

func (b *blockStates) init() { b.s = make([]atomic.Uint32, b.n) }

// blockView is a verified block, decoded once so that reading an item is
// two offset loads and a string header.
type blockView struct {
	blk unsafe.Pointer // the block: u32 offsets[k+1], then the items
	hdr uintptr        // 4*(k+1), the offset of the first item byte
}

// Reader is one mapped generation of a shard file. It is safe for concurrent
// use. It holds a reference count: Open returns it with one reference, Acquire
// adds one, Release drops one, and the mapping is unmapped when the count
// reaches zero. Every string obtained from it (or from its Rows) points into
// the mapping and must not be used after the last Release.
type Reader struct {
	path       string
	data       []byte
	refs       atomic.Int64
	generation uint64
	rows       uint64
	blockRows  uint64
	blockShift uint // blockRows is a power of two: row/blockRows is a shift
	sections   []sectionEntry

	keyCRCs   []byte
	keys      []byte
	keyStates blockStates

	fences     []byte
	fenceCRC   uint32
	fenceOnce  sync.Once
	fencesGood bool

	rowTable  varTable
	pushTable varTable // verified with the rows block of the same rows
	strTable  varTable

	attrNames []string
	attrIndex map[string]AttrID

	segments  []segment
	segIndex  map[string]int
	ring      RingInfo
	fence     fence
	unmapOnce sync.Once
	unmapErr  error
}

// varTable is a blocked table of variable-length items (rows or strings).
type varTable struct {
	mu         sync.Mutex // serialises first-use verification (writes views)
	name       string
	sec        []byte
	count      uint64
	blockItems uint64
	shift      uint
	dir        []byte
	nb         uint64
	// blks is allocated on first use so that Open stays O(1); an atomic
	// pointer (not a sync.Once) keeps the row read path small enough to
	// inline.
	blks atomic.Pointer[[]tableBlock]
}

// tableBlock is one block's verification state and, once verified, its view
// (written under the table's mutex before the state turns OK). Keeping both
// in one element puts a row read's bookkeeping in a single cache line.
type tableBlock struct {
	state atomic.Uint32
	view  blockView
}

func (t *varTable) blocks() []tableBlock {
	if p := t.blks.Load(); p != nil {
		return *p
	}
	blks := make([]tableBlock, t.nb)
	if !t.blks.CompareAndSwap(nil, &blks) {
		return *t.blks.Load()
	}
	return blks
}

// Open maps the shard at path and validates its header and section table.
// It reads a fixed number of bytes whatever the row count; blocks are
// verified on first use. The caller owns one reference and must Release it.
func Open(path string) (*Reader, error) {
	// O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer,
	// forever, and with it the refresher; it changes nothing for a regular
	// file. The type is judged on the opened descriptor, so a file swapped
	// in after a stat cannot slip past.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open shard: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open shard: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open shard %s: not a regular file (%s); the store publishes a regular file by rename", path, st.Mode().Type())
	}
	data, err := mapFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r, err := newReader(path, data)
	if err != nil {
		unmap(data)
		f.Close()
		return nil, err
	}
	r.arm(f) // the file stays open for the lease and Check; see fence.go
	return r, nil
}

// wholeDictionaryBytes bounds the dictionary (strings section) Open
// verifies whole; a larger one is verified block by block on first use.
const wholeDictionaryBytes = 4 << 20

// newReader validates data (a mapping, or any byte slice in tests and fuzzing).
func newReader(path string, data []byte) (*Reader, error) {
	return newReaderDict(path, data, wholeDictionaryBytes)
}

// newReaderDict is newReader verifying a dictionary of up to wholeDict
// bytes whole at open (tests pass 0 to reach the per-block path).
func newReaderDict(path string, data []byte, wholeDict uint64) (*Reader, error) {
	r := &Reader{path: path, data: data}
	r.refs.Store(1)
	size := uint64(len(data))
	if size < headerSize {
		return nil, r.corrupt("header", "truncated: file has %d bytes, the header needs %d", size, headerSize)
	}
	if string(data[:8]) != magic {
		return nil, r.corrupt("header", "bad magic %q (not a notifyd shard)", data[:8])
	}
	h := decodeHeader(data)
	if got := crc(data[:60]); got != h.headerCRC {
		return nil, r.corrupt("header", "checksum mismatch (stored %08x, computed %08x)", h.headerCRC, got)
	}
	if h.version < minFormatVersion || h.version > formatVersion {
		// Not corruption: a file from an older (or newer) writer. Shards are
		// derived data, so the remedy is to rebuild it, not to repair it.
		return nil, fmt.Errorf("open shard %s: format version %d is not supported (this build reads versions %d and %d; rebuild the shard with this build, e.g. notifyd shard build): %w",
			path, h.version, minFormatVersion, formatVersion, ErrUnsupportedVersion)
	}
	if h.fileLength != size {
		return nil, r.corrupt("header", "truncated or extended: header says %d bytes, file has %d", h.fileLength, size)
	}
	if !validBlockItems(uint64(h.blockRows)) {
		return nil, r.corrupt("header", "block rows %d is not a power of two in 1..%d", h.blockRows, maxBlockRows)
	}
	if h.rows > 1<<32-1 {
		return nil, r.corrupt("header", "row count %d exceeds 2^32-1", h.rows)
	}
	if h.sections == 0 || h.sections > 64 || h.tableOffset != headerSize ||
		headerSize+uint64(h.sections)*sectionEntrySize > size {
		return nil, r.corrupt("section table", "%d sections at offset %d do not fit in %d bytes", h.sections, h.tableOffset, size)
	}
	table := data[headerSize : headerSize+uint64(h.sections)*sectionEntrySize]
	if got := crc(table); got != h.tableCRC {
		return nil, r.corrupt("section table", "checksum mismatch (stored %08x, computed %08x)", h.tableCRC, got)
	}
	r.generation, r.rows, r.blockRows = h.generation, h.rows, uint64(h.blockRows)
	r.blockShift = uint(bits.TrailingZeros64(r.blockRows))
	byKind := map[uint32]sectionEntry{}
	for i := range h.sections {
		e := decodeSection(table[i*sectionEntrySize:])
		name := kindName(e.kind)
		if e.offset%8 != 0 || e.offset < uint64(len(table))+headerSize || e.length > size || e.offset > size-e.length {
			return nil, r.corrupt(name, "section %d at offset %d length %d out of range (file %d bytes, 8-byte aligned)", i, e.offset, e.length, size)
		}
		if _, dup := byKind[e.kind]; dup {
			return nil, r.corrupt("section table", "section kind %d appears twice", e.kind)
		}
		byKind[e.kind] = e
		r.sections = append(r.sections, e)
	}
	for _, k := range []uint32{kindKeys, kindFences, kindRows, kindPush, kindStrings, kindAttrs, kindBitmaps, kindSegments} {
		if _, ok := byKind[k]; !ok {
			return nil, r.corrupt("section table", "missing %s section", kindName(k))
		}
	}
	if err := r.initKeys(byKind[kindKeys]); err != nil {
		return nil, err
	}
	fe := byKind[kindFences]
	if fe.count != r.keyStates.n || fe.length != 8*fe.count {
		return nil, r.corrupt("fences", "%d fences in %d bytes, want %d", fe.count, fe.length, r.keyStates.n)
	}
	r.fences, r.fenceCRC = r.section(fe), fe.crc
	if err := r.initVarTable(&r.rowTable, byKind[kindRows], r.rows, r.blockRows); err != nil {
		return nil, err
	}
	if err := r.initVarTable(&r.pushTable, byKind[kindPush], r.rows, r.blockRows); err != nil {
		return nil, err
	}
	st := byKind[kindStrings]
	if !validBlockItems(uint64(st.blockItems)) || st.count > 1<<32-1 {
		return nil, r.corrupt("strings", "block items %d or count %d out of range", st.blockItems, st.count)
	}
	if err := r.initVarTable(&r.strTable, st, st.count, uint64(st.blockItems)); err != nil {
		return nil, err
	}
	if st.length <= wholeDict {
		// A small dictionary is shared by most rows (every locale and time
		// zone string sits in its first block): one flipped bit in it would
		// take nearly every row down at first use. Verified whole here, such
		// a file is refused at open with the block named, and the refresher
		// keeps the previous generation in service. The bound keeps Open's
		// cost fixed (about a millisecond of CRC at most).
		for b := range r.strTable.nb {
			if err := r.checkBlock(&r.strTable, b); err != nil {
				return nil, fmt.Errorf("open shard: the dictionary is verified whole at open: %w", err)
			}
		}
	}
	if err := r.initAttrs(byKind[kindAttrs]); err != nil {
		return nil, err
	}
	if err := r.initSegments(byKind[kindSegments], byKind[kindBitmaps]); err != nil {
		return nil, err
	}
	// Version 2 predates the ring: such a file is the whole population,
	// shard 0 of 1. Settling it here keeps the row path free of version
	// checks.
	r.ring = singleShard
	if h.version >= 3 {
		e, ok := byKind[kindRing]
		if !ok {
			return nil, r.corrupt("section table", "missing ring section (required from format version 3)")
		}
		if got := crc(r.section(e)); got != e.crc {
			return nil, r.corrupt("ring", "checksum mismatch (stored %08x, computed %08x)", e.crc, got)
		}
		ring, err := decodeRing(r.section(e))
		if err != nil {
			return nil, r.corrupt("ring", "%v", err)
		}
		r.ring = ring
	}
	return r, nil
}

// Ring says which shard of which ring this generation holds. Every row's key
// is owned by that shard (checked with each keys block).
func (r *Reader) Ring() RingInfo { return r.ring }

func (r *Reader) section(e sectionEntry) []byte { return r.data[e.offset : e.offset+e.length] }

func (r *Reader) initKeys(e sectionEntry) error {
	if e.count != r.rows || uint64(e.blockItems) != r.blockRows {
		return r.corrupt("keys", "count %d / block items %d disagree with header (%d rows, %d per block)", e.count, e.blockItems, r.rows, r.blockRows)
	}
	nb := (r.rows + r.blockRows - 1) / r.blockRows
	sec := r.section(e)
	if e.aux%8 != 0 || e.aux < 4*nb || e.aux > e.length || (e.length-e.aux)/8 < r.rows {
		return r.corrupt("keys", "layout out of range (aux %d, length %d, %d blocks)", e.aux, e.length, nb)
	}
	r.keyCRCs = sec[:4*nb]
	r.keys = sec[e.aux : e.aux+8*r.rows]
	r.keyStates.n = nb
	return nil
}

func (r *Reader) initVarTable(t *varTable, e sectionEntry, count, blockItems uint64) error {
	name := kindName(e.kind)
	if e.count != count || uint64(e.blockItems) != blockItems {
		return r.corrupt(name, "count %d / block items %d disagree with header", e.count, e.blockItems)
	}
	nb := (count + blockItems - 1) / blockItems
	if e.aux > e.length || (e.length-e.aux)/16 < nb {
		return r.corrupt(name, "block directory out of range (at %d, %d blocks, section %d bytes)", e.aux, nb, e.length)
	}
	*t = varTable{name: name, sec: r.section(e), count: count, blockItems: blockItems, shift: uint(bits.TrailingZeros64(blockItems))}
	t.dir = t.sec[e.aux : e.aux+16*nb]
	t.nb = nb
	return nil
}

func validBlockItems(n uint64) bool { return n > 0 && n <= maxBlockRows && n&(n-1) == 0 }

// parseNames reads u32 count, count u32 lengths, then the bytes, returning
// zero-copy strings and the offset after the names.
func parseNames(b []byte, count uint64) ([]string, uint64, bool) {
	if uint64(len(b)) < 4 || uint64(binary.LittleEndian.Uint32(b)) != count || (uint64(len(b))-4)/4 < count {
		return nil, 0, false
	}
	names := make([]string, count)
	pos := 4 + 4*count
	for i := range count {
		n := uint64(binary.LittleEndian.Uint32(b[4+4*i:]))
		if n == 0 || n > maxNameLen || n > uint64(len(b))-pos {
			return nil, 0, false
		}
		names[i] = bstr(b[pos : pos+n])
		pos += n
	}
	return names, pos, true
}

func (r *Reader) initAttrs(e sectionEntry) error {
	sec := r.section(e)
	if got := crc(sec); got != e.crc {
		return r.corrupt("attrs", "checksum mismatch (stored %08x, computed %08x)", e.crc, got)
	}
	if e.count > maxAttributes {
		return r.corrupt("attrs", "%d attributes, limit %d", e.count, maxAttributes)
	}
	names, _, ok := parseNames(sec, e.count)
	if !ok {
		return r.corrupt("attrs", "malformed name list")
	}
	r.attrNames = names
	r.attrIndex = make(map[string]AttrID, len(names))
	for i, n := range names {
		if err := checkName(n); err != nil {
			return r.corrupt("attrs", "attribute %d: name %v", i, err)
		}
		if _, dup := r.attrIndex[n]; dup {
			return r.corrupt("attrs", "attribute %q listed twice", n)
		}
		r.attrIndex[n] = AttrID(i)
	}
	return nil
}

// AttrID identifies an attribute within one generation. Resolve it once per
// generation with Reader.AttrID and read rows by id in hot loops.
type AttrID uint32

// Path returns the file this generation was mapped from.
func (r *Reader) Path() string { return r.path }

// Generation returns the generation number stored in the header.
func (r *Reader) Generation() uint64 { return r.generation }

// Rows returns the number of rows.
func (r *Reader) Rows() uint64 { return r.rows }

// BlockRows returns the number of rows per checksummed block.
func (r *Reader) BlockRows() uint64 { return r.blockRows }

// Size returns the file size in bytes.
func (r *Reader) Size() int { return len(r.data) }

// AttrID resolves an attribute name for this generation.
func (r *Reader) AttrID(name string) (AttrID, bool) {
	id, ok := r.attrIndex[name]
	return id, ok
}

// AttrNames returns the attribute names by id. Do not modify the slice.
func (r *Reader) AttrNames() []string { return r.attrNames }

// Acquire adds a reference. It reports false when the generation was already
// released for good (its mapping is gone).
func (r *Reader) Acquire() bool {
	for {
		n := r.refs.Load()
		if n <= 0 {
			return false
		}
		if r.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release drops a reference and unmaps the file when none is left.
func (r *Reader) Release() error {
	n := r.refs.Add(-1)
	if n < 0 {
		return errors.New("release shard: more releases than acquisitions")
	}
	if n == 0 {
		r.unmapOnce.Do(func() {
			r.disarm()
			if r.data != nil {
				r.unmapErr = unmap(r.data)
			}
		})
		return r.unmapErr
	}
	return nil
}

// Close is Release, for io.Closer.
func (r *Reader) Close() error { return r.Release() }

// bstr makes a string that shares b's memory.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (r *Reader) rowRangeOfBlock(b uint64) (uint64, uint64) {
	first := b * r.blockRows
	return first, min(first+r.blockRows, r.rows) - 1
}

// keyBlock verifies keys block b if needed.
func (r *Reader) keyBlock(b uint64) error {
	st := &r.keyStates.get()[b]
	switch st.Load() {
	case blockOK:
		return nil
	case blockBad:
		return r.verifyKeyBlock(b)
	}
	err := r.verifyKeyBlock(b)
	if err == nil {
		st.Store(blockOK)
	} else {
		st.Store(blockBad)
	}
	return err
}

func (r *Reader) verifyKeyBlock(b uint64) (err error) {
	defer r.guardFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	first, last := r.rowRangeOfBlock(b)
	blk := r.keys[first*8 : (last+1)*8]
	bad := func(format string, args ...any) error {
		return &CorruptError{Path: r.path, Section: "keys", Block: int64(b), FirstRow: first, LastRow: last, HasRows: true, Reason: fmt.Sprintf(format, args...)}
	}
	if want, got := binary.LittleEndian.Uint32(r.keyCRCs[4*b:]), crc(blk); want != got {
		return bad("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	for i := 8; i < len(blk); i += 8 {
		if binary.LittleEndian.Uint64(blk[i:]) < binary.LittleEndian.Uint64(blk[i-8:]) {
			return bad("keys out of order at row %d", first+uint64(i/8))
		}
	}
	// A row of another shard would be served by two daemons: refuse it
	// with its block. Once per block per mapping, off the row path.
	if r.ring.Shards > 1 {
		for i := 0; i < len(blk); i += 8 {
			if k := binary.LittleEndian.Uint64(blk[i:]); !r.ring.Owns(k) {
				return bad("row %d (key %016x) belongs to shard %d, not to this file's %s", first+uint64(i/8), k, ShardOf(k, r.ring.Shards), r.ring)
			}
		}
	}
	return nil
}

// keyAt returns the user key of row i, verifying its block on first use.
func (r *Reader) keyAt(i uint64) (uint64, error) {
	if err := r.keyBlock(i >> r.blockShift); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(r.keys[i*8:]), nil
}

// FirstRowAfter returns the index of the first row whose key is greater than
// k (Rows() when there is none): where a campaign resumes after checkpoint k.
func (r *Reader) FirstRowAfter(k uint64) (_ uint32, err error) {
	defer r.guardFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if k == ^uint64(0) {
		return uint32(r.rows), nil
	}
	i, err := r.lowerBound(k + 1)
	return uint32(i), err
}

// lowerBound returns the first row with key >= k. With intact fences it
// reads only the one keys block the answer lies in.
func (r *Reader) lowerBound(k uint64) (uint64, error) {
	r.fenceOnce.Do(func() { r.fencesGood = crc(r.fences) == r.fenceCRC })
	lo, hi := uint64(0), r.rows
	if r.fencesGood && r.rows > 0 {
		// b = the last block whose first key is < k (or block 0). Keys are
		// uniform hashes, so k's position is predictable: start there.
		nb := r.keyStates.n
		fl := gallop(r.fences, nb, k, uint64(float64(k)/(1<<64)*float64(nb)))
		b := max(fl, 1) - 1
		lo, hi = b*r.blockRows, min((b+1)*r.blockRows, r.rows)
		if err := r.keyBlock(b); err != nil {
			// When the next block starts with k itself, the answer is there
			// unless a rare collision run spans the boundary: serve it
			// rather than fail a row that is intact.
			if fl < r.keyStates.n && binary.LittleEndian.Uint64(r.fences[fl*8:]) == k {
				return fl * r.blockRows, nil
			}
			return 0, err
		}
		if binary.LittleEndian.Uint64(r.keys[lo*8:]) != binary.LittleEndian.Uint64(r.fences[b*8:]) {
			return 0, &CorruptError{Path: r.path, Section: "fences", Block: int64(b), FirstRow: lo, LastRow: hi - 1, HasRows: true,
				Reason: "fence disagrees with the block's first key"}
		}
		f0, f1 := binary.LittleEndian.Uint64(r.fences[b*8:]), uint64(math.MaxUint64)
		if b+1 < nb {
			f1 = binary.LittleEndian.Uint64(r.fences[(b+1)*8:])
		}
		n := hi - lo
		guess := uint64(0)
		if k > f0 && f1 > f0 {
			guess = uint64(float64(k-f0) / float64(f1-f0) * float64(n))
		}
		return lo + gallop(r.keys[lo*8:hi*8], n, k, guess), nil
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		v, err := r.keyAt(mid)
		if err != nil {
			return 0, err
		}
		if v < k {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// gallop returns the first index i in [0, n) with u64 keys[i] >= k (n if
// none), starting from a guess and doubling its steps away from it. With a
// good guess it touches a few neighbouring cache lines instead of the
// log2(n) scattered probes of a binary search, which matters when every
// probe is a cache and TLB miss in a multi-gigabyte mapping.
func gallop(keys []byte, n, k, guess uint64) uint64 {
	if n == 0 {
		return 0
	}
	key := func(i uint64) uint64 { return binary.LittleEndian.Uint64(keys[i*8:]) }
	g := min(guess, n-1)
	var lo, hi uint64
	if key(g) < k {
		lo, hi = g+1, n
		for step := uint64(1); ; step *= 2 {
			p := g + step
			if p >= n {
				break
			}
			if key(p) >= k {
				hi = p
				break
			}
			lo = p + 1
		}
	} else {
		lo, hi = 0, g
		for step := uint64(1); ; step *= 2 {
			if step > g {
				break
			}
			p := g - step
			if key(p) < k {
				lo = p + 1
				break
			}
			hi = p
		}
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if key(mid) < k {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// Lookup finds the row of an external id. It returns ok=false when the id is
// absent or the blocks on its path are corrupt (Find tells which).
func (r *Reader) Lookup(id string) (Row, bool) {
	row, ok, _ := r.Find(id)
	return row, ok
}

// Find is Lookup with the error of a corrupt block on the search path.
// A point lookup reads unverified ground (fences, keys, the row): it runs
// with faults turned into errors (see fence.go).
func (r *Reader) Find(id string) (row Row, ok bool, err error) {
	defer r.guardFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return r.find(id)
}

func (r *Reader) find(id string) (Row, bool, error) {
	k := Key(id)
	i, err := r.lowerBound(k)
	if err != nil {
		return Row{}, false, err
	}
	// Equal keys are rare hash collisions; the writer orders them by id.
	for ; i < r.rows; i++ {
		v, err := r.keyAt(i)
		if err != nil {
			return Row{}, false, err
		}
		if v != k {
			break
		}
		row, err := r.Row(uint32(i))
		if err != nil {
			return Row{}, false, err
		}
		if row.ID() == id {
			return row, true, nil
		}
	}
	return Row{}, false, nil
}

// Row returns row i. The error is a *CorruptError when the row's block (or a
// dictionary block it references) failed verification.
//
// The path for a row of a verified block calls nothing in the common case:
// at one call per member it is much of what resolving a recipient costs.
func (r *Reader) Row(i uint32) (Row, error) {
	t := &r.rowTable
	if p := t.blks.Load(); p != nil && uint64(i) < r.rows {
		if blk := &(*p)[uint64(i)>>(t.shift&63)]; blk.state.Load() == blockOK {
			rec := blk.view.item(uint64(i) & (t.blockItems - 1))
			// attrsAt, with its common case (one-byte locale and time zone
			// references) written out: the compiler does not inline it.
			at := refsAt(rec)
			if rec[at+1] < 0x80 && rec[at] < 0x80 {
				at += 2
			} else {
				at = attrsAt(rec)
			}
			return Row{r: r, rec: rec, pos: uint64(i) | uint64(at)<<32}, nil
		}
	}
	return r.rowSlow(i)
}

// rowSlow is Row's first visit to a block (verification) and its errors.
func (r *Reader) rowSlow(i uint32) (Row, error) {
	if uint64(i) >= r.rows {
		return Row{}, fmt.Errorf("read row %d: out of range (%d rows)", i, r.rows)
	}
	rec, err := r.rowTable.item(r, uint64(i))
	if err != nil {
		return Row{}, err
	}
	return Row{r: r, rec: rec, pos: uint64(i) | uint64(attrsAt(rec))<<32}, nil
}

// push returns row i's push record. Its block was verified with the row's.
func (r *Reader) push(i uint32) string {
	t := &r.pushTable
	return (*t.blks.Load())[uint64(i)>>(t.shift&63)].view.item(uint64(i) & (t.blockItems - 1))
}

// item returns item i of a table, verifying its block on first use.
func (t *varTable) item(r *Reader, i uint64) (string, error) {
	b := i >> t.shift
	blk := &t.blocks()[b]
	if blk.state.Load() != blockOK {
		if err := r.checkBlock(t, b); err != nil {
			return "", err
		}
	}
	return blk.view.item(i & (t.blockItems - 1)), nil
}

// item returns item j of a verified block; callers pass j < k (the row or
// string index is in range). It reads without bounds checks: verifyBlock
// proved that the offsets start at 0, never decrease and end at the
// block's length, so every item lies inside the block, and checking that
// again on every read was about 15% of the instructions of resolving a
// member (measured with callgrind).
func (v *blockView) item(j uint64) string {
	o := (*[8]byte)(unsafe.Add(v.blk, 4*j))
	a, b := binary.LittleEndian.Uint32(o[:4]), binary.LittleEndian.Uint32(o[4:])
	if a == b {
		return "" // no pointer past the block's end, even for an empty last item
	}
	return unsafe.String((*byte)(unsafe.Add(v.blk, v.hdr+uintptr(a))), b-a)
}

// view decodes block b's layout from the directory (not yet verified).
func (t *varTable) view(b uint64) (blockView, bool) {
	ent := t.dir[b*16:]
	off, n := binary.LittleEndian.Uint64(ent), uint64(binary.LittleEndian.Uint32(ent[8:]))
	if off > uint64(len(t.sec)) || n > uint64(len(t.sec))-off {
		return blockView{}, false
	}
	k := min(t.blockItems, t.count-b*t.blockItems)
	hdr := 4 * (k + 1)
	if n < hdr {
		return blockView{}, false
	}
	return blockView{blk: unsafe.Pointer(&t.sec[off]), hdr: uintptr(hdr)}, true
}

// str returns dictionary string id. The caller has verified (through the
// row block that references it) that the id is in range and its block valid.
func (r *Reader) str(id uint64) string {
	t := &r.strTable
	return (*t.blks.Load())[id>>t.shift].view.item(id & (t.blockItems - 1))
}

// checkBlock verifies block b of t once; the outcome sticks for the mapping.
func (r *Reader) checkBlock(t *varTable, b uint64) error {
	st := &t.blocks()[b].state
	if st.Load() == blockOK {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch st.Load() {
	case blockOK:
		return nil
	case blockBad:
		return r.verifyBlock(t, b)
	}
	err := r.verifyBlock(t, b)
	if err == nil {
		st.Store(blockOK)
	} else {
		st.Store(blockBad)
	}
	return err
}

// verifyBlock checks block b and, when its layout is sound, records its view
// (t.mu held). Readers use the view only once the state is OK.
func (r *Reader) verifyBlock(t *varTable, b uint64) (err error) {
	defer r.guardFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	first := b * t.blockItems
	k := min(t.blockItems, t.count-first)
	bad := func(format string, args ...any) error {
		e := &CorruptError{Path: r.path, Section: t.name, Block: int64(b), Reason: fmt.Sprintf(format, args...)}
		if t == &r.rowTable || t == &r.pushTable {
			e.FirstRow, e.LastRow, e.HasRows = first, first+k-1, true
		} else {
			e.Reason = fmt.Sprintf("items %d-%d: %s", first, first+k-1, e.Reason)
		}
		return e
	}
	ent := t.dir[b*16:]
	off, n := binary.LittleEndian.Uint64(ent), uint64(binary.LittleEndian.Uint32(ent[8:]))
	if off > uint64(len(t.sec)) || n > uint64(len(t.sec))-off {
		return bad("block at %d length %d out of section range (%d bytes)", off, n, len(t.sec))
	}
	blk := t.sec[off : off+n]
	if want, got := binary.LittleEndian.Uint32(ent[12:]), crc(blk); want != got {
		return bad("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	hdr := 4 * (k + 1)
	if n < hdr || binary.LittleEndian.Uint32(blk) != 0 || uint64(binary.LittleEndian.Uint32(blk[4*k:])) != n-hdr {
		return bad("item offsets do not match block length")
	}
	for j := uint64(0); j < k; j++ {
		if binary.LittleEndian.Uint32(blk[4*j+4:]) < binary.LittleEndian.Uint32(blk[4*j:]) {
			return bad("item offsets decrease at item %d", first+j)
		}
	}
	v, _ := t.view(b)
	t.blocks()[b].view = v
	switch t {
	case &r.pushTable:
		for j := uint64(0); j < k; j++ {
			if err := checkPush(v.item(j)); err != nil {
				return bad("row %d: %v", first+j, err)
			}
		}
	case &r.rowTable:
		// A row is readable only with its push addresses: a corrupt push
		// block fails the same rows, with its own section named.
		if err := r.checkBlock(&r.pushTable, b); err != nil {
			return err
		}
		for j := uint64(0); j < k; j++ {
			if err := r.checkRecord(v.item(j), first+j); err != nil {
				return bad("row %d: %v", first+j, err)
			}
			// Equal keys (hash collisions) are ordered by id, strictly: an
			// equal id is a duplicate row that lookups could not tell apart.
			if j > 0 && r.keysEqual(first+j-1, first+j) {
				a, b := string(rowID(v.item(j-1))), string(rowID(v.item(j)))
				if a >= b {
					return bad("rows %d and %d: ids %q and %q share a key but are not in strictly increasing order (a duplicate id when equal)", first+j-1, first+j, truncateForError(a), truncateForError(b))
				}
			}
		}
	case &r.strTable:
		for j := uint64(0); j < k; j++ {
			if !utf8.ValidString(v.item(j)) {
				return bad("string %d is not valid UTF-8", first+j)
			}
		}
	}
	return nil
}

// keysEqual compares the keys of rows a and b, both in blocks checkRecord
// already verified.
func (r *Reader) keysEqual(a, b uint64) bool {
	return binary.LittleEndian.Uint64(r.keys[a*8:]) == binary.LittleEndian.Uint64(r.keys[b*8:])
}

// rowID is a checked row record's external id.
func rowID(rec string) string {
	at := recFixed + int(rec[recEmailLen])
	return rec[at : at+int(rec[recIDLen])+1]
}

// checkRecord walks a whole row record once, so that accessors can later read
// it without re-checking, and so that dictionary blocks it references are
// verified before any string of this row is handed out.
func (r *Reader) checkRecord(rec string, row uint64) error {
	if len(rec) < recFixed || len(rec) > maxRecordLen {
		return fmt.Errorf("record of %d bytes (want 4 .. 2^24-1)", len(rec))
	}
	c := rec[0]
	for s := 0; s < 8; s += 2 {
		if (c>>s)&3 == 3 {
			return errors.New("invalid consent value")
		}
	}
	i := refsAt(rec)
	if i > len(rec) {
		return errors.New("email, id and phone overrun the record")
	}
	// The fields' own invariants (spec, "Rows"): checked here, once per
	// block, so a buggy writer's row is refused rather than sent.
	at := recFixed + int(rec[recEmailLen])
	email, id := rec[recFixed:at], rec[at:at+int(rec[recIDLen])+1]
	phone := rec[at+len(id) : i]
	if email != "" {
		if err := checkText(email, 254); err != nil {
			return fmt.Errorf("email: %v", err)
		}
	}
	if phone != "" && !isE164(phone) {
		return fmt.Errorf("phone of %d bytes is not E.164 (+ then 2-15 digits; a phone_len past the phone overruns the references)", len(phone))
	}
	if !utf8.ValidString(id) {
		return errors.New("id: invalid UTF-8")
	}
	if k, err := r.keyAt(row); err != nil {
		return fmt.Errorf("key: %w", err)
	} else if k != Key(id) {
		return errors.New("key does not match the id's hash")
	}
	var v uint64
	var ok bool
	for range 2 {
		if v, i, ok = uvarint(rec, i); !ok || v > r.strTable.count {
			return errors.New("bad locale/timezone reference")
		}
		if v > 0 {
			if err := r.checkString(v - 1); err != nil {
				return err
			}
		}
	}
	str := func(what string) error {
		n, next, ok := uvarint(rec, i)
		if !ok || n > uint64(len(rec)-next) {
			return fmt.Errorf("%s overruns the record", what)
		}
		i = next + int(n)
		return nil
	}
	prev := int64(-1)
	for i < len(rec) {
		tag, next, ok := uvarint(rec, i)
		if !ok || tag>>3 >= uint64(len(r.attrNames)) || int64(tag>>3) <= prev {
			return errors.New("bad attribute tag")
		}
		prev = int64(tag >> 3)
		i = next
		switch tag & 7 {
		case tagDictString:
			if v, i, ok = uvarint(rec, i); !ok || v >= r.strTable.count {
				return errors.New("bad attribute string reference")
			}
			if err := r.checkString(v); err != nil {
				return err
			}
		case tagInlineString:
			start := i
			if err := str("attribute string"); err != nil {
				return err
			}
			if _, n, _ := uvarint(rec, start); !utf8.ValidString(rec[n:i]) {
				return fmt.Errorf("attribute %q: string is not valid UTF-8", r.attrNames[prev])
			}
		case tagInt:
			if _, i, ok = uvarint(rec, i); !ok {
				return errors.New("bad int attribute")
			}
		case tagFloat:
			if len(rec)-i < 8 {
				return errors.New("float attribute overruns the record")
			}
			if f := math.Float64frombits(binary.LittleEndian.Uint64([]byte(rec[i : i+8]))); math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("attribute %q: float is NaN or infinite", r.attrNames[prev])
			}
			i += 8
		case tagFalse, tagTrue:
		case tagTime:
			if _, i, ok = uvarint(rec, i); !ok {
				return errors.New("bad time attribute")
			}
			if v, i, ok = uvarint(rec, i); !ok || v >= 1e9 {
				return errors.New("bad time attribute nanoseconds")
			}
		default:
			return errors.New("unknown attribute type")
		}
	}
	return nil
}

// checkPush walks a push record: empty, or three lists that end exactly at
// the record's end.
func checkPush(rec string) error {
	if len(rec) > maxRecordLen {
		return fmt.Errorf("push record of %d bytes (limit 2^24-1)", len(rec))
	}
	i := 0
	for _, per := range [...]int{1, 1, 3} {
		if len(rec) == 0 {
			break
		}
		n, next, ok := uvarint(rec, i)
		if !ok || n > uint64(len(rec)-next) {
			return errors.New("bad push address count")
		}
		i = next
		for range n * uint64(per) {
			n, next, ok := uvarint(rec, i)
			if !ok || n > uint64(len(rec)-next) {
				return errors.New("push address overruns the record")
			}
			i = next + int(n)
		}
	}
	if i != len(rec) {
		return fmt.Errorf("%d trailing bytes in push record", len(rec)-i)
	}
	return nil
}

func (r *Reader) checkString(id uint64) error {
	if err := r.checkBlock(&r.strTable, id>>r.strTable.shift); err != nil {
		return fmt.Errorf("references a corrupt dictionary block: %w", err)
	}
	return nil
}

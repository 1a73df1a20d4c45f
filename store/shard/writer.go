package shard

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
)

// WriterOptions configures a Writer. The zero value is usable.
type WriterOptions struct {
	// Generation is stored in the header; readers report it and the Store
	// logs it when it swaps. Use a number that grows with each publication.
	Generation uint64
	// BlockRows is the number of rows per checksummed block (default 4096).
	BlockRows int
	// TempDir holds the spill file (default: the output's directory, so the
	// spill lives on the same disk as the result).
	TempDir string
	// Mode is the published file's permission bits (default 0644: readable
	// by the daemon's user, writable only by the store).
	Mode os.FileMode
	// MaxDictStrings caps the string dictionary (default 4Mi entries). Once it
	// is full, new attribute strings are stored inline in their row, so a
	// high-cardinality attribute cannot make the writer's memory unbounded.
	MaxDictStrings int
	// Ring says which shard of which ring the file holds (default: shard 0
	// of a ring of one, version 0). Add refuses a profile the shard does
	// not own (ErrNotInShard): filter with Ring.Owns(Key(id)) first.
	Ring *RingInfo
}

func (o WriterOptions) mode() os.FileMode {
	if o.Mode == 0 {
		return 0o644
	}
	return o.Mode.Perm()
}

// Writer streams profiles into a new shard generation. Profiles may arrive in
// any order: each is encoded once into a spill file and only a 16-byte
// (key, location) entry per profile stays in memory; Commit sorts those
// entries and copies the records out in key order.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	path string
	opts WriterOptions
	ring RingInfo

	spill     *os.File
	spillBuf  *bufio.Writer
	spillSize uint64
	entries   []spillEntry

	dict     map[string]uint32
	dictList []string
	attrs    map[string]uint32
	attrList []string
	segs     map[string]uint32
	segList  []string
	zones    map[string]error

	rec     []byte
	tok     []byte
	attrBuf []encAttr
	done    bool
}

type spillEntry struct {
	key uint64
	loc uint64 // spill offset << 24 | record length
}

type encAttr struct {
	id uint32
	v  Value
}

// NewWriter starts a generation that Commit will publish at path.
func NewWriter(path string, opts WriterOptions) (*Writer, error) {
	if opts.BlockRows == 0 {
		opts.BlockRows = DefaultBlockRows
	}
	if !validBlockItems(uint64(opts.BlockRows)) {
		return nil, fmt.Errorf("new shard writer: block rows %d is not a power of two in 1..%d", opts.BlockRows, maxBlockRows)
	}
	if opts.MaxDictStrings <= 0 {
		opts.MaxDictStrings = 4 << 20
	}
	ring := singleShard
	if opts.Ring != nil {
		ring = *opts.Ring
		if ring.Scheme == 0 {
			ring.Scheme = RingJump
		}
		if err := ring.Validate(); err != nil {
			return nil, fmt.Errorf("new shard writer: %w", err)
		}
	}
	dir := opts.TempDir
	if dir == "" {
		dir = filepath.Dir(path)
	}
	spill, err := os.CreateTemp(dir, ".notifyd-spill-*")
	if err != nil {
		return nil, fmt.Errorf("create spill file: %w", err)
	}
	// The spill is scratch: unlink it now so a crash cannot leave it behind.
	_ = os.Remove(spill.Name())
	return &Writer{
		path:     path,
		opts:     opts,
		ring:     ring,
		spill:    spill,
		spillBuf: bufio.NewWriterSize(spill, 1<<20),
		dict:     make(map[string]uint32),
		attrs:    make(map[string]uint32),
		segs:     make(map[string]uint32),
		zones:    make(map[string]error),
	}, nil
}

// Rows returns how many profiles were added so far.
func (w *Writer) Rows() int { return len(w.entries) }

// Add validates and encodes one profile. p may be reused after Add returns.
func (w *Writer) Add(p *Profile) error {
	if w.done {
		return errors.New("add profile: writer already committed or aborted")
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("profile %q: %w", truncateForError(p.ID), err)
	}
	key := Key(p.ID)
	if !w.ring.Owns(key) {
		return fmt.Errorf("profile %q: %w: its key belongs to shard %d, the file is %s", truncateForError(p.ID), ErrNotInShard, ShardOf(key, w.ring.Shards), w.ring)
	}
	// The row header stores these lengths in a byte each. Validate's limits
	// are tighter; this keeps a future change to them from writing a file
	// whose rows fail verification.
	if len(p.ID) > 256 || len(p.Email) > 255 || len(p.Phone) > 255 {
		return fmt.Errorf("profile %q: id, email or phone longer than the row header holds", truncateForError(p.ID))
	}
	if p.TimeZone != "" {
		if err := w.checkZone(p.TimeZone); err != nil {
			return fmt.Errorf("profile %q: timezone %q: %w", truncateForError(p.ID), p.TimeZone, err)
		}
	}
	rec := w.rec[:0]
	// Spill prefix: the profile's segment ids, stripped when rows are written.
	rec = binary.AppendUvarint(rec, uint64(len(p.Segments)))
	for _, s := range p.Segments {
		id, ok := w.segs[s]
		if !ok {
			id = uint32(len(w.segList))
			w.segs[s] = id
			w.segList = append(w.segList, s)
		}
		rec = binary.AppendUvarint(rec, uint64(id))
	}
	rec = w.appendRecord(rec, p)
	if len(rec) > maxRecordLen {
		return fmt.Errorf("profile %q: encoded row is %d bytes, limit %d", truncateForError(p.ID), len(rec), maxRecordLen)
	}
	if w.spillSize >= 1<<40 {
		return errors.New("add profile: spill file exceeds 1 TiB")
	}
	if _, err := w.spillBuf.Write(rec); err != nil {
		return fmt.Errorf("write spill file: %w", err)
	}
	w.entries = append(w.entries, spillEntry{key: key, loc: w.spillSize<<24 | uint64(len(rec))})
	w.spillSize += uint64(len(rec))
	w.rec = rec
	return nil
}

func (w *Writer) checkZone(name string) error {
	err, ok := w.zones[name]
	if !ok {
		if name == "Local" {
			err = errors.New("not an IANA zone name")
		} else if _, lerr := time.LoadLocation(name); lerr != nil {
			err = errors.New("unknown IANA time zone")
		}
		w.zones[name] = err
	}
	return err
}

func truncateForError(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// dictID interns s; force admits it even when the dictionary is full (locales
// and time zones, whose cardinality is naturally small).
func (w *Writer) dictID(s string, force bool) (uint32, bool) {
	if id, ok := w.dict[s]; ok {
		return id, true
	}
	if !force && len(w.dictList) >= w.opts.MaxDictStrings {
		return 0, false
	}
	id := uint32(len(w.dictList))
	w.dict[s] = id
	w.dictList = append(w.dictList, s)
	return id, true
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendRecord appends a profile's spill form: uvarint length of the row
// record, the row record, then the push record (docs/shard-format.md).
func (w *Writer) appendRecord(b []byte, p *Profile) []byte {
	// Row record: a fixed 4-byte header (consent and the three identity
	// lengths), the email at a fixed offset, id, phone, locale/zone, then
	// the attributes up to the end. Push addresses live in their own table,
	// so that resolving an email or a template attribute streams half the
	// bytes through the cache. Validate bounds the three lengths (email <=
	// 254, id 1..256, phone <= 16), which is what makes a byte each enough.
	t := w.tok[:0]
	t = append(t, p.Consent.byte(), byte(len(p.Email)), byte(len(p.ID)-1), byte(len(p.Phone)))
	t = append(t, p.Email...)
	t = append(t, p.ID...)
	t = append(t, p.Phone...)
	for _, s := range [...]string{p.Locale, p.TimeZone} {
		if s == "" {
			t = append(t, 0)
			continue
		}
		id, _ := w.dictID(s, true)
		t = binary.AppendUvarint(t, uint64(id)+1)
	}
	t = w.appendAttrs(t, p)
	b = binary.AppendUvarint(b, uint64(len(t)))
	b = append(b, t...)
	w.tok = t
	// Push record: empty when the profile has no push address at all (most
	// profiles), which costs nothing but its offset.
	if len(p.APNs) == 0 && len(p.FCM) == 0 && len(p.WebPush) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(p.APNs)))
	for _, s := range p.APNs {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(p.FCM)))
	for _, s := range p.FCM {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(p.WebPush)))
	for _, s := range p.WebPush {
		b = appendStr(b, s.Endpoint)
		b = appendStr(b, s.P256dh)
		b = appendStr(b, s.Auth)
	}
	return b
}

func (w *Writer) appendAttrs(b []byte, p *Profile) []byte {
	attrs := w.attrBuf[:0]
	for _, a := range p.Attributes {
		id, ok := w.attrs[a.Name]
		if !ok {
			id = uint32(len(w.attrList))
			w.attrs[a.Name] = id
			w.attrList = append(w.attrList, a.Name)
		}
		attrs = append(attrs, encAttr{id: id, v: a.Value})
	}
	// Readers stop scanning once they pass the id they look for.
	slices.SortFunc(attrs, func(x, y encAttr) int { return cmp.Compare(x.id, y.id) })
	for _, a := range attrs {
		tag := uint64(a.id) << 3
		switch a.v.kind {
		case KindString:
			if id, ok := w.dictID(a.v.s, false); ok {
				b = binary.AppendUvarint(b, tag|tagDictString)
				b = binary.AppendUvarint(b, uint64(id))
			} else {
				b = binary.AppendUvarint(b, tag|tagInlineString)
				b = appendStr(b, a.v.s)
			}
		case KindInt:
			b = binary.AppendUvarint(b, tag|tagInt)
			b = binary.AppendUvarint(b, zigzag(a.v.n))
		case KindFloat:
			b = binary.AppendUvarint(b, tag|tagFloat)
			b = binary.LittleEndian.AppendUint64(b, uint64(a.v.n))
		case KindBool:
			if a.v.n != 0 {
				b = binary.AppendUvarint(b, tag|tagTrue)
			} else {
				b = binary.AppendUvarint(b, tag|tagFalse)
			}
		case KindTime:
			b = binary.AppendUvarint(b, tag|tagTime)
			b = binary.AppendUvarint(b, zigzag(a.v.n))
			b = binary.AppendUvarint(b, uint64(a.v.ns))
		}
	}
	w.attrBuf = attrs[:0]
	return b
}

// Abort discards the generation; the published path is left untouched.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	return w.spill.Close()
}

// CommitStats describes a committed generation.
type CommitStats struct {
	Rows     uint64
	Bytes    uint64
	Segments int
	Strings  int
}

// Commit sorts the rows by user key, writes the generation to a temporary
// name beside the published path, fsyncs it and renames it over the path, so
// readers see either the old or the new generation, never a partial file.
func (w *Writer) Commit(ctx context.Context) (CommitStats, error) {
	if w.done {
		return CommitStats{}, errors.New("commit shard: writer already committed or aborted")
	}
	defer w.Abort()
	if len(w.attrList) > maxAttributes {
		return CommitStats{}, fmt.Errorf("commit shard: %d distinct attribute names, limit %d", len(w.attrList), maxAttributes)
	}
	if uint64(len(w.entries)) > math.MaxUint32 {
		return CommitStats{}, fmt.Errorf("commit shard: %d rows, limit %d", len(w.entries), uint64(math.MaxUint32))
	}
	if err := w.spillBuf.Flush(); err != nil {
		return CommitStats{}, fmt.Errorf("flush spill file: %w", err)
	}
	spill, err := mapFile(w.spill)
	if err != nil {
		return CommitStats{}, err
	}
	defer unmap(spill)
	if err := w.sortEntries(spill); err != nil {
		return CommitStats{}, err
	}
	if err := ctx.Err(); err != nil {
		return CommitStats{}, fmt.Errorf("commit shard: %w", err)
	}

	dir := filepath.Dir(w.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(w.path)+".tmp-*")
	if err != nil {
		return CommitStats{}, fmt.Errorf("create temp shard: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	size, err := w.writeFile(ctx, tmp, spill)
	if err != nil {
		return CommitStats{}, err
	}
	// CreateTemp makes the file 0600; the published shard is read by the
	// co-located daemon, which usually runs as another user.
	if err := tmp.Chmod(w.opts.mode()); err != nil {
		return CommitStats{}, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return CommitStats{}, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return CommitStats{}, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), w.path); err != nil {
		return CommitStats{}, fmt.Errorf("publish %s: %w", w.path, err)
	}
	ok = true
	// The rename is durable only once the directory entry is.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return CommitStats{Rows: uint64(len(w.entries)), Bytes: size, Segments: len(w.segList), Strings: len(w.dictList)}, nil
}

func (e spillEntry) record(spill []byte) []byte {
	off := e.loc >> 24
	return spill[off : off+e.loc&(1<<24-1)]
}

// splitSpill splits a spill record into its segment ids, row record and
// push record.
func splitSpill(rec []byte, segs []uint32) ([]uint32, []byte, []byte) {
	n, i, _ := uvarint(rec, 0)
	for ; n > 0; n-- {
		var id uint64
		id, i, _ = uvarint(rec, i)
		segs = append(segs, uint32(id))
	}
	n, i, _ = uvarint(rec, i)
	return segs, rec[i : i+int(n)], rec[i+int(n):]
}

func recordID(rec []byte) string {
	_, row, _ := splitSpill(rec, nil)
	id, _ := parseID(row)
	return string(id)
}

// parseID returns the external id of a row record.
func parseID(rec []byte) ([]byte, bool) {
	if len(rec) < recFixed {
		return nil, false
	}
	at := recFixed + int(rec[recEmailLen])
	end := at + int(rec[recIDLen]) + 1
	if end > len(rec) {
		return nil, false
	}
	return rec[at:end], true
}

// DuplicateIDError is Commit's answer to two profiles with one id. The
// writer has no line numbers; a caller that read the profiles from a file
// finds them again by ID (notifyd shard build does).
type DuplicateIDError struct {
	ID string
	// Lines are where the id occurs in the input, when the caller found them.
	Lines []int
}

func (e *DuplicateIDError) Error() string {
	s := fmt.Sprintf("duplicate id %q", truncateForError(e.ID))
	switch len(e.Lines) {
	case 0:
	case 1:
		s += fmt.Sprintf(" (line %d)", e.Lines[0])
	default:
		s += fmt.Sprintf(" on lines %d and %d", e.Lines[0], e.Lines[1])
	}
	return s
}

func (w *Writer) sortEntries(spill []byte) error {
	slices.SortFunc(w.entries, func(a, b spillEntry) int { return cmp.Compare(a.key, b.key) })
	// Equal keys are hash collisions or duplicate ids: order the run by id so
	// lookups can compare ids, and refuse duplicates.
	for i := 0; i < len(w.entries); {
		j := i + 1
		for j < len(w.entries) && w.entries[j].key == w.entries[i].key {
			j++
		}
		if j-i > 1 {
			run := w.entries[i:j]
			slices.SortFunc(run, func(a, b spillEntry) int {
				return bytes.Compare([]byte(recordID(a.record(spill))), []byte(recordID(b.record(spill))))
			})
			for k := 1; k < len(run); k++ {
				if id := recordID(run[k].record(spill)); id == recordID(run[k-1].record(spill)) {
					return fmt.Errorf("commit shard: %w", &DuplicateIDError{ID: id})
				}
			}
		}
		i = j
	}
	return nil
}

// sectionWriter tracks the file position and the running section CRC.
type sectionWriter struct {
	w   *bufio.Writer
	pos uint64
	crc hash.Hash32
	err error
}

func (s *sectionWriter) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(b)
	s.pos += uint64(n)
	s.crc.Write(b[:n])
	s.err = err
	return n, err
}

func (s *sectionWriter) pad() {
	var zero [8]byte
	s.Write(zero[:align8(s.pos)-s.pos])
}

func (s *sectionWriter) begin(kind uint32) sectionEntry {
	s.pad()
	s.crc.Reset()
	return sectionEntry{kind: kind, offset: s.pos}
}

func (s *sectionWriter) end(e *sectionEntry) {
	e.length = s.pos - e.offset
	e.crc = s.crc.Sum32()
}

func (w *Writer) writeFile(ctx context.Context, f *os.File, spill []byte) (uint64, error) {
	rows := uint64(len(w.entries))
	nsec := 9
	start := uint64(headerSize + nsec*sectionEntrySize)
	if _, err := f.Seek(int64(start), io.SeekStart); err != nil {
		return 0, fmt.Errorf("seek %s: %w", f.Name(), err)
	}
	sw := &sectionWriter{w: bufio.NewWriterSize(f, 1<<20), pos: start, crc: crc32.New(crc32.MakeTable(crc32.Castagnoli))}
	var secs []sectionEntry
	le := binary.LittleEndian
	br := uint64(w.opts.BlockRows)

	// ring, attrs and the segment directory come first: they are what Open
	// reads, and keeping them beside the header keeps Open's page faults
	// (and so its cost) independent of the file size.
	ringSec := sw.begin(kindRing)
	ringSec.count = 1
	sw.Write(encodeRing(w.ring))
	sw.end(&ringSec)
	secs = append(secs, ringSec)

	attrs := sw.begin(kindAttrs)
	attrs.count = uint64(len(w.attrList))
	writeNames(sw, w.attrList)
	sw.end(&attrs)
	secs = append(secs, attrs)

	// The directory's entries (bitmap offsets, sizes, checksums) are known
	// only after the rows: reserve its bytes now, fill them in at the end.
	segSec := sw.begin(kindSegments)
	segSec.count = uint64(len(w.segList))
	segDir := make([]byte, 32*len(w.segList))
	for _, n := range w.segList {
		segDir = append(segDir, n...)
	}
	sw.Write(segDir)
	sw.end(&segSec)
	segIdx := len(secs)
	secs = append(secs, segSec)

	// keys: per-block CRCs, then the keys.
	keys := sw.begin(kindKeys)
	keys.blockItems, keys.count = uint32(br), rows
	nb := (rows + br - 1) / br
	var buf []byte
	for b := uint64(0); b < nb; b++ {
		buf = buf[:0]
		for _, e := range w.entries[b*br : min((b+1)*br, rows)] {
			buf = le.AppendUint64(buf, e.key)
		}
		var c [4]byte
		le.PutUint32(c[:], crc(buf))
		sw.Write(c[:])
	}
	sw.pad()
	keys.aux = sw.pos - keys.offset
	for _, e := range w.entries {
		var k [8]byte
		le.PutUint64(k[:], e.key)
		sw.Write(k[:])
	}
	sw.end(&keys)
	secs = append(secs, keys)

	// fences: the first key of each block, so a lookup needs only the keys
	// block it lands in (a corrupt keys block fails only its own rows).
	fences := sw.begin(kindFences)
	fences.blockItems, fences.count = uint32(br), nb
	for b := uint64(0); b < nb; b++ {
		var k [8]byte
		le.PutUint64(k[:], w.entries[b*br].key)
		sw.Write(k[:])
	}
	sw.end(&fences)
	secs = append(secs, fences)

	// rows: blocks of records, then the block directory.
	bitmaps := make([]*roaring.Bitmap, len(w.segList))
	for i := range bitmaps {
		bitmaps[i] = roaring.New()
	}
	rowsSec := sw.begin(kindRows)
	rowsSec.blockItems, rowsSec.count = uint32(br), rows
	var segs []uint32
	recs := make([][]byte, 0, br)
	vt := newVarTableWriter(sw, rowsSec.offset)
	for b := uint64(0); b < nb; b++ {
		if b%64 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("commit shard: %w", err)
			}
		}
		recs = recs[:0]
		for i := b * br; i < min((b+1)*br, rows); i++ {
			var rec []byte
			segs, rec, _ = splitSpill(w.entries[i].record(spill), segs[:0])
			for _, s := range segs {
				bitmaps[s].Add(uint32(i))
			}
			recs = append(recs, rec)
		}
		vt.block(recs)
	}
	rowsSec.aux = vt.directory()
	sw.end(&rowsSec)
	secs = append(secs, rowsSec)

	// push: the push addresses, blocked like the rows (a second pass over
	// the sorted spill).
	pushSec := sw.begin(kindPush)
	pushSec.blockItems, pushSec.count = uint32(br), rows
	vt = newVarTableWriter(sw, pushSec.offset)
	for b := uint64(0); b < nb; b++ {
		if b%64 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("commit shard: %w", err)
			}
		}
		recs = recs[:0]
		for i := b * br; i < min((b+1)*br, rows); i++ {
			_, _, push := splitSpill(w.entries[i].record(spill), segs[:0])
			recs = append(recs, push)
		}
		vt.block(recs)
	}
	pushSec.aux = vt.directory()
	sw.end(&pushSec)
	secs = append(secs, pushSec)

	// strings: the dictionary.
	strs := sw.begin(kindStrings)
	strs.blockItems, strs.count = stringBlockItems, uint64(len(w.dictList))
	vt = newVarTableWriter(sw, strs.offset)
	for i := 0; i < len(w.dictList); i += stringBlockItems {
		recs = recs[:0]
		for _, s := range w.dictList[i:min(i+stringBlockItems, len(w.dictList))] {
			recs = append(recs, []byte(s))
		}
		vt.block(recs)
	}
	strs.aux = vt.directory()
	sw.end(&strs)
	secs = append(secs, strs)

	// bitmaps, then the segment directory that points into them.
	type segInfo struct {
		off, n, card uint64
		crc          uint32
	}
	infos := make([]segInfo, len(bitmaps))
	bms := sw.begin(kindBitmaps)
	bms.count = uint64(len(bitmaps))
	var bb bytes.Buffer
	for i, bm := range bitmaps {
		bm.RunOptimize()
		bb.Reset()
		if _, err := bm.WriteTo(&bb); err != nil {
			return 0, fmt.Errorf("serialize segment %q: %w", w.segList[i], err)
		}
		sw.pad()
		infos[i] = segInfo{off: sw.pos, n: uint64(bb.Len()), card: bm.GetCardinality(), crc: crc(bb.Bytes())}
		sw.Write(bb.Bytes())
	}
	sw.end(&bms)
	secs = append(secs, bms)

	sw.pad()
	if err := sw.w.Flush(); err != nil && sw.err == nil {
		sw.err = err
	}
	if sw.err != nil {
		return 0, fmt.Errorf("write %s: %w", f.Name(), sw.err)
	}
	for i, in := range infos {
		e := segDir[32*i:]
		le.PutUint64(e[0:], in.off)
		le.PutUint64(e[8:], in.n)
		le.PutUint64(e[16:], in.card)
		le.PutUint32(e[24:], in.crc)
		le.PutUint32(e[28:], uint32(len(w.segList[i])))
	}
	if _, err := f.WriteAt(segDir, int64(secs[segIdx].offset)); err != nil {
		return 0, fmt.Errorf("write %s segment directory: %w", f.Name(), err)
	}
	secs[segIdx].crc = crc(segDir)

	head := make([]byte, start)
	for i := range secs {
		secs[i].encode(head[headerSize+i*sectionEntrySize:])
	}
	h := header{
		version: formatVersion, generation: w.opts.Generation, rows: rows, blockRows: uint32(br),
		sections: uint32(len(secs)), tableOffset: headerSize, fileLength: sw.pos,
		tableCRC: crc(head[headerSize:]),
	}
	h.encode(head)
	if _, err := f.WriteAt(head, 0); err != nil {
		return 0, fmt.Errorf("write %s header: %w", f.Name(), err)
	}
	return sw.pos, nil
}

// writeNames writes a name list: u32 count, u32 lengths, then the bytes.
func writeNames(sw *sectionWriter, names []string) {
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, uint32(len(names)))
	for _, n := range names {
		b = le.AppendUint32(b, uint32(len(n)))
	}
	for _, n := range names {
		b = append(b, n...)
	}
	sw.Write(b)
}

// varTableWriter writes a blocked table of variable-length items: each block
// is u32 offsets[k+1] followed by the items; the directory of (offset,
// length, crc) per block follows the blocks.
type varTableWriter struct {
	sw      *sectionWriter
	base    uint64
	dir     []byte
	scratch []byte
}

func newVarTableWriter(sw *sectionWriter, base uint64) *varTableWriter {
	return &varTableWriter{sw: sw, base: base}
}

func (v *varTableWriter) block(items [][]byte) {
	le := binary.LittleEndian
	v.sw.pad()
	b := v.scratch[:0]
	var off uint32
	b = le.AppendUint32(b, 0)
	for _, it := range items {
		off += uint32(len(it))
		b = le.AppendUint32(b, off)
	}
	for _, it := range items {
		b = append(b, it...)
	}
	if uint64(len(b)) > math.MaxUint32 {
		v.sw.err = fmt.Errorf("block of %d items is %d bytes, limit 4 GiB (lower BlockRows)", len(items), len(b))
		return
	}
	v.dir = le.AppendUint64(v.dir, v.sw.pos-v.base)
	v.dir = le.AppendUint32(v.dir, uint32(len(b)))
	v.dir = le.AppendUint32(v.dir, crc(b))
	v.sw.Write(b)
	v.scratch = b
}

func (v *varTableWriter) directory() uint64 {
	v.sw.pad()
	at := v.sw.pos - v.base
	v.sw.Write(v.dir)
	return at
}

package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// smallShard builds rows u-0..u-(n-1) with 16 rows per block and returns the
// file bytes.
func smallShard(t testing.TB, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "small.shard")
	w, err := NewWriter(path, WriterOptions{Generation: 3, BlockRows: 16})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := Profile{ID: fmt.Sprintf("u-%d", i), Email: fmt.Sprintf("user%d@example.com", i), Locale: "en-US",
			Segments: []string{"all"}}
		if i%2 == 0 {
			p.Segments = append(p.Segments, "even")
		}
		if i%3 == 0 {
			p.APNs = []string{strings.Repeat(fmt.Sprintf("%02x", i), 32)}
		}
		p.SetAttr("first_name", StringValue(fmt.Sprintf("name-%d", i%7)))
		p.SetAttr("n", IntValue(int64(i)))
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sectionOf(t testing.TB, b []byte, kind uint32) sectionEntry {
	t.Helper()
	h := decodeHeader(b)
	for i := range h.sections {
		if e := decodeSection(b[headerSize+i*sectionEntrySize:]); e.kind == kind {
			return e
		}
	}
	t.Fatalf("no section %d", kind)
	return sectionEntry{}
}

// resealTable rewrites the section table and header checksums after a test
// edited them, so that a deeper check is what fails.
func resealTable(b []byte) {
	h := decodeHeader(b)
	h.tableCRC = crc(b[headerSize : headerSize+uint64(h.sections)*sectionEntrySize])
	h.encode(b)
}

func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.shard")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenRejectsDamagedHeader(t *testing.T) {
	good := smallShard(t, 100)
	tests := []struct {
		name    string
		mutate  func([]byte) []byte
		section string
		reason  string
	}{
		{"empty file", func(b []byte) []byte { return nil }, "header", "truncated"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-9] }, "header", "truncated"},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, "header", "bad magic"},
		{"header bit flip", func(b []byte) []byte { b[20] ^= 1; return b }, "header", "checksum mismatch"},
		{"section table bit flip", func(b []byte) []byte { b[headerSize+10] ^= 1; return b }, "section table", "checksum mismatch"},
		{"section offset out of range", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[headerSize+8:], uint64(len(b)))
			resealTable(b)
			return b
		}, "ring", "out of range"},
		{"rows directory out of range", func(b []byte) []byte {
			for i := range 6 {
				e := b[headerSize+i*sectionEntrySize:]
				if binary.LittleEndian.Uint32(e) == kindRows {
					binary.LittleEndian.PutUint64(e[32:], 1<<40)
				}
			}
			resealTable(b)
			return b
		}, "rows", "block directory out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, tc.mutate(append([]byte(nil), good...)))
			r, err := Open(path)
			if err == nil {
				r.Release()
				t.Fatal("Open succeeded")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not a *CorruptError", err)
			}
			if ce.Section != tc.section || !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want section %q, reason %q and the path", err, tc.section, tc.reason)
			}
		})
	}
}

// TestOpenRejectsOtherVersions: a file of another format version is intact
// but unreadable; the error names the file and both versions and is not a
// corruption report.
func TestOpenRejectsOtherVersions(t *testing.T) {
	good := smallShard(t, 20)
	for _, v := range []uint32{0, 1, formatVersion + 1} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			b := append([]byte(nil), good...)
			h := decodeHeader(b)
			h.version = v
			h.encode(b)
			path := writeTemp(t, b)
			r, err := Open(path)
			if err == nil {
				r.Release()
				t.Fatal("Open succeeded")
			}
			want := fmt.Sprintf("format version %d is not supported (this build reads versions %d and %d", v, minFormatVersion, formatVersion)
			if !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrCorrupt) ||
				!strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want ErrUnsupportedVersion naming %s and %q", err, path, want)
			}
		})
	}
}

func TestCorruptBlockIsContained(t *testing.T) {
	good := smallShard(t, 100) // 7 blocks of 16 rows
	type check func(t *testing.T, r *Reader)
	rowsFail := func(first, last uint32) check {
		return func(t *testing.T, r *Reader) {
			for i := uint32(0); i < uint32(r.Rows()); i++ {
				_, err := r.Row(i)
				inRange := i >= first && i <= last
				if inRange != (err != nil) {
					t.Fatalf("row %d: error %v, want failure=%v", i, err, inRange)
				}
				var ce *CorruptError
				if err != nil && (!errors.As(err, &ce) || !ce.HasRows || ce.FirstRow != uint64(first) || ce.LastRow != uint64(last)) {
					t.Fatalf("row %d: error %v does not name rows %d-%d", i, err, first, last)
				}
			}
		}
	}
	flipIn := func(kind uint32, at func(e sectionEntry, b []byte) uint64) func([]byte) {
		return func(b []byte) {
			e := sectionOf(t, b, kind)
			b[e.offset+at(e, b)] ^= 0x40
		}
	}
	rowBlockByte := func(block uint64) func(e sectionEntry, b []byte) uint64 {
		return func(e sectionEntry, b []byte) uint64 {
			d := b[e.offset+e.aux+16*block:]
			return binary.LittleEndian.Uint64(d) + uint64(binary.LittleEndian.Uint32(d[8:])) - 1
		}
	}
	tests := []struct {
		name   string
		mutate func([]byte)
		check  check
	}{
		{"row block 2 data", flipIn(kindRows, rowBlockByte(2)), rowsFail(32, 47)},
		{"row block 6 (short last block)", flipIn(kindRows, rowBlockByte(6)), rowsFail(96, 99)},
		{"push block 3", flipIn(kindPush, rowBlockByte(3)), func(t *testing.T, r *Reader) {
			rowsFail(48, 63)(t, r)
			var ce *CorruptError
			if _, err := r.Row(50); !errors.As(err, &ce) || ce.Section != "push" {
				t.Fatalf("row 50: error %v, want one naming the push section", err)
			}
			tokens := 0
			for i := range uint32(48) {
				row, err := r.Row(i)
				if err != nil {
					t.Fatal(err)
				}
				tokens += len(row.APNsTokens(nil))
			}
			if tokens == 0 {
				t.Fatal("rows of intact push blocks lost their tokens")
			}
		}},
		{"row block directory entry", func(b []byte) {
			e := sectionOf(t, b, kindRows)
			b[e.offset+e.aux+16*3+12] ^= 1 // the block's stored CRC
		}, rowsFail(48, 63)},
		{"keys block 1", flipIn(kindKeys, func(e sectionEntry, b []byte) uint64 { return e.aux + 8*20 + 3 }), func(t *testing.T, r *Reader) {
			rowsFail(16, 31)(t, r)
			failed := 0
			for i := range 100 {
				if _, _, err := r.Find(fmt.Sprintf("u-%d", i)); err != nil {
					failed++
				}
			}
			if failed != 16 {
				t.Fatalf("%d lookups failed, want the 16 of the corrupt keys block", failed)
			}
		}},
		{"segment bitmap", func(b []byte) {
			e := sectionOf(t, b, kindBitmaps)
			b[e.offset+e.length-1] ^= 0x10
		}, func(t *testing.T, r *Reader) {
			bad, good := 0, 0
			for _, s := range r.Segments() {
				_, err := r.Segment(s.Name)
				var ce *CorruptError
				switch {
				case err == nil:
					good++
				case errors.As(err, &ce) && ce.Segment == s.Name:
					bad++
				default:
					t.Fatalf("segment %s: unexpected error %v", s.Name, err)
				}
			}
			if bad != 1 || good != 1 {
				t.Fatalf("%d bad and %d good segments, want 1 and 1", bad, good)
			}
			rowsFail(1, 0)(t, r) // no row is affected
		}},
		{"dictionary block (large dictionary: per block)", flipIn(kindStrings, func(e sectionEntry, b []byte) uint64 {
			return binary.LittleEndian.Uint64(b[e.offset+e.aux:]) + 4*2 + 2
		}), func(t *testing.T, r *Reader) {
			if _, err := r.Row(0); err == nil || !strings.Contains(err.Error(), "dictionary") {
				t.Fatalf("row 0: error %v, want a dictionary error", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			tc.mutate(b)
			path := writeTemp(t, b)
			r, err := newReaderDict(path, b, 0) // as Open, with a dictionary too large to verify at open
			if err != nil {
				t.Fatalf("Open: %v (block damage must not fail Open)", err)
			}
			tc.check(t, r)
			if rep := r.Verify(context.Background()); rep.OK() {
				t.Fatal("Verify found nothing")
			} else if !strings.Contains(rep.Problems[0].Error(), path) {
				t.Fatalf("problem %q does not name the file", rep.Problems[0])
			}
		})
	}
}

// TestSmallDamagedDictionaryIsRefusedAtOpen is issue 12's item 10: one
// flipped bit in a small dictionary (every locale and zone string in one
// block) used to make nearly every row unservable at first use; such a
// file is now refused at open, naming the block, so the refresher keeps the
// previous generation.
func TestSmallDamagedDictionaryIsRefusedAtOpen(t *testing.T) {
	b := smallShard(t, 100)
	e := sectionOf(t, b, kindStrings)
	b[e.offset+binary.LittleEndian.Uint64(b[e.offset+e.aux:])+4*2+2] ^= 0x40
	_, err := Open(writeTemp(t, b))
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Section != "strings" || ce.Block != 0 || !strings.Contains(err.Error(), "verified whole at open") {
		t.Fatalf("Open: %v, want the damaged dictionary block refused at open", err)
	}
}

func TestCorruptBlockLeavesLookupsElsewhere(t *testing.T) {
	b := smallShard(t, 100)
	e := sectionOf(t, b, kindRows)
	d := b[e.offset+e.aux+16*0:]
	b[e.offset+binary.LittleEndian.Uint64(d)+100] ^= 1
	r, err := Open(writeTemp(t, b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	failed, found := 0, 0
	for i := range 100 {
		row, ok, err := r.Find(fmt.Sprintf("u-%d", i))
		switch {
		case err != nil:
			failed++
		case ok && row.ID() == fmt.Sprintf("u-%d", i):
			found++
		default:
			t.Fatalf("u-%d: not found and no error", i)
		}
	}
	if failed != 16 || found != 84 {
		t.Fatalf("%d lookups failed and %d succeeded, want 16 and 84", failed, found)
	}
}

func TestSortEntriesOrdersCollisionsByID(t *testing.T) {
	var spill []byte
	var entries []spillEntry
	// Spill records: no segments, the row record's length, then a row
	// record with only its fixed header (consent, email length 0, id length
	// - 1, phone length 0) and id; no push record.
	spillRec := func(id string) []byte { return append([]byte{0, byte(4 + len(id)), 0, 0, byte(len(id) - 1), 0}, id...) }
	for _, id := range []string{"zed", "amy", "kim"} {
		rec := spillRec(id)
		entries = append(entries, spillEntry{key: 5, loc: uint64(len(spill))<<24 | uint64(len(rec))})
		spill = append(spill, rec...)
	}
	tests := []struct {
		name    string
		extra   []string
		want    []string
		wantErr string
	}{
		{"collision run sorted by id", nil, []string{"amy", "kim", "zed"}, ""},
		{"duplicate id", []string{"kim"}, nil, `duplicate id "kim"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &Writer{entries: append([]spillEntry(nil), entries...)}
			sp := append([]byte(nil), spill...)
			for _, id := range tc.extra {
				rec := spillRec(id)
				w.entries = append(w.entries, spillEntry{key: 5, loc: uint64(len(sp))<<24 | uint64(len(rec))})
				sp = append(sp, rec...)
			}
			err := w.sortEntries(sp)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range w.entries {
				if got := recordID(e.record(sp)); got != tc.want[i] {
					t.Fatalf("entry %d: %q, want %q", i, got, tc.want[i])
				}
			}
		})
	}
}

// TestFormatVectors pins the values docs/shard-format.md gives for writers
// in other languages.
func TestFormatVectors(t *testing.T) {
	tests := []struct {
		name      string
		got, want uint64
	}{
		{"crc32c 123456789", uint64(crc([]byte("123456789"))), 0xE3069283},
		{"xxh64 empty", Key(""), 0xEF46DB3751D8E999},
		{"xxh64 u-1", Key("u-1"), 0x821A0434B1F1DD6A},
		{"xxh64 a x 40", Key(strings.Repeat("a", 40)), 0x569EA6843111EF03},
		{"uvarint 300", uint64(binary.LittleEndian.Uint16(binary.AppendUvarint(nil, 300))), 0x02AC},
		{"svarint -7", zigzag(-7), 0x0D},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %#x, want %#x", tc.got, tc.want)
			}
		})
	}
}

func TestGallopMatchesBinarySearch(t *testing.T) {
	keys := []uint64{3, 3, 5, 9, 9, 9, 12, 40, 41, 100}
	var b []byte
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint64(b, k)
	}
	n := uint64(len(keys))
	for k := uint64(0); k <= 101; k++ {
		want := uint64(sort.Search(len(keys), func(i int) bool { return keys[i] >= k }))
		for guess := uint64(0); guess <= n+3; guess++ {
			if got := gallop(b, n, k, guess); got != want {
				t.Fatalf("gallop(k=%d, guess=%d) = %d, want %d", k, guess, got, want)
			}
		}
	}
	if gallop(nil, 0, 5, 0) != 0 {
		t.Fatal("empty input")
	}
}

// ringShard builds the users of u-0..u-(n-1) that shard 1 of a 3-shard ring
// owns, 16 rows per block.
func ringShard(t testing.TB, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ring.shard")
	ring := RingInfo{Version: 2, Shard: 1, Shards: 3, Scheme: RingJump}
	w, err := NewWriter(path, WriterOptions{Generation: 3, BlockRows: 16, Ring: &ring})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := Profile{ID: fmt.Sprintf("u-%d", i), Email: fmt.Sprintf("user%d@example.com", i)}
		if !ring.Owns(Key(p.ID)) {
			continue
		}
		if err := w.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewriteRing edits the ring section in place and reseals its checksum, so
// that the field checks (not the checksum) are what fails.
func rewriteRing(t testing.TB, b []byte, edit func(sec []byte)) []byte {
	h := decodeHeader(b)
	for i := range h.sections {
		at := headerSize + i*sectionEntrySize
		if e := decodeSection(b[at:]); e.kind == kindRing {
			sec := b[e.offset : e.offset+e.length]
			edit(sec)
			e.crc = crc(sec)
			e.encode(b[at:])
			resealTable(b)
			return b
		}
	}
	t.Fatal("no ring section")
	return nil
}

func TestOpenRejectsDamagedRing(t *testing.T) {
	good := ringShard(t, 200)
	le := binary.LittleEndian
	tests := []struct {
		name    string
		mutate  func([]byte) []byte
		section string
		reason  string
	}{
		{"ring bit flip", func(b []byte) []byte {
			b[sectionOf(t, b, kindRing).offset+12] ^= 1
			return b
		}, "ring", "checksum mismatch"},
		{"shard id past the count", func(b []byte) []byte {
			return rewriteRing(t, b, func(s []byte) { le.PutUint32(s[12:], 3) })
		}, "ring", "shard id 3 is out of range"},
		{"zero shards", func(b []byte) []byte {
			return rewriteRing(t, b, func(s []byte) { le.PutUint32(s[16:], 0) })
		}, "ring", "shard count 0"},
		{"unknown scheme", func(b []byte) []byte {
			return rewriteRing(t, b, func(s []byte) { le.PutUint32(s[8:], 2) })
		}, "ring", "scheme 2 is not supported"},
		{"reserved bytes", func(b []byte) []byte {
			return rewriteRing(t, b, func(s []byte) { s[30] = 1 })
		}, "ring", "reserved"},
		{"version 3 without a ring section", func(b []byte) []byte {
			b = DowngradeToV2(b)
			h := decodeHeader(b)
			h.version = 3
			h.encode(b)
			return b
		}, "section table", "missing ring section"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, tc.mutate(append([]byte(nil), good...)))
			r, err := Open(path)
			if err == nil {
				r.Release()
				t.Fatal("Open succeeded")
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Section != tc.section || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("error %v: want a *CorruptError in section %q saying %q", err, tc.section, tc.reason)
			}
		})
	}
}

// TestRowsOfAnotherShardAreCorrupt: a file whose ring names a shard that does
// not own its rows (a publisher's mix-up) opens, but no row of it is served:
// every keys block fails, so no user is delivered by two daemons.
func TestRowsOfAnotherShardAreCorrupt(t *testing.T) {
	b := rewriteRing(t, ringShard(t, 200), func(s []byte) { binary.LittleEndian.PutUint32(s[12:], 2) })
	r, err := Open(writeTemp(t, b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.Rows() == 0 {
		t.Fatal("no rows")
	}
	for i := range uint32(r.Rows()) {
		if _, err := r.Row(i); err == nil || !strings.Contains(err.Error(), "belongs to shard 1") {
			t.Fatalf("row %d: %v, want a keys block error naming shard 1", i, err)
		}
	}
	rep := r.Verify(context.Background())
	if rep.OK() {
		t.Fatal("Verify passed")
	}
}

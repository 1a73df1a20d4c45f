package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uniformShard builds n rows whose records all have the same length (ids
// u-10.., one float attribute), 16 rows per block.
func uniformShard(t *testing.T, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "u.shard")
	w, err := NewWriter(path, WriterOptions{Generation: 1, BlockRows: 16})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := Profile{ID: fmt.Sprintf("u-%d", 10+i), Email: fmt.Sprintf("user%d@example.com", 10+i), Segments: []string{"all"}}
		p.SetAttr("score", FloatValue(1.5))
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

// rowRecord returns the bytes of row i's record in the file (block 0 only)
// and a function that reseals block 0's checksum after an edit.
func rowRecord(t *testing.T, b []byte, i int) ([]byte, func()) {
	t.Helper()
	e := sectionOf(t, b, kindRows)
	d := b[e.offset+e.aux:]
	off, n := binary.LittleEndian.Uint64(d), uint64(binary.LittleEndian.Uint32(d[8:]))
	blk := b[e.offset+off : e.offset+off+n]
	hdr := uint32(4 * 17)
	a, z := binary.LittleEndian.Uint32(blk[4*i:]), binary.LittleEndian.Uint32(blk[4*i+4:])
	return blk[hdr+a : hdr+z], func() { binary.LittleEndian.PutUint32(d[12:], crc(blk)) }
}

// TestReaderRefusesRowsThatBreakTheSpec: a writer that computes its
// checksums right but breaks the spec's row invariants (issue 12, item 9)
// gets the block refused with a reason that names the real fault.
func TestReaderRefusesRowsThatBreakTheSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, b []byte)
		want   string
	}{
		{"phone_len overruns into the references", func(t *testing.T, b []byte) {
			rec, reseal := rowRecord(t, b, 3)
			rec[recPhoneLen] = 2
			reseal()
		}, "not E.164"},
		{"control character in email", func(t *testing.T, b []byte) {
			rec, reseal := rowRecord(t, b, 3)
			rec[recFixed] = 0x01
			reseal()
		}, "email: contains a control character"},
		{"id not UTF-8", func(t *testing.T, b []byte) {
			rec, reseal := rowRecord(t, b, 3)
			rec[recFixed+int(rec[recEmailLen])] = 0xff
			reseal()
		}, "id: invalid UTF-8"},
		{"NaN float", func(t *testing.T, b []byte) {
			rec, reseal := rowRecord(t, b, 3)
			var f [8]byte
			binary.LittleEndian.PutUint64(f[:], math.Float64bits(1.5))
			at := strings.Index(string(rec), string(f[:]))
			if at < 0 {
				t.Fatal("float not found in the record")
			}
			binary.LittleEndian.PutUint64(rec[at:], math.Float64bits(math.NaN()))
			reseal()
		}, "NaN or infinite"},
		{"duplicate row", func(t *testing.T, b []byte) {
			r1, _ := rowRecord(t, b, 1)
			r2, reseal := rowRecord(t, b, 2)
			if len(r1) != len(r2) {
				t.Fatalf("records differ in length (%d, %d)", len(r1), len(r2))
			}
			copy(r2, r1)
			reseal()
			e := sectionOf(t, b, kindKeys)
			keys := b[e.offset+e.aux:]
			copy(keys[16:24], keys[8:16])
			binary.LittleEndian.PutUint32(b[e.offset:], crc(keys[:16*8]))
		}, "strictly increasing order (a duplicate id when equal)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := uniformShard(t, 40)
			tc.mutate(t, b)
			r, err := newReader("spec.shard", b)
			if err != nil {
				t.Fatal(err)
			}
			var ce *CorruptError
			if _, err := r.Row(5); !errors.As(err, &ce) || ce.Section != "rows" || ce.FirstRow != 0 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("row of the damaged block: %v, want a rows 0-15 error saying %q", err, tc.want)
			}
			if _, err := r.Row(20); err != nil {
				t.Fatalf("row of an intact block: %v", err)
			}
		})
	}
}

// TestReaderRefusesBadNames: duplicate or non-text attribute and segment
// names are refused at open.
func TestReaderRefusesBadNames(t *testing.T) {
	b := uniformShard(t, 20)
	e := sectionOf(t, b, kindSegments)
	sec := b[e.offset : e.offset+e.length]
	name := sec[e.count*32:] // the first name: "all"
	name[0] = 0xff
	h := decodeHeader(b)
	for i := range h.sections {
		at := headerSize + i*sectionEntrySize
		if s := decodeSection(b[at:]); s.kind == kindSegments {
			s.crc = crc(sec)
			s.encode(b[at:])
		}
	}
	resealTable(b)
	if _, err := newReader("names.shard", b); err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		t.Fatalf("open with a non-UTF-8 segment name: %v", err)
	}
}

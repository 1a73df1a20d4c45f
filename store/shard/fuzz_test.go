package shard

import (
	"context"
	"encoding/binary"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the reader: Open, Verify, every row's
// accessors, lookups and segment iteration must return errors, never panic.
// The seed corpus (testdata/fuzz/FuzzOpen) holds a valid shard and damaged
// variants; the fuzzer mostly explores past the checksums through the seeds
// whose checksums were resealed.
func FuzzOpen(f *testing.F) {
	good := smallShard(f, 40)
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		// Let the fuzzer's edits reach past the header checks.
		if len(b) >= headerSize && string(b[:8]) == magic {
			h := decodeHeader(b)
			if h.sections <= 64 && headerSize+uint64(h.sections)*sectionEntrySize <= uint64(len(b)) {
				h.fileLength = uint64(len(b))
				h.tableCRC = crc(b[headerSize : headerSize+uint64(h.sections)*sectionEntrySize])
				h.encode(b)
			}
		}
		r, err := newReader("fuzz", b)
		if err != nil {
			return
		}
		exercise(r)
	})
}

func exercise(r *Reader) {
	r.Verify(context.Background())
	var toks []string
	var subs []WebPushSubscription
	for i := uint32(0); uint64(i) < min(r.Rows(), 200); i++ {
		row, err := r.Row(i)
		if err != nil {
			continue
		}
		_ = row.ID() + row.Email() + row.Phone() + row.Locale() + row.TimeZone()
		toks = row.FCMTokens(row.APNsTokens(toks[:0]))
		subs = row.WebPush(subs[:0])
		_ = row.Consents()
		row.Attrs(func(string, Value) bool { return true })
		for id := range r.AttrNames() {
			row.AttrValue(AttrID(id))
		}
		r.Find(row.ID())
	}
	r.Find("u-1")
	buf := make([]uint32, 64)
	for _, s := range r.Segments() {
		seg, err := r.Segment(s.Name)
		if err != nil {
			continue
		}
		it := seg.Iter()
		for it.Next(buf) > 0 {
		}
		if it, err := seg.IterAfterKey(1 << 63); err == nil {
			it.Next(buf)
		}
	}
}

// FuzzResealed overwrites bytes of a valid shard and then recomputes every
// checksum, so the fuzzer reaches the structural checks behind the CRCs
// (record walking, dictionary references, roaring bitmaps).
func FuzzResealed(f *testing.F) {
	good := smallShard(f, 40)
	f.Add(uint32(0), []byte{0})
	f.Add(uint32(len(good)/2), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint32(len(good)-40), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, at uint32, patch []byte) {
		b := append([]byte(nil), good...)
		start := headerSize + 8*sectionEntrySize // keep the layout, damage the content
		copy(b[start+int(at)%(len(b)-start):], patch)
		reseal(b)
		r, err := newReader("fuzz", b)
		if err != nil {
			return
		}
		exercise(r)
	})
}

// reseal recomputes every checksum of a shard whose layout is intact.
func reseal(b []byte) {
	le := binary.LittleEndian
	h := decodeHeader(b)
	var secs []sectionEntry
	for i := range h.sections {
		secs = append(secs, decodeSection(b[headerSize+i*sectionEntrySize:]))
	}
	var bitmaps sectionEntry
	for _, e := range secs {
		if e.kind == kindBitmaps {
			bitmaps = e
		}
	}
	for _, e := range secs {
		sec := b[e.offset : e.offset+e.length]
		switch e.kind {
		case kindKeys:
			nb := (e.count + uint64(e.blockItems) - 1) / uint64(e.blockItems)
			for blk := range nb {
				first := blk * uint64(e.blockItems)
				last := min(first+uint64(e.blockItems), e.count)
				le.PutUint32(sec[4*blk:], crc(sec[e.aux+8*first:e.aux+8*last]))
			}
		case kindRows, kindPush, kindStrings:
			nb := (e.count + uint64(e.blockItems) - 1) / uint64(e.blockItems)
			for blk := range nb {
				d := sec[e.aux+16*blk:]
				off, n := le.Uint64(d), uint64(le.Uint32(d[8:]))
				if off <= uint64(len(sec)) && n <= uint64(len(sec))-off {
					le.PutUint32(d[12:], crc(sec[off:off+n]))
				}
			}
		case kindSegments:
			for i := range e.count {
				d := sec[32*i:]
				off, n := le.Uint64(d), le.Uint64(d[8:])
				if off >= bitmaps.offset && off <= uint64(len(b)) && n <= uint64(len(b))-off {
					le.PutUint32(d[24:], crc(b[off:off+n]))
				}
			}
		}
	}
	// Section CRCs last: segment entries above changed the segments section.
	for i, e := range secs {
		e.crc = crc(b[e.offset : e.offset+e.length])
		e.encode(b[headerSize+i*sectionEntrySize:])
	}
	h.tableCRC = crc(b[headerSize : headerSize+uint64(h.sections)*sectionEntrySize])
	h.encode(b)
}

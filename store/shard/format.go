package shard

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/cespare/xxhash/v2"
)

// File layout constants. docs/shard-format.md is the normative description;
// keep the two in step.
const (
	magic = "NTFYSHRD"
	// formatVersion 2 (fixed row header with the email at a fixed offset,
	// push addresses in their own table) replaced version 1, whose records
	// needed a chain of varint decodes to reach the email and interleaved
	// the bulky push tokens with what every campaign reads. Version 3 adds
	// the ring section (which shard of which ring the file holds); a
	// version 2 file still opens, as shard 0 of a ring of one, because the
	// difference is settled at Open and costs the row path nothing.
	formatVersion    = 3
	minFormatVersion = 2
	headerSize       = 64
	sectionEntrySize = 48

	// DefaultBlockRows is the number of rows per checksummed block. 4096 rows
	// keep a block around 1 MiB at the default profile mix: small enough that
	// a corrupt block takes few recipients with it and first-use verification
	// is cheap, large enough that the block directory stays tiny.
	DefaultBlockRows = 4096
	stringBlockItems = 1024
	maxBlockRows     = 1 << 20

	// maxRecordLen bounds a row record: spill entries and Row pack its
	// length (and offsets in it) into 24 bits.
	maxRecordLen  = 1<<24 - 1
	maxStringLen  = 1 << 20
	maxNameLen    = 255
	maxAttributes = 1 << 20
)

// FormatVersion is the file format version this package writes (it also
// reads version 2).
// Caches of generated shards (benchmarks) should key on it.
const FormatVersion = formatVersion

// Section kinds.
const (
	kindKeys     uint32 = 1
	kindRows     uint32 = 2
	kindStrings  uint32 = 3
	kindAttrs    uint32 = 4
	kindBitmaps  uint32 = 5
	kindSegments uint32 = 6
	kindFences   uint32 = 7
	kindPush     uint32 = 8
	kindRing     uint32 = 9
)

func kindName(k uint32) string {
	switch k {
	case kindKeys:
		return "keys"
	case kindRows:
		return "rows"
	case kindStrings:
		return "strings"
	case kindAttrs:
		return "attrs"
	case kindBitmaps:
		return "bitmaps"
	case kindSegments:
		return "segments"
	case kindFences:
		return "fences"
	case kindPush:
		return "push"
	case kindRing:
		return "ring"
	}
	return "unknown"
}

// Attribute value type tags in row records (low 3 bits of the attribute tag).
const (
	tagDictString   = 1
	tagInlineString = 2
	tagInt          = 3
	tagFloat        = 4
	tagFalse        = 5
	tagTrue         = 6
	tagTime         = 7
)

// crc is CRC-32C (Castagnoli). MakeTable returns the library's cached table
// (hardware-accelerated on amd64 and arm64) for this polynomial.
func crc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// Key returns the 64-bit user key of an external id: XXH64 (seed 0) of its
// UTF-8 bytes. Rows are sorted by (Key, id).
func Key(id string) uint64 { return xxhash.Sum64String(id) }

type header struct {
	version     uint32
	flags       uint32
	generation  uint64
	rows        uint64
	blockRows   uint32
	sections    uint32
	tableOffset uint64
	fileLength  uint64
	tableCRC    uint32
	headerCRC   uint32
}

func (h *header) encode(b []byte) {
	le := binary.LittleEndian
	copy(b[0:8], magic)
	le.PutUint32(b[8:], h.version)
	le.PutUint32(b[12:], h.flags)
	le.PutUint64(b[16:], h.generation)
	le.PutUint64(b[24:], h.rows)
	le.PutUint32(b[32:], h.blockRows)
	le.PutUint32(b[36:], h.sections)
	le.PutUint64(b[40:], h.tableOffset)
	le.PutUint64(b[48:], h.fileLength)
	le.PutUint32(b[56:], h.tableCRC)
	h.headerCRC = crc(b[:60])
	le.PutUint32(b[60:], h.headerCRC)
}

func decodeHeader(b []byte) header {
	le := binary.LittleEndian
	return header{
		version:     le.Uint32(b[8:]),
		flags:       le.Uint32(b[12:]),
		generation:  le.Uint64(b[16:]),
		rows:        le.Uint64(b[24:]),
		blockRows:   le.Uint32(b[32:]),
		sections:    le.Uint32(b[36:]),
		tableOffset: le.Uint64(b[40:]),
		fileLength:  le.Uint64(b[48:]),
		tableCRC:    le.Uint32(b[56:]),
		headerCRC:   le.Uint32(b[60:]),
	}
}

type sectionEntry struct {
	kind       uint32
	blockItems uint32
	offset     uint64
	length     uint64
	count      uint64
	aux        uint64
	crc        uint32
}

func (s *sectionEntry) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], s.kind)
	le.PutUint32(b[4:], s.blockItems)
	le.PutUint64(b[8:], s.offset)
	le.PutUint64(b[16:], s.length)
	le.PutUint64(b[24:], s.count)
	le.PutUint64(b[32:], s.aux)
	le.PutUint32(b[40:], s.crc)
	le.PutUint32(b[44:], 0)
}

func decodeSection(b []byte) sectionEntry {
	le := binary.LittleEndian
	return sectionEntry{
		kind:       le.Uint32(b[0:]),
		blockItems: le.Uint32(b[4:]),
		offset:     le.Uint64(b[8:]),
		length:     le.Uint64(b[16:]),
		count:      le.Uint64(b[24:]),
		aux:        le.Uint64(b[32:]),
		crc:        le.Uint32(b[40:]),
	}
}

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// uvarint decodes like binary.Uvarint but reports failure as ok=false
// without panicking on short input, and rejects values that need more than
// 64 bits. It takes records as strings (reader) and bytes (writer).
func uvarint[T ~string | ~[]byte](b T, off int) (v uint64, next int, ok bool) {
	var s uint
	for i := off; i < len(b); i++ {
		c := b[i]
		if c < 0x80 {
			if s == 63 && c > 1 {
				return 0, 0, false
			}
			return v | uint64(c)<<s, i + 1, true
		}
		v |= uint64(c&0x7f) << s
		s += 7
		if s > 63 {
			return 0, 0, false
		}
	}
	return 0, 0, false
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

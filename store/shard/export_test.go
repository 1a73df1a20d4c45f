package shard

// DowngradeToV2 rewrites a version 3 file as the version 2 file an older
// writer would have made of the same rows: the ring section's table entry
// is dropped (its bytes stay behind as an unreferenced gap, which readers
// allow) and the header says version 2.
func DowngradeToV2(b []byte) []byte {
	b = append([]byte(nil), b...)
	h := decodeHeader(b)
	var keep []sectionEntry
	for i := range h.sections {
		if e := decodeSection(b[headerSize+i*sectionEntrySize:]); e.kind != kindRing {
			keep = append(keep, e)
		}
	}
	table := b[headerSize : headerSize+uint64(h.sections)*sectionEntrySize]
	clear(table)
	for i := range keep {
		keep[i].encode(table[i*sectionEntrySize:])
	}
	h.version, h.sections = 2, uint32(len(keep))
	h.tableCRC = crc(table[:len(keep)*sectionEntrySize])
	h.encode(b)
	return b
}

// ColdBlocks counts the keys, dictionary, rows and push blocks of the
// mapping not yet verified (a block found bad counts as visited, and so
// does the push block of a bad rows block).
func (r *Reader) ColdBlocks() int {
	n := 0
	for i := range r.keyStates.get() {
		if r.keyStates.get()[i].Load() == 0 {
			n++
		}
	}
	for _, t := range []*varTable{&r.strTable, &r.rowTable, &r.pushTable} {
		for i := range t.blocks() {
			// The push block of a bad rows block is never read.
			if t.blocks()[i].state.Load() == blockUnchecked && (t != &r.pushTable || r.rowTable.blocks()[i].state.Load() != blockBad) {
				n++
			}
		}
	}
	return n
}

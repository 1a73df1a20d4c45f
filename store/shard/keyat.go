package shard

// KeyAt returns row i's user key. The key column has its own checksummed
// blocks, so a row whose record block is corrupt still has a readable key:
// the pipeline can report that recipient by key instead of losing it.
func (r *Reader) KeyAt(i uint32) (uint64, error) { return r.keyAt(uint64(i)) }

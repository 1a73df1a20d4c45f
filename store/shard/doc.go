// Package shard owns the shard file: the byte format (specified in
// docs/shard-format.md), the streaming writer, the memory-mapped reader,
// segment iteration, point lookups by external id, and generations (a Store
// that follows the published path and pins a mapping while it is used).
//
// The read path is built for campaigns over millions of members: Open is O(1)
// in the member count, rows and strings are read zero-copy from the mapping,
// and iterating a segment does not allocate per member. Checksums are verified
// per block on first use, so a corrupt block fails only the rows it holds.
//
// A file also says which shard of which ring it holds (Reader.Ring): the
// ring is described by its version, its shard count and the scheme, Jump
// consistent hash of the user key (ShardOf). The store publishes one file
// per shard; a row the file's shard does not own fails its keys block.
// Routing users to shards and running a campaign per shard belong to
// daemon and campaigns, not here.
//
// Strings returned by a Reader or a Row point into the mapping. They are valid
// only while the generation is pinned (between Open/Acquire and Release); copy
// them (strings.Clone) to keep them longer.
//
// This package must not allocate per member on the hot path, and it knows
// nothing about channels, campaigns or templates.
package shard

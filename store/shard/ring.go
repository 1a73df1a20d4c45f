package shard

import (
	"encoding/binary"
	"fmt"

	jump "github.com/dgryski/go-jump"
)

// RingScheme names how user keys are mapped to shards. It is stored in the
// ring section so that a future scheme (rendezvous hashing over named
// shards, say) is a new value, not a silent reinterpretation.
type RingScheme uint32

const (
	// RingJump is Jump consistent hash (Lamping & Veach 2014,
	// arXiv 1406.2294) of the 64-bit user key over shards 0..N-1. Growing
	// from N to N+1 shards moves only the 1/(N+1) of users that land on the
	// new shard, and the mapping needs no table: ring version, shard id and
	// shard count are the whole description.
	RingJump RingScheme = 1
)

func (s RingScheme) String() string {
	if s == RingJump {
		return "jump"
	}
	return fmt.Sprintf("scheme(%d)", uint32(s))
}

// maxShards bounds a ring's shard count: Jump returns an int32 bucket.
const maxShards = 1<<31 - 1

// ringSectionSize is the ring section's length (format version 3).
const ringSectionSize = 32

// RingInfo says which shard of which ring a file holds. A file of format
// version 2 reads as shard 0 of a ring of one (version 0).
type RingInfo struct {
	// Version grows with every change of the shard count (a reshard): files
	// of the same ring version partition one population.
	Version uint64
	// Shard is this file's shard id, 0 <= Shard < Shards.
	Shard int
	// Shards is the ring's shard count (at least 1).
	Shards int
	// Scheme maps user keys to shards (RingJump).
	Scheme RingScheme
}

// singleShard is the ring of a version 2 file and of a writer given none.
var singleShard = RingInfo{Version: 0, Shard: 0, Shards: 1, Scheme: RingJump}

// ShardOf returns the shard (0..shards-1) that owns user key under the Jump
// scheme. shards < 1 is treated as 1.
func ShardOf(key uint64, shards int) int {
	if shards <= 1 {
		return 0
	}
	return int(jump.Hash(key, shards))
}

// Owns reports whether key belongs to this ring's shard.
func (r RingInfo) Owns(key uint64) bool {
	return r.Shards <= 1 || ShardOf(key, r.Shards) == r.Shard
}

func (r RingInfo) String() string {
	return fmt.Sprintf("shard %d of %d (ring version %d, %s)", r.Shard, r.Shards, r.Version, r.Scheme)
}

// Validate checks the ring's fields.
func (r RingInfo) Validate() error {
	switch {
	case r.Scheme != RingJump:
		return fmt.Errorf("ring scheme %d is not supported (this build knows %d, jump)", uint32(r.Scheme), uint32(RingJump))
	case r.Shards < 1 || r.Shards > maxShards:
		return fmt.Errorf("ring shard count %d is out of range 1..%d", r.Shards, maxShards)
	case r.Shard < 0 || r.Shard >= r.Shards:
		return fmt.Errorf("ring shard id %d is out of range 0..%d", r.Shard, r.Shards-1)
	}
	return nil
}

// encodeRing lays out the ring section (docs/shard-format.md, kind 9).
func encodeRing(r RingInfo) []byte {
	b := make([]byte, ringSectionSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], r.Version)
	le.PutUint32(b[8:], uint32(r.Scheme))
	le.PutUint32(b[12:], uint32(r.Shard))
	le.PutUint32(b[16:], uint32(r.Shards))
	return b
}

func decodeRing(b []byte) (RingInfo, error) {
	if len(b) != ringSectionSize {
		return RingInfo{}, fmt.Errorf("ring section is %d bytes, want %d", len(b), ringSectionSize)
	}
	le := binary.LittleEndian
	if le.Uint32(b[20:]) != 0 || le.Uint64(b[24:]) != 0 {
		return RingInfo{}, fmt.Errorf("ring section reserved bytes are not zero")
	}
	r := RingInfo{
		Version: le.Uint64(b[0:]),
		Scheme:  RingScheme(le.Uint32(b[8:])),
		Shard:   int(le.Uint32(b[12:])),
		Shards:  int(le.Uint32(b[16:])),
	}
	return r, r.Validate()
}

// Package deliverylog is notifyd's per-message delivery log: one Record per
// final channel outcome (and, later, per engagement event), appended locally
// to an append-only, crash-safe segment log, looked up by user without the
// data lake (Find), and exported to Parquet files partitioned Hive style by
// date and hour for the lake (Exporter).
//
// # Segments
//
// A segment is a file NNNNNNNNNNNNNNNNNNNN.open while the Log writes it,
// renamed .seg when it is closed (rotated by size or age, or at Close) and
// .done once it was exported. A .open left by a crash is renamed .seg by the
// next Open. Every frame is
//
//	u32 LE length | u32 LE CRC-32C (Castagnoli) of the payload | payload
//
// The first frame of a segment is its header (kind 'H': daemon, shard,
// creation time); every other frame is one Record (kind 'R'), encoded with
// unsigned/signed varints and length-prefixed strings in a fixed field order.
// Readers ignore bytes after the fields they know, so fields can be added at
// the end without breaking old readers. The encoding is hand-rolled on
// encoding/binary's varints rather than a serialization library: the record
// is flat, the order fixed, and this costs no allocation per record and no
// dependency (a protobuf or msgpack codec would add code generation or
// reflection for twenty flat fields).
//
// A reader stops at the first frame that is short (a torn tail: a crash in
// the middle of a write) or whose length or checksum is wrong (corruption);
// it never returns a record that did not verify. ScanStats says which.
//
// # Writing without slowing the fan-out
//
// Append encodes records into a pooled buffer in the caller's goroutine (a
// few hundred nanoseconds per record, no allocation) and hands the buffer to
// one writer goroutine through a bounded queue; the writer drains everything
// queued, writes it with one system call per batch and syncs per the fsync
// policy: none (the OS flushes), interval (at most every FsyncInterval) or
// always (group commit: Append returns after the fsync that covers its
// records). A full queue blocks Append: a disk slower than the fan-out slows
// it down rather than silently losing records.
//
// # Bounded disk
//
// MaxDisk bounds every segment file together. When a write would pass it,
// the oldest exported (.done) segments are removed; if that is not enough,
// the new records are dropped, counted in
// notifyd_delivery_log_dropped_total{reason="disk_full"} and logged (at most
// once a minute). Dropping new records rather than deleting unexported old
// ones keeps what the lake has not seen yet, and dropping rather than
// blocking keeps a full disk from stopping deliveries: the log is an account
// of deliveries, never a reason to hold one.
package deliverylog

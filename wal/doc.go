// Package wal is VineQueue's disk tier: a segmented, memory-mapped
// write-ahead log of records, each a batch of items, with group commit,
// an acknowledged low-water mark and crash recovery that keeps every intact
// record and counts what it cannot keep.
//
// # What it owns
//
// One directory (created 0700; every file 0600), locked with flock for as
// long as a Log is open (a second Open, from any process, gets ErrLocked):
//
//	LOCK                         the flock target
//	ACK                          the acknowledged low-water mark, two CRC'd slots
//	00000000000000000001.wal     segments, named by their first record id
//	<segment>.corrupt            damaged segments moved aside by recovery
//	spare.tmp                    the next segment, allocated and zero-filled
//	                             ahead of time so a roll is only a rename
//
// The package does not import the queue: the root package encodes items
// with its Codec, frames them (AppendFrame/ForEachItem, or lets AppendItem
// do it), and maps this package's sentinel errors onto its own.
//
// # Format
//
// A segment is preallocated (fallocate, or ftruncate where unsupported;
// and, with Options.ZeroFill, zero-filled in the background, because
// the first sync of an fallocated ext4/xfs range also commits its extent
// conversion) and mapped read-write; it starts with a 32-byte header (magic "VINE",
// version 1, compression, first id, created size, CRC32C). Records follow,
// 8-byte aligned: id, timestamp, stored length, codec, kind, payload,
// CRC32C over all of it (see format.go for the byte layout). A payload is
// compressed with the Log's codec (snappy by default, lz4, or none) and
// stored raw when that does not make it smaller; each record names its own
// codec, so changing Options.Compression never strands old records.
//
// # Invariants
//
//   - Ids are issued consecutively from 1 and never reused: each segment
//     holds a contiguous id range, and the next segment starts where it
//     ends. A new Log appends to a fresh segment; recovered segments are
//     read-only.
//   - A record is published by storing its id last, in one aligned 8-byte
//     store, after its body and checksum. A process killed mid-append
//     therefore leaves a zero id, which reads as the end of the log, never as
//     damage. (If the id alone is lost but the checksum proves the record
//     complete with the id it must have, the record is kept.)
//   - Durable means fdatasync'd: Append and AppendItem return after an
//     fdatasync covering their record (unless Options.NoSync). Because the
//     mapping's dirty pages are the file's page cache, fdatasync on the fd is
//     msync(MS_SYNC) for the whole mapping, and it stays valid after the
//     segment is unmapped. New and removed files are followed by an fsync of
//     the directory. A failed fdatasync breaks the Log for good (the kernel
//     may already have dropped the pages): every later append returns it.
//   - The ack mark is the highest id with every id at or below it
//     acknowledged, whatever order Acks arrive in. It is written crash-safely
//     (alternating CRC'd slots + fdatasync) before any segment it covers is
//     deleted, so a crash can only make the next Open replay records again
//     (at-least-once), never skip one.
//   - A length field is checked against the limit and the bytes present
//     before anything is read or allocated; decompression is bounded the
//     same way. Readers never panic on bad input; a segment truncated under
//     a live mapping (SIGBUS) becomes ErrCorrupt instead of a crash.
//
// # Recovery
//
// Open scans every segment and verifies every checksum. Damage — a record
// with a bad checksum or impossible length, an id out of sequence, a valid
// record after a zero id, a file cut short, a damaged header — ends the
// segment's intact prefix. Recovery keeps the prefix, counts the ids lost
// after it in Stats.Corrupt (exactly, from the next segment's first id, or
// at least the damaged record when it is the last segment), copies the
// damaged file aside as <segment>.corrupt, logs what it did, and rewrites
// the segment as its intact prefix plus a "gap" record standing for the
// lost ids, so that the next Open finds nothing new to count. Missing
// segment files are bridged the same way. Open never fails because of
// damage. Replay then hands every intact record above the ack mark to its
// callback, in id order.
//
// # Concurrency
//
// All methods of Log are safe for concurrent use. Append, Write and
// AppendItem may be called from any number of goroutines: Append and Write
// compress on the caller's goroutine and copy into the mapping under one
// mutex; durability is a leader/follower group commit in which the first
// waiter runs fdatasync for everything written so far and the others wait
// for it. AppendItem goes further: a committer goroutine turns every item
// that arrived while it was busy into one record and one fdatasync, so a
// thousand concurrent callers cost about one record and one sync per
// round; AppendItems puts several items in one record for one wait, and
// AckItems acknowledges such a shared record once its last item is
// delivered. Ack is cheap (a mutex and an interval list); a background
// goroutine writes the mark at most every Options.AckInterval and deletes
// covered segments. Replay reads only the segments recovered by Open and
// may run while new records are appended; ReadRange reads any ids already
// written (a sparse index of every 64th record finds the start) through its
// own read-only mapping, also while appends go on. Close waits for everything in
// flight, syncs, writes the mark and releases the lock; the Log leaves no
// goroutine behind.
package wal

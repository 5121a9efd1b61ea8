// Package wal is VineQueue's disk tier: a segmented, memory-mapped
// write-ahead log of records, each a batch of items, with one group commit,
// acknowledgement per record (and per item) and crash recovery that keeps
// every intact record and counts exactly what it cannot keep.
//
// # What it owns
//
// One directory (created 0700; every file 0600), locked with flock for as
// long as a Log is open (a second Open, from any process, gets ErrLocked):
//
//	LOCK                         the flock target
//	ACK                          the acknowledgement log (below)
//	00000000000000000001.wal     segments, named by their first record id
//	<segment>.corrupt            damaged segments moved aside by recovery
//	ACK.corrupt, LOCK.corrupt    damaged or misplaced files moved aside
//	spare.tmp                    the next segment, allocated and zero-filled
//	                             ahead of time so a roll is only a rename
//	dlq/                         the dead-letter log (below), created 0700 by
//	                             the first dead letter:
//	dlq/ACK                      its tombstones, in the ack-log format
//	dlq/00000000000000000001.wal one file per dead letter, named by its id
//	dlq/*.corrupt                damaged dead letters moved aside
//
// The package does not import the queue: the root package encodes items
// with its Codec, frames them (AppendFrame/ForEachItem, or lets AppendItems
// do it), and maps this package's sentinel errors onto its own. A record's
// item count is its number of frames; its items are numbered from 0, and
// AckRange acknowledges them by range.
//
// # Format
//
// A segment is preallocated (fallocate, or ftruncate where unsupported;
// and, with Options.ZeroFill, zero-filled in the background, because
// the first sync of an fallocated ext4/xfs range also commits its extent
// conversion; a log that syncs its appends writes zeros a step or two
// ahead of its records instead, so that one group commit in a step's
// worth pays that conversion, not each) and written with pwrite (not through a shared mapping: an
// fdatasync write-protects the mapped pages it writes back, and the next
// store into a page it left faulted; it made every sync round slower); it
// starts with a 32-byte header (magic "VINE",
// version 4 with a random salt, or 3 with the key id when encrypted,
// compression, first id, created size, CRC32C). Records follow,
// 8-byte aligned: id, timestamp, stored length, codec, kind, item count,
// payload, CRC32C over all of it (see format.go for the byte layout).
// In a version 4 segment the id is stored masked and the CRC32C is keyed
// by the salt, which a producer never sees: item bytes laid out as a
// record, found by the look-ahead after damage, do not verify (but for a
// 2^-32 guess per forged record), and most fail at their id, before any
// checksum, so stepping over damage stays linear in the segment's size.
// Versions 1 and 2 (unsalted, in the clear) are still read, and a
// forgery in them can still pass after damage until they are drained
// (Inspect's SegmentReport.Unsalted); a repair writes version 4. The
// item count is a uint16 that saturates: 1 to 65,534 is exact, 0 (every
// record of a version 1 segment, which is still read) or 65,535 mean
// unknown until Replay counts the frames; the group commit closes a group
// before it would pass 65,534 items, so only one call of more items than
// that makes a record of unknown count. Counts known at Open let AckRange
// work before Replay and give Stats.ItemsPending. A payload is
// A keyed record (AppendKeyedItemsAt, WriteKeyed: items that each carry a
// key, such as the queue's EnqueueKey items) is marked by a flag in its
// kind byte, and its payload ends with its items' keys and their count,
// after the frames; ReplayRecords and ReadSegment hand the keys back, and
// every other reader sees the items alone. Records without the flag read
// as they always did (no keys). A payload is
// compressed with the Log's codec (snappy by default, lz4, or none) and
// stored raw when that does not make it smaller; each record names its own
// codec, so changing Options.Compression never strands old records.
//
// With Options.EncryptionKey, segments are written as version 3: the
// header names the key's id, and each record's compressed payload is
// sealed with AES-256-GCM (a fresh random nonce per record, the record
// header as additional data); dead letters likewise. The ack logs hold
// only ids and item ranges and stay in the clear. Checksums cover the
// ciphertext, so scans, damage accounting, Inspect and vinewal verify need
// no key; reading a payload does. Open refuses (ErrKey, before reading a
// record or changing anything) a directory with a file whose key id none
// of EncryptionKey and Options.DecryptionKeys has; files in the clear and
// files under older keys stay readable, so keys rotate without a drain
// (see format.go for the layout).
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
//   - Durable means fdatasync'd: Append and AppendItems return after an
//     fdatasync covering their record (unless Options.NoSync). A record is
//     laid out in a buffer and written with two pwrites, its id word last,
//     so that a process killed in between leaves a zero id (the end of the
//     log), as a record is published. New and removed files are followed by an fsync of
//     the directory. A failed fdatasync breaks the Log for good (the kernel
//     may already have dropped the pages): every later append returns it,
//     and so does every later Sync, which could not vouch for those pages.
//   - A record is acknowledged when all its items are done (AckRange) or
//     whole (Ack). Only unacknowledged records are replayed, each with the
//     items already done named, so the caller skips them; a segment whose
//     records are all acknowledged is deleted whatever older records wait.
//     An acknowledgement is durable in the ack log before the segment it
//     frees is deleted, and before recovery rewrites anything.
//   - A length field is checked against the limit and the bytes present
//     before anything is read or allocated; decompression is bounded the
//     same way. Readers never panic on bad input; a segment truncated under
//     a live mapping (SIGBUS) becomes ErrCorrupt instead of a crash.
//
// # Acknowledgement log
//
// ACK is a 32-byte header (magic "VACL", version 2, generation, CRC32C)
// followed by 24-byte entries, each with its own CRC32C: "ids lo..hi are
// acknowledged", "items [off, off+n) of record id are done" (an item
// entry), or "every id <= hi was durably written" (the written mark). See
// acklog.go for the byte layout; version 1 files, without item entries,
// are read. Item entries exist only for records partly acknowledged: in
// memory a record's done items are kept (as ranges) until all are done,
// and then the record gets an ordinary entry, which supersedes its item
// entries; a rewrite keeps the item entries of records not yet whole only.
// Open applies item entries to the records' counts, and acknowledges a
// record whose item entries cover it. Item entries are written as promptly
// as whole acks. Acks are coalesced in memory
// into ranges (consecutive ids make one entry) and written to the file
// within a millisecond (a write, no sync: safe from a process crash, since
// the page cache survives it), and made durable by one fdatasync at most
// every Options.AckInterval, each durable flush ending with a written mark
// (segments are deleted only on the strength of durable flushes); when the file has grown to several times the state
// it holds it is rewritten whole (temporary file, fdatasync, rename,
// directory fsync). Open rewrites it too. The two-slot file of earlier
// versions (a low-water mark) is read and converted.
//
// Torn writes. Every entry is true when written, and a reader keeps every
// entry that verifies, so a torn or damaged entry can only make an
// acknowledgement be forgotten — the record (or, for an item entry, those
// items) is replayed again, never skipped. An item entry names its record
// by id, and ids are never reused, so it cannot apply to another record;
// it raises the highest id known issued, as an ack does. Item entries
// never lead to a deletion: only whole-record entries do. A torn append leaves bad bytes only after the last good entry
// (harmless: nothing relied on that write yet); a bad entry followed by
// good ones is damage. Segments are deleted one flush late — only on the
// strength of entries that have another flush after them in the file — so
// damage confined to the file's last entries never concerns a deleted
// segment. A failed append is followed by a rewrite, never by an append
// after a partial entry.
//
// # Dead-letter log
//
// A batch the queue gives up on is kept by DeadLetter in dlq/, one file
// per dead letter: a segment header (first id = the dead letter's id,
// created size = the file's exact size) and exactly one record in the
// format above, whose payload (compressed like any record) is the
// metadata followed by the items, framed with AppendFrame:
//
//	[0]      metadata version (1 or 2)
//	varint   time given up on, Unix nanoseconds (0: unknown)
//	uvarint  Send attempts
//	uvarint  reason length (at most 4 KiB), reason bytes
//	uvarint  count of main-log record ids (at most 65,536), each a uvarint
//	         version 2 only:
//	uvarint  flags (bit 0: parked; other bits zero)
//	uvarint  count of item keys (0, or the item count; at most 65,536),
//	         each a uvarint
//	...      the items
//
// Version 2 carries what parking a key needs (DeadMeta.Keys and Parked):
// the key of each item of a keyed batch, and whether the items were parked
// behind a dead letter of their key rather than failed themselves. A dead
// letter with neither is written as version 1, so a directory whose queue
// never parks stays readable by releases that predate version 2; both
// versions are read.
//
// Dead-letter ids are issued consecutively from 1 and never reused, even
// after every dead letter is purged. dlq/ACK is an acknowledgement log
// (format above) in which "acknowledged" means purged and the written mark
// is the highest dead-letter id issued.
//
// Writing one: the file is written under <name>.tmp, fdatasync'd, renamed
// into place, the directory fsync'd, and the written mark appended to
// dlq/ACK and fdatasync'd; DeadLetter returns after all of it. A crash
// before the rename leaves a .tmp, which Open deletes (the caller never
// got an id, so it still holds its records); after the rename the dead
// letter is whole. DeadLetterGroup writes several dead letters (a batch
// too large for one record) all or none: every file is written and
// fdatasync'd under its .tmp name first, a failure deletes them all, and
// only then are they renamed, the directory fsync'd once and one written
// mark appended; a crash during the renames may keep part of the group,
// a duplicate of items the caller still holds. Purging: the tombstones are appended to dlq/ACK and
// fdatasync'd, then one more entry (a written mark) after them, and only
// then are the files unlinked: a crash in between leaves files that are
// tombstoned, which listings skip and Open deletes. The torn-write story
// is the ack log's: a lost tombstone brings a dead letter back, never the
// reverse. Requeueing hands each dead letter out (to the queue, or, in
// RequeueDeadLetters on a directory, to Append into the main log, durably)
// before it is purged, so a crash in between leaves the items both pending
// in the main log and dead-lettered: duplicated, never lost. The queue
// acknowledges the main-log records of a batch it dead-letters only after
// DeadLetter returns, with the same consequence.
//
// Open recovers dlq/ with the main log's plan: every id up to the highest
// issued is in an intact file, purged, damaged or lost. A lost one (a file
// emptied or deleted, the last one included) is counted in
// Stats.DeadCorrupt and tombstoned at once, so it is counted once. A
// damaged file stays where it is, live: DeadLetters (and ListDeadLetters)
// list it with its Damage, a requeue of all dead letters passes it, one
// naming it fails with ErrCorrupt, and it counts in DeadCorrupt at every
// Open until it is purged — moved aside, it would vanish from the list an
// operator acts on, and a queue parking keys would release the keys it may
// hold. (A file whose record is intact but followed by anything but zeros
// is cut to its record, the original moved aside as <name>.corrupt.)
// a dlq path that is not a directory is moved aside as dlq.corrupt. Dead
// letters share Options.MaxBytes with the segments: one budget for the
// directory. Stats.DeadLetters and DeadBytes count what is on disk.
// ListDeadLetters and ReadDeadLetter read a directory without the lock
// (for vinewal); PurgeDeadLetters and RequeueDeadLetters on a directory
// open it, running the recovery a queue would run at start-up.
//
// # Recovery
//
// Open scans every segment and verifies every checksum. Damage inside a
// segment — a record with a bad checksum or impossible length, an id out
// of sequence, a valid record after a zero id — is stepped over: the scan
// looks, at every 8-byte aligned offset after it, for the next data record
// that verifies with an id above the last intact one, and goes on from
// there, so only the records the damaged bytes held are lost (the ids
// between the two intact records). A file cut short (its header records
// the size it was created with) loses what was beyond the cut; a damaged
// header, the whole file. (Dead-letter files hold one record and stop at
// the first damage.) Item bytes are user data, so the look-ahead may meet
// a record forged inside a payload; an id is believed only where the bytes
// before it could have held the ids before it (every record takes at least
// 32 bytes, so in a segment never repaired a record at offset o has an id
// of at most the first id + (o-32)/32), which keeps a forged id from
// opening a hole of 2^64 ids or wrapping the next id to zero. Then every id up to the highest one known to have been issued (the
// written mark, the ids acknowledged, the ids found on disk and the ids
// segment names imply) is either in an intact record kept, acknowledged,
// or lost: Stats.Corrupt counts the lost ones exactly, whether a record
// was damaged, a segment cut (at a record boundary too), emptied,
// zero-filled or deleted, the first, a middle or the last one. Records
// lost that were acknowledged are no loss. The losses are then written to
// the ack log as acknowledged (counted once: the next Open finds nothing
// new), and only then is a damaged segment copied aside as
// <segment>.corrupt and rewritten as its intact records, with a gap record
// (format.go) standing for each run of ids lost between them, so that ids
// stay contiguous and the next Open finds no damage. If the ack log
// itself is missing, unreadable or damaged mid-file, ids missing from disk
// may have been acknowledged or lost: Open logs them as unknown, does not
// count them, and replays everything on disk. Records kept beyond the old
// written mark are fdatasync'd before the mark moves over them. Open never
// fails because of damage: what cannot be a log file (a directory named
// LOCK, ACK or like a segment) is moved aside too; ENOSPC in Open is
// ErrFull. Inspect (vinewal verify) computes the same plan without
// changing anything.
//
// # Concurrency
//
// All methods of Log are safe for concurrent use. There is one group
// commit (commit.go): a committer goroutine turns the items AppendItems
// callers add while it is busy into records (keyed items, from
// AppendKeyedItemsAt, into keyed records of their own: one open group of
// each, both written in the same round; with Options.KeyGroup a keyed
// group's calls are laid out by the group of their first key before it is
// written, each call's items together) — a group closes before an
// append would push it past Options.GroupBytes, so an append that cannot
// fit MaxRecord alone gets ErrTooLarge alone — and runs one fdatasync per
// round for those records and for every Append/Sync waiting on records
// already written (StartSync joins the same rounds without waiting: its
// PendingSync ends with one). After a round that woke several appenders,
// the committer yields for up to that round's length, while they keep
// coming back (a gap of 20µs ends it), so that callers appending in a
// loop share the next round instead of splitting into two that alternate
// (a Sync or StartSync waiting ends it at once). Write compresses on the caller's goroutine
// (compressors and their buffers are kept across GCs, up to a bound) and
// lays the record out and writes it under one mutex (with a key, it seals
// into the record's buffer: the seal authenticates the record's id, which
// is issued there). Ack and AckRange are cheap (a mutex, a
// per-segment array of item counts, a range set, and the done items of the
// records partly acknowledged); WriteAcks writes the fresh ones to the ack
// log at once on the caller's goroutine (the queue calls it once per
// finished batch, so a SIGKILL never forgets an acknowledged batch), a
// background goroutine writes any others within a millisecond, and another
// syncs it at most every
// Options.AckInterval and deletes segments — apart, so that a slow
// fdatasync never delays the fresh writes. Replay reads only the segments
// recovered by Open and may run while new records are appended; ReadRange reads any ids already
// written (a sparse index of every 64th record finds the start) through
// its own read-only mapping, also while appends go on. Close lets the
// committer finish, syncs, writes the ack log and releases the lock; the
// Log leaves no goroutine behind.
//
// Dead-letter writes and purges are serialized by their own mutex (taken
// before the Log's, never after); listings and reads copy the index under
// it and read the files without it. RequeueDeadLetters calls its callback
// with no lock held, so the callback may use the Log — DeadLetter
// included — and may block.
package wal

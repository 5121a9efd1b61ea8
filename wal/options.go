package wal

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Defaults of Options.
const (
	DefaultSegmentSize = 64 << 20
	DefaultMaxRecord   = 16 << 20
	DefaultGroupBytes  = 1 << 20
	DefaultAckInterval = 20 * time.Millisecond
	minSegmentSize     = 4096
)

// Options configures a Log. The zero value is usable: snappy, 64 MiB
// segments, 16 MiB records, no size limit, every append durable on return.
type Options struct {
	// Compression of record payloads; the zero value is Snappy.
	Compression Compression
	// SegmentSize is the preallocated size of each segment file (default
	// 64 MiB, at least 4 KiB).
	SegmentSize int64
	// MaxBytes bounds the bytes of all segment files and dead-letter
	// files together; a segment or dead letter that would cross it is not
	// created and the append or DeadLetter fails with ErrFull. 0: no bound
	// but the disk. When set it must be at least SegmentSize. A segment
	// being prepared in the background counts from the start; a roll that
	// only its reservation keeps from fitting waits for it instead of
	// failing, so an empty log's first append succeeds whenever MaxBytes
	// holds one segment.
	MaxBytes int64
	// MaxRecord bounds one record's payload before compression (default
	// 16 MiB, and never more than what fits in one segment). Larger
	// payloads or items fail with ErrTooLarge.
	MaxRecord int
	// GroupBytes bounds a group commit's record: an AppendItems that would
	// push the open group past it closes the group and starts the next
	// one (default 1 MiB, at most MaxRecord).
	GroupBytes int
	// AckInterval is the least time between two fdatasyncs of the ack log
	// (default 20 ms). Acks are written to the file within a millisecond,
	// so a process crash forgets at most that much of them; a machine crash
	// forgets at most AckInterval of them. Forgotten acks only mean
	// duplicates on replay.
	AckInterval time.Duration
	// NoSync makes Append and AppendItems return once the record is in
	// the page cache (safe against a process crash, not against power
	// loss); Sync makes everything written so far durable.
	NoSync bool
	// ZeroFill also writes zeros into each prepared segment, in the
	// background (see prepLoop): group commits into it are faster on file
	// systems with unwritten extents (ext4, xfs), but the 64 MiB of
	// background writes compete with the commits' fdatasyncs. Measured
	// here with 64 concurrent appenders: off, p99 3.4 ms and 150k items/s;
	// on, p99 25 ms and 70k items/s. Off by default. (Without it, a log
	// that syncs its appends still writes zeros a little ahead of its
	// records, which is what the group commits need.)
	ZeroFill bool
	// KeyGroup, when set, orders the items of each keyed record the group
	// commit builds (AppendKeyedItemsAt) by KeyGroup of their key: the
	// calls sharing a record are laid out by KeyGroup of their first key,
	// in arrival order within a group, each call's items together and in
	// order (AppendKeyedItemsAt's index says where). A reader that takes
	// items in groups of keys (the queue's keyed shards) then finds each
	// group's items of a record side by side, and acknowledges them with
	// one AckRange. Nil: arrival order.
	KeyGroup func(key uint64) uint8
	// Logger receives recovery reports and I/O failures; nil discards them.
	Logger *slog.Logger

	// EncryptionKey, when set, encrypts every file this Log writes that
	// holds item bytes — segments and dead letters — with AES-256-GCM
	// under this key (exactly KeySize bytes; use crypto/rand, and keep
	// it outside the directory). Each record is compressed, then sealed
	// with a fresh random nonce, its header authenticated with it; each
	// file names the key's id (KeyID) in its header. The ack logs hold
	// only ids and are not encrypted. Files written in the clear before
	// the key was set stay readable. Costs 28 bytes per record and one
	// AES-GCM pass over each record's compressed bytes when it is written
	// and when it is read back (see BenchmarkAppendSyncEncryption and
	// BenchmarkRecoveryEncryption). A key must not seal more than 2^32
	// records (random nonces): rotate well before that.
	EncryptionKey []byte
	// DecryptionKeys are older keys, for files written before a rotation:
	// Open reads a file under whichever key, EncryptionKey or one of
	// these, has its key id, and new files are sealed under EncryptionKey
	// only. To rotate without draining, set the new key as EncryptionKey
	// and the old one here; drop the old key once no file needs it
	// (vinewal inspect lists the key ids in use; files go as their records
	// are acknowledged and dead letters purged). A directory holding a
	// file whose key is in neither is refused by Open with ErrKey (wrapped
	// in ErrInvalidOptions), before anything is read or changed; so is a
	// key that is not KeySize bytes. DecryptionKeys without EncryptionKey
	// read encrypted files but write new ones in the clear.
	DecryptionKeys [][]byte

	// allocate replaces allocateFile in tests (to simulate ENOSPC).
	allocate func(f *os.File, size int64) error
	// noSpare: do not prepare a segment at Open (Repair never appends).
	noSpare bool
	// syncFile replaces fdatasync of segments in tests (to simulate EIO).
	syncFile func(f *os.File) error
	// gatherIdle replaces the group commit's gatherIdle in tests.
	gatherIdle time.Duration
	// keys is EncryptionKey and DecryptionKeys, prepared by withDefaults.
	keys *keyring
	// fault, in tests, returns an error to inject at the named step of
	// Open (see Log.recover), e.g. ENOSPC.
	fault func(step string) error
}

// inject returns the error a test injects at step, if any.
func (o Options) inject(step string) error {
	if o.fault == nil {
		return nil
	}
	return o.fault(step)
}

func (o Options) withDefaults() (Options, error) {
	if o.Compression > NoCompression {
		return o, fmt.Errorf("%w: Compression %d", ErrInvalidOptions, o.Compression)
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < minSegmentSize || o.SegmentSize > 1<<40 {
		return o, fmt.Errorf("%w: SegmentSize %d outside [%d, 1 TiB]", ErrInvalidOptions, o.SegmentSize, minSegmentSize)
	}
	if int64(int(o.SegmentSize)) != o.SegmentSize {
		return o, fmt.Errorf("%w: SegmentSize %d does not fit the address space", ErrInvalidOptions, o.SegmentSize)
	}
	if o.MaxBytes < 0 || (o.MaxBytes > 0 && o.MaxBytes < o.SegmentSize) {
		return o, fmt.Errorf("%w: MaxBytes %d below SegmentSize %d", ErrInvalidOptions, o.MaxBytes, o.SegmentSize)
	}
	keys, err := newKeyring(o.EncryptionKey, o.DecryptionKeys)
	if err != nil {
		return o, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	o.keys = keys
	fit := o.SegmentSize - segmentHeaderSize - recordOverhead - 8 - int64(keys.overhead())
	if fit > 1<<32-1 {
		fit = 1<<32 - 1
	}
	if o.MaxRecord < 0 || int64(o.MaxRecord) > fit {
		return o, fmt.Errorf("%w: MaxRecord %d: a record must fit in one segment (at most %d)", ErrInvalidOptions, o.MaxRecord, fit)
	}
	if o.MaxRecord == 0 {
		o.MaxRecord = int(min(int64(DefaultMaxRecord), fit))
	}
	if o.GroupBytes <= 0 {
		o.GroupBytes = DefaultGroupBytes
	}
	o.GroupBytes = min(o.GroupBytes, o.MaxRecord)
	if o.AckInterval < 0 {
		return o, fmt.Errorf("%w: AckInterval %v", ErrInvalidOptions, o.AckInterval)
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.allocate == nil {
		o.allocate = allocateFile
	}
	if o.syncFile == nil {
		o.syncFile = fdatasync
	}
	if o.gatherIdle <= 0 {
		o.gatherIdle = gatherIdle
	}
	return o, nil
}

// readLimit bounds what a reader accepts as one record's stored payload:
// the configured limit, but never below 64 MiB, so records written under a
// larger MaxRecord stay readable after the option is lowered, plus what a
// seal adds (MaxRecord bounds the payload before sealing, and a record may
// be sealed under a key this Log only decrypts with).
func (o Options) readLimit() int { return max(o.MaxRecord, 64<<20) + sealOverhead }

package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/wal"
)

// maxCollectors bounds Config.Collectors: far more than any machine's Ps.
const maxCollectors = 1024

// SendFunc delivers one batch. It must not modify batch nor its items (the
// queue may be writing them to the WAL meanwhile: Periodic mode writes a
// batch still in Send at a checkpoint), and must not keep batch (or any
// item's backing memory that the queue owns) after it returns: the queue
// reuses the slice. It may read them until it returns.
// A non-nil error makes the queue retry the batch according to Config.Retry.
// A panic in SendFunc is recovered and treated as an error.
type SendFunc[T any] func(ctx context.Context, batch []T) error

// Codec encodes items for the WAL. Built in for []byte and string.
type Codec[T any] interface {
	// Append appends the encoding of v to dst and returns the extended slice.
	Append(dst []byte, v T) ([]byte, error)
	// Decode decodes one item from exactly the bytes Append produced for it.
	// It must not retain src.
	Decode(src []byte) (T, error)
}

// Policy is what the queue does when the memory governor reaches its hard level.
type Policy int

const (
	// PolicyDefault is Spill when a WAL is configured and Reject otherwise.
	PolicyDefault Policy = iota
	// Reject refuses new items with ErrFull.
	Reject
	// Spill writes what memory cannot hold to the WAL.
	Spill
	// Block makes Enqueue wait until the level falls below Soft, or Stop.
	Block
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case PolicyDefault:
		return "default"
	case Reject:
		return "reject"
	case Spill:
		return "spill"
	case Block:
		return "block"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Level is the memory governor's pressure level.
type Level int

const (
	LevelNormal Level = iota // below Soft
	LevelSoft                // Soft..Hard: warn and delay the slow path
	LevelHard                // at or above Hard: apply the Policy
)

// String returns the level's name (the governor's names: the two
// enumerations are numbered alike, see levelOf).
func (l Level) String() string { return governor.Level(l).String() }

// MemoryConfig bounds the memory the queue holds.
type MemoryConfig struct {
	// Limit in bytes. 0 detects it: the tightest of the cgroup v2 and v1
	// limits (walked to the root), GOMEMLIMIT and physical memory,
	// re-read every second (vertical autoscaling changes it). With 0 the
	// whole process is weighed against it (Measure); an explicit Limit is
	// the queue's own budget unless Measure says otherwise.
	Limit int64
	// Soft and Hard are fractions of Limit (defaults 0.80 and 0.95), with
	// hysteresis. From Soft, calls past the fast path wait a short delay
	// that grows with pressure and a warning is logged (rate-limited); at
	// Hard the Policy applies.
	Soft, Hard float64
	// Policy is what intake does at the hard level: Reject (ErrFull),
	// Block (wait until below Soft, or Stop), or Spill (write to the WAL;
	// ErrWALFull when it cannot take more). The default is Spill with a WAL
	// and Reject without one. What the queue holds stays within Hard plus
	// a bound stated in internal/engine/admit.go: the rings' items, one
	// item per call admitted concurrently, and one batch each from the
	// replay, the read-back of spilled items and the release of parked
	// keys. Under Spill, once a spill fails (the WAL is full) intake gets
	// ErrWALFull until memory falls below Hard, even if the WAL has room
	// again sooner: what the failed spills left in memory must go first.
	// An item too large for a WAL record that only its encoding shows to
	// be so (see Codec) does not fail a spill: it alone is given up.
	Policy Policy
	// Measure is what is weighed against Limit. The default, MeasureAuto,
	// protects the process: with Limit 0 the levels follow the whole Go
	// runtime's memory against the detected (container or machine) limit,
	// so an application whose own heap grows toward the limit makes the
	// queue slow, refuse or spill its intake before the kernel kills the
	// process; with an explicit Limit, the queue's own bytes (by SizeOf)
	// are weighed against it, a budget for the queue alone.
	Measure Measure
	// OnLevelChange, when set, is called each time the level changes, in
	// order, on the governor's own goroutine: never on an Enqueue, never
	// while the queue holds a lock, so it may log, lock or block (a hook
	// that blocks delays only later announcements; changes that pile up
	// behind it are merged, still chaining from → to).
	OnLevelChange func(from, to Level)
}

// Measure chooses what the memory governor weighs against its limit.
type Measure int

const (
	// MeasureAuto is MeasureProcess when Memory.Limit is 0 and MeasureQueue
	// when it is set.
	MeasureAuto Measure = iota
	// MeasureProcess weighs the Go runtime's memory (everything it has
	// mapped minus the heap returned to the OS, sampled every 50 ms and
	// moved by the queue's own bytes in between). Use it when the limit
	// is shared with the application, as a container's is. Memory the Go
	// runtime does not manage (cgo) is not seen; mapped WAL pages are page
	// cache and are not counted.
	MeasureProcess
	// MeasureQueue weighs only the bytes the queue holds (by SizeOf). Use
	// it with an explicit Limit that is the queue's own budget.
	MeasureQueue
)

// String returns the measure's name.
func (m Measure) String() string { return m.governor().String() }

// governor converts m: the two enumerations are numbered alike
// (TestLevelNumbering pins it).
func (m Measure) governor() governor.Measure { return governor.Measure(m) }

// WALMode selects what the write-ahead log guarantees. Every mode accepts
// items while a backlog found at New replays beside them.
//
//	mode      a SIGKILL loses                     a full disk
//	Overflow  what was in memory, not spilled     ErrWALFull to producers at Hard
//	Periodic  at most SyncInterval of items       ErrWALFull on the next call
//	Sync      nothing accepted                    ErrWALFull on the call
//
// In every mode a crash can duplicate only items of batches not finished
// yet: at most one per sender (Workers), in Send or past it and not yet
// acknowledged in the WAL (they replay at the next New).
type WALMode int

const (
	// WALModeDefault is Periodic when WALConfig.Dir is set: a user who
	// names a directory gets crash durability without asking twice.
	WALModeDefault WALMode = iota
	// Overflow writes only what the memory governor spills at its hard
	// level (Policy Spill); spills are fsynced. Items in memory at a crash
	// are lost. Use it as a disk-backed extension of memory when crashes
	// may lose data but bursts must not be refused.
	Overflow
	// Periodic checkpoints every SyncInterval: it writes every accepted
	// item not delivered yet (what the rings and keyed shards hold, and
	// the batches waiting for a sender, in Send or retrying), and fsyncs:
	// every accepted item is on disk within SyncInterval unless delivered
	// first, and a crash loses at most the items accepted in the last
	// SyncInterval (plus the time one checkpoint takes, which a slow disk
	// stretches). A batch delivered before a checkpoint finds it is never
	// written, so a sink that keeps up costs the WAL little. A batch
	// written while in Send is acknowledged once Send returns nil.
	// A Stop whose ctx can end writes, as it begins, what a checkpoint
	// would then (keyed items waiting behind their key's batch in Send
	// included), so that running out of time leaves every undelivered
	// item in the WAL with nothing to write past the deadline; Close
	// writes only what checkpoints do.
	// Stats.DurableThrough says what is safe now. Enqueue stays on the
	// fast path.
	Periodic
	// Sync makes each Enqueue, EnqueueBatch and EnqueueKey return only once
	// its items are fsynced; concurrent calls share one record and one
	// fdatasync (group commit). Nothing accepted is lost to a crash; each
	// call costs a disk sync (hundreds of microseconds), so it needs many
	// concurrent producers, or EnqueueBatch, for throughput.
	Sync
)

// String returns the mode's name.
func (m WALMode) String() string {
	switch m {
	case WALModeDefault:
		return "default"
	case Overflow:
		return "overflow"
	case Periodic:
		return "periodic"
	case Sync:
		return "sync"
	}
	return fmt.Sprintf("WALMode(%d)", int(m))
}

// Compression of WAL records. A record is stored uncompressed whenever
// compressing does not make it smaller.
type Compression int

const (
	Snappy        Compression = iota // snappy block format (the default): fast both ways
	LZ4                              // lz4 block format: better ratio, slower to write
	NoCompression                    // stored as encoded: for items that do not compress
)

// String returns the compression's name (the WAL's names: the two
// enumerations are numbered alike, TestLevelNumbering pins it).
func (c Compression) String() string {
	if c < 0 || c > NoCompression {
		return fmt.Sprintf("Compression(%d)", int(c))
	}
	return wal.Compression(c).String()
}

// WALConfig configures the disk tier. The zero value (no Dir) is memory
// only.
type WALConfig struct {
	// Dir is the WAL directory (created 0700; files 0600), locked for as
	// long as the Queue is open: a second Queue on it gets ErrLocked. ""
	// means memory only, and then Mode must be left unset. Whatever the
	// directory holds unacknowledged at New is replayed.
	Dir string
	// Mode is what the WAL guarantees (see WALMode); unset with a Dir it is
	// Periodic. Overflow, Periodic or Sync without Dir is ErrInvalidConfig.
	Mode WALMode
	// Compression of records; Snappy by default. Changing it between runs
	// is safe: each record names its codec.
	Compression Compression
	// SegmentSize is the size of each segment file, preallocated (default
	// 64 MiB). The largest record is a little under a segment.
	SegmentSize int64
	// MaxBytes bounds the WAL's files (0: only the disk). When a write
	// would cross it, Sync-mode calls get ErrWALFull, Periodic mode reports
	// it on the next call, and Overflow mode stops spilling (producers get
	// ErrWALFull at the hard level). At least SegmentSize when set. The
	// segments being written count in full, so the WAL holds at most
	// MaxBytes/SegmentSize of them: with exactly SegmentSize, the first
	// write after New always succeeds (it takes the segment prepared in the
	// background, waiting for it if need be), and a write that needs a
	// second segment gets ErrWALFull until the first is all delivered and
	// removed. Two segments or more let the next one be prepared while
	// the current one fills.
	MaxBytes int64
	// SyncInterval is Periodic mode's checkpoint period (default 1s): the
	// bound on what a crash loses. Shorter costs more fsyncs.
	SyncInterval time.Duration
	// EncryptionKey encrypts the WAL at rest: every file that holds item
	// bytes — segments and dead letters — is sealed with AES-256-GCM
	// under this key (exactly 32 bytes: generate it with crypto/rand and
	// keep it outside Dir, in a secret store). Items are compressed, then
	// sealed, a fresh random nonce per record, the record's header
	// authenticated with it; the acknowledgement logs hold only ids and
	// stay in the clear. Use it when the disk under Dir is not trusted
	// with the events (shared volumes, backups, disks that leave the
	// machine). A WAL written in the clear stays readable after a key is
	// set; files written under a key need it (or DecryptionKeys) at every
	// New: a missing, wrong or short key is ErrInvalidConfig, before
	// anything is replayed or changed. vinewal needs the key file too
	// (-key-file; see cmd/vinewal). Cost: 28 bytes per record, and one
	// AES-GCM pass over each record's compressed bytes when written and
	// when replayed (measured by the wal package's
	// BenchmarkAppendSyncEncryption and BenchmarkRecoveryEncryption).
	// Rotate the key well before it has sealed 2^32 records.
	EncryptionKey []byte
	// DecryptionKeys are older keys, for WAL files written before a key
	// rotation: they are read under whichever key has the id their header
	// names, while new files are sealed under EncryptionKey only. To rotate
	// without draining, move the old key here and set the new one as
	// EncryptionKey; drop the old key once `vinewal inspect` no longer
	// lists its key id (files go as their items are delivered and dead
	// letters purged). Each must be 32 bytes.
	DecryptionKeys [][]byte
}

// RetryPolicy bounds the retries of a failed Send: MaxAttempts (default 5;
// 1 means no retry), InitialBackoff (10ms) growing by Multiplier (2) up to
// MaxBackoff (5s), each wait spread by ±Jitter (0.2; negative: none). It is
// batch.RetryPolicy, where the retry loop lives; the fields are documented
// there.
type RetryPolicy = batch.RetryPolicy

// RetryForever as RetryPolicy.MaxAttempts retries a failing batch until
// Stop runs out of time, holding a sender (and, for EnqueueKey, its key's
// shard) meanwhile. Use it only for a sink whose failures always pass; by
// default a batch that exhausts its attempts is dead-lettered (with a WAL)
// and handed to OnDrop.
const RetryForever = batch.Forever

// Config configures a Queue. Only Send is required.
type Config[T any] struct {
	// Send delivers one batch (required). It is called by Workers
	// goroutines at once, never with an empty batch; it must not modify
	// the batch or its items (it may read them until it returns: the queue
	// may write them to the WAL meanwhile), and must not keep the slice
	// after it returns. nil means delivered: the batch is counted,
	// acknowledged in the WAL and never sent again. An error is retried per
	// Retry; Permanent(err) stops the retries at once. Send should honour
	// its ctx: Stop cancels it when its own ctx expires (a Send that does
	// not is given up on, not waited for; see Stop).
	Send SendFunc[T]
	// BatchSize is how many items a batch holds when the queue is under
	// load (default 1000, kept within MinBatchSize and MaxBatchSize when
	// only those are set; with Adaptive, where the search starts). Every
	// intake path fills batches to it: Enqueue's rings, EnqueueKey's
	// shards (a batch gathers several shards' items) and Sync mode's
	// commit groups alike. Larger batches amortise Send's cost; smaller
	// ones lower latency at low load (FlushInterval bounds that anyway).
	BatchSize int
	// MinBatchSize is Adaptive's floor (default 1).
	MinBatchSize int
	// MaxBatchSize is Adaptive's ceiling and the most items any batch
	// holds, replayed and read-back batches included (default
	// max(BatchSize, 10000)).
	MaxBatchSize int
	// Adaptive sizes batches by measured Send latency, searching for the
	// size with the best items per second (bounded by Min/MaxBatchSize).
	// Use it when the sink's cost per batch is unknown or varies.
	Adaptive bool
	// FlushInterval bounds how long an accepted item waits before it is
	// in a batch handed to Send (default 5s, at least 2ms): batches go
	// out when they hold BatchSize items, and a partial batch is cut on a
	// tick every FlushInterval/2, for every intake path (Enqueue,
	// EnqueueKey, Sync mode); EnqueueKey's items go into a partial batch only once they
	// have waited a tick, so that a steady keyed flow fills its batches
	// for up to a whole FlushInterval (a keyed item also waits for its
	// shard's batch in flight, if any, to finish, and its tick counts
	// from then). It is
	// the latency at low load, as Kafka's linger is: set it to tens of
	// milliseconds where an event must reach the sink quickly when traffic
	// is light. An idle queue wakes only for that tick.
	FlushInterval time.Duration
	// Workers is the number of concurrent Send calls (default 1). With a
	// sink that pipelines (Kafka), several Workers keep several batches
	// in flight. Per-key order holds with any number (a key's batches go
	// one at a time); Enqueue's items have no order across batches.
	Workers int
	// Collectors is the number of central shards, each drained by its own
	// collector goroutine that cuts the batches Enqueue and EnqueueBatch
	// fill (default: one per four Ps, GOMAXPROCS at New, at least one; at
	// most 1024).
	// A P always hands its rings to the same shard (P id modulo
	// Collectors), so delivery grows with the cores instead of stopping at
	// what one collector drains: about a billion 8-byte items a second, or
	// tens of millions of 100-byte ones (README, "The hot path"). Raise it
	// when items are large and many cores produce, and profiles show the
	// collector busy; more shards than Ps only add idle goroutines. Each
	// shard cuts its own partial batch on the FlushInterval tick, so at low
	// load batches are smaller with more shards; at steady load they fill.
	// The Send calls stay bounded by Workers, which the shards share.
	// EnqueueKey, the Sync mode's intake, replay and spilled batches go
	// through the first shard only (per-key order needs one owner; the Sync
	// mode has no rings, so one shard).
	Collectors int
	// RingSize is the number of slots in each P's ring (a power of two
	// from 2 to 2^24, default 1024). A ring is handed off when it holds BatchSize items
	// (or is full); each P has at most three, and their slots are charged
	// to the memory governor whole.
	RingSize int
	// Memory bounds what the queue holds and says what happens at the
	// limit (see MemoryConfig).
	Memory MemoryConfig
	// WAL is the disk tier; the zero value is memory only (see WALConfig
	// and WALMode for what each mode keeps across a crash).
	WAL WALConfig
	// Codec encodes items for the WAL; needed with a WAL unless T is
	// []byte or string (built in). Its errors refuse the item concerned
	// (Sync mode, at the call) or keep it in memory only (Periodic, at the
	// write; counted and logged). An item the WAL cannot take when a spill
	// writes it (Policy Spill, at the hard level) — its Codec fails, or its
	// encoding is over the record limit though SizeOf let it in — is given
	// up instead: OnDrop, with that error or one matching ErrTooLarge, and
	// Stats.Dropped. Memory cannot keep it there, and the rest of its batch
	// spills.
	Codec Codec[T]
	// SizeOf is what an item weighs for the memory governor. The default
	// is its in-memory size plus the bytes behind its strings and []byte
	// (fields too, nested structs and arrays included); New refuses, naming
	// SizeOf, a T that holds pointers, maps, interfaces, chans, funcs or
	// other slices, which it cannot size. Set it for such types; it is
	// called off the Enqueue fast path.
	SizeOf func(T) int
	// Retry bounds the retries of a failed Send (default: 5 attempts,
	// backoff from 10ms to 5s with jitter). RetryForever retries until
	// Stop runs out of time, holding a sender (and a key's shard) meanwhile.
	Retry RetryPolicy
	// OnDrop receives every batch the queue gives up on, with the reason:
	// Retry exhausted or a Permanent error (with a WAL the batch is also
	// kept in the dead-letter log first), and what Stop's deadline leaves
	// undelivered that is not in the WAL: everything without one, Overflow
	// mode's unspilled items (a copy, if a Send still holds the batch).
	// What is in the WAL stays there instead (Stats.LeftOnDisk). It is called on a sender goroutine, one batch at a time per
	// sender, must not keep the slice, and should be quick: it delays that
	// sender's next batch. A panic in it is recovered and logged. Items
	// refused at the call (an error from Enqueue) never reach it: the
	// caller has them.
	//
	// When Stop runs out of time, the batches still waiting are merged and
	// handed over in calls of up to 4096 items, from a goroutine of Stop's.
	// What a user can rely on: every given-up item is counted in
	// Stats.Dropped (so Buffered is 0) before Stop returns, whatever OnDrop
	// does; and Stop returns only after every OnDrop call has returned, as
	// long as each call returns within 50 ms of the previous one. A call
	// that takes longer makes Stop stop waiting (it is past its deadline
	// already): that call and the ones after it then run after Stop has
	// returned.
	OnDrop func(batch []T, reason error)
	// ParkKeys holds back a key behind its dead letter: when a batch of
	// EnqueueKey items is dead-lettered, the later items of its keys are
	// parked (kept in the WAL's dead-letter log, not sent) until that dead
	// letter is requeued or purged (RequeueDeadLetters, PurgeDeadLetters,
	// or `vinewal dlq` on a stopped queue's directory, which refuses what it
	// cannot release in key order: a keyed dead letter while the main log
	// holds undelivered items, a parked one alone), while every other
	// key flows; then the parked items are delivered in their key's order,
	// after the requeued dead letter's items (requeue) or at once (purge).
	// Per-key order then survives a poison item. Use it when a key's order
	// matters more than its latency: one bad event of an account must not
	// let the account's later events overtake it.
	//
	// It needs a WAL (New returns ErrInvalidConfig naming ParkKeys without
	// WAL.Dir). Parked items are on disk only: they hold no memory, so a
	// parked key never brings the queue to its memory limit, and they share
	// WAL.MaxBytes with the segments and dead letters; a parked item that
	// cannot be written (the WAL is full) is handled like a dead letter that
	// cannot be written (left in the main log, or handed to OnDrop); one
	// left in the main log holds its key's later items there behind it,
	// undelivered and unparked, for the rest of that queue's life. A
	// keyed batch that fails for good while the WAL has no room for its
	// dead letter waits for room (tried again as acknowledged segments are
	// freed) while other batches are under way whose delivery can free
	// some, off its sender, with its keys' later items behind it (and
	// those of keys sharing its shards: they stay in their shards, as
	// behind a Send that has not returned); its items count as Buffered
	// meanwhile and Flush waits for them. Once written it is a dead letter
	// like any other and its keys park. If Stop finds it still waiting, if
	// nothing else is under way (no room will come), or if the write failed
	// for another reason than a full WAL, it is left in
	// the main log (Stats.LeftOnDisk), and so are its keys' later items,
	// undelivered, for the rest of that queue's life, so that the next New
	// replays them in their order (a later item not on disk yet that the
	// full WAL cannot take either goes to OnDrop, not ahead of its key's
	// failed one).
	// Parking survives a restart: New parks again every key with a dead
	// letter, and delivers the parked items of a key whose dead letter was
	// requeued or purged while it was stopped, after the replay. A dead
	// letter found damaged stays listed (DeadLetter.Damaged, counted in
	// Stats.Corrupt) and holds every key parked after it, as it may be
	// their failed one, until it is purged. Stats counts
	// Parked, ParkedItems and ParkedKeys. Items of Enqueue and EnqueueBatch
	// have no key and never park. Keyed items that a crash or a Stop out of
	// time left in the main log replay with their key (the WAL keeps it):
	// those of a parked key are parked then, behind its dead letter. (Items
	// written by releases before the WAL kept keys replay unkeyed.)
	ParkKeys bool
	// Logger receives the queue's warnings and errors (a level change, a
	// WAL failure, a dropped batch); nil discards them. Never the global
	// logger, and never called while an Enqueue is pinned to its P.
	Logger *slog.Logger
}

// engine validates c, fills in its defaults and converts it for the
// engine. The enumerations convert by number: they are numbered alike
// (TestLevelNumbering pins it).
func (c Config[T]) engine() (engine.Config[T], error) {
	if err := c.fill(); err != nil {
		return engine.Config[T]{}, err
	}
	codec := c.Codec
	if codec == nil && c.WAL.Dir != "" {
		var err error
		if codec, err = builtinCodec[T](); err != nil {
			return engine.Config[T]{}, err
		}
	}
	return engine.Config[T]{
		Send:          c.Send,
		BatchSize:     c.BatchSize,
		MinBatchSize:  c.MinBatchSize,
		MaxBatchSize:  c.MaxBatchSize,
		Adaptive:      c.Adaptive,
		FlushInterval: c.FlushInterval,
		Workers:       c.Workers,
		Collectors:    c.Collectors,
		RingSize:      c.RingSize,
		Memory: engine.MemoryConfig{
			Limit:         c.Memory.Limit,
			Soft:          c.Memory.Soft,
			Hard:          c.Memory.Hard,
			Policy:        engine.Policy(c.Memory.Policy),
			Measure:       c.Memory.Measure.governor(),
			OnLevelChange: levelHook(c.Memory.OnLevelChange),
		},
		WAL: engine.WALConfig{
			Dir:          c.WAL.Dir,
			Mode:         engine.WALMode(c.WAL.Mode),
			Compression:  wal.Compression(c.WAL.Compression),
			SegmentSize:  c.WAL.SegmentSize,
			MaxBytes:     c.WAL.MaxBytes,
			SyncInterval: c.WAL.SyncInterval,

			EncryptionKey:  c.WAL.EncryptionKey,
			DecryptionKeys: c.WAL.DecryptionKeys,
		},
		Codec:    codec,
		SizeOf:   c.SizeOf,
		Retry:    c.Retry,
		OnDrop:   c.OnDrop,
		ParkKeys: c.ParkKeys,
		Logger:   c.Logger,
	}, nil
}

// levelHook adapts the user's OnLevelChange to the governor's levels.
func levelHook(f func(from, to Level)) func(from, to governor.Level) {
	if f == nil {
		return nil
	}
	return func(from, to governor.Level) { f(levelOf(from), levelOf(to)) }
}

// levelOf converts the governor's level: the two enumerations are numbered
// alike (TestLevelNumbering pins it).
func levelOf(l governor.Level) Level { return Level(l) }

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// fill validates the config and applies defaults.
func (c *Config[T]) fill() error {
	if c.Send == nil {
		return invalid("Send", "required")
	}
	if c.BatchSize < 0 {
		return invalid("BatchSize", "%d < 0", c.BatchSize)
	}
	if c.MinBatchSize < 0 {
		return invalid("MinBatchSize", "%d < 0", c.MinBatchSize)
	}
	if c.MaxBatchSize < 0 {
		return invalid("MaxBatchSize", "%d < 0", c.MaxBatchSize)
	}
	if c.BatchSize == 0 {
		// The default keeps within the bounds the caller did set, so that
		// setting only MaxBatchSize 500 (or only MinBatchSize 2000) is
		// not refused for a BatchSize the caller never chose.
		c.BatchSize = 1000
		if c.MaxBatchSize > 0 {
			c.BatchSize = min(c.BatchSize, c.MaxBatchSize)
		}
		c.BatchSize = max(c.BatchSize, c.MinBatchSize)
	}
	if c.MinBatchSize == 0 {
		c.MinBatchSize = 1
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = max(c.BatchSize, 10000)
	}
	if c.MinBatchSize > c.MaxBatchSize {
		return invalid("MinBatchSize", "%d > MaxBatchSize %d", c.MinBatchSize, c.MaxBatchSize)
	}
	if c.BatchSize > c.MaxBatchSize {
		return invalid("BatchSize", "%d > MaxBatchSize %d", c.BatchSize, c.MaxBatchSize)
	}
	if c.BatchSize < c.MinBatchSize {
		return invalid("BatchSize", "%d < MinBatchSize %d", c.BatchSize, c.MinBatchSize)
	}
	if c.FlushInterval < 0 {
		return invalid("FlushInterval", "%v < 0", c.FlushInterval)
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 5 * time.Second
	}
	if c.FlushInterval < 2*time.Millisecond {
		return invalid("FlushInterval", "%v < 2ms", c.FlushInterval)
	}
	if c.Workers < 0 {
		return invalid("Workers", "%d < 0", c.Workers)
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.Collectors < 0 || c.Collectors > maxCollectors {
		return invalid("Collectors", "%d is not in [0, %d]", c.Collectors, maxCollectors)
	}
	if c.RingSize == 0 {
		c.RingSize = 1024
	}
	if c.RingSize < 2 || c.RingSize&(c.RingSize-1) != 0 || c.RingSize > 1<<24 {
		return invalid("RingSize", "%d is not a power of two in [2, 2^24]", c.RingSize)
	}
	var err error
	if c.Retry, err = fillRetry(c.Retry, "Retry"); err != nil {
		return err
	}
	if err := c.Memory.fill(); err != nil {
		return err
	}
	switch {
	case c.WAL.Dir == "" && c.WAL.Mode != WALModeDefault:
		return invalid("WAL.Dir", "required by Mode %v (without a Dir the queue is memory only)", c.WAL.Mode)
	case c.WAL.Mode < WALModeDefault || c.WAL.Mode > Sync:
		return invalid("WAL.Mode", "unknown %v", c.WAL.Mode)
	case c.WAL.Dir != "" && c.WAL.Mode == WALModeDefault:
		c.WAL.Mode = Periodic
	case c.WAL.Dir == "" && (c.WAL.EncryptionKey != nil || c.WAL.DecryptionKeys != nil):
		return invalid("WAL.EncryptionKey", "set without a Dir (a memory-only queue writes nothing to encrypt)")
	}
	switch {
	case c.ParkKeys && c.WAL.Dir == "":
		return invalid("ParkKeys", "needs a WAL (WAL.Dir): parked items are kept in its dead-letter log")
	case c.Memory.Policy == Spill && c.WAL.Dir == "":
		return invalid("Memory.Policy", "Spill needs a WAL (WAL.Dir)")
	case c.Memory.Policy == PolicyDefault && c.WAL.Dir != "":
		c.Memory.Policy = Spill
	case c.Memory.Policy == PolicyDefault:
		c.Memory.Policy = Reject
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// fillRetry applies batch's defaults and validation to r, naming a bad
// field as "<name>.<Field>".
func fillRetry(r RetryPolicy, name string) (RetryPolicy, error) {
	if err := r.Validate(); err != nil {
		var pe *batch.PolicyError
		if errors.As(err, &pe) {
			return r, invalid(name+"."+pe.Field, "%s", pe.Reason)
		}
		return r, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, name, err)
	}
	return r.WithDefaults(), nil
}

func (m *MemoryConfig) fill() error {
	if m.Limit < 0 {
		return invalid("Memory.Limit", "%d < 0", m.Limit)
	}
	if m.Soft == 0 {
		m.Soft = 0.80
	}
	if m.Hard == 0 {
		m.Hard = 0.95
	}
	if m.Soft <= 0 || m.Soft >= 1 {
		return invalid("Memory.Soft", "%v not in (0, 1)", m.Soft)
	}
	if m.Hard <= m.Soft || m.Hard > 1 {
		return invalid("Memory.Hard", "%v not in (Soft %v, 1]", m.Hard, m.Soft)
	}
	switch m.Policy {
	case PolicyDefault, Reject, Block:
	case Spill: // needs a WAL: checked by Config.fill
	default:
		return invalid("Memory.Policy", "unknown %v", m.Policy)
	}
	return nil
}

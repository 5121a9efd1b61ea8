package vinequeue

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// SendFunc delivers one batch. It must not keep batch (or any item's backing
// memory that the queue owns) after it returns: the queue reuses the slice.
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

func (l Level) String() string {
	switch l {
	case LevelNormal:
		return "normal"
	case LevelSoft:
		return "soft"
	case LevelHard:
		return "hard"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// MemoryConfig bounds the memory the queue holds.
type MemoryConfig struct {
	// Limit in bytes; 0 detects it (cgroup v2/v1, GOMEMLIMIT, physical memory).
	Limit int64
	// Soft and Hard are fractions of Limit; defaults 0.80 and 0.95.
	Soft, Hard float64
	// Policy at the hard level.
	Policy Policy
	// IncludeHeap adds the Go heap (runtime/metrics) to the bytes held.
	IncludeHeap bool
	// OnLevelChange, when set, is called (from a queue goroutine, never the
	// Enqueue fast path) each time the level changes.
	OnLevelChange func(from, to Level)
}

// WALMode selects what the write-ahead log is for.
type WALMode int

const (
	// Overflow: only what the governor spills is written (durable); items in
	// memory at a crash are lost.
	Overflow WALMode = iota
	// Periodic: memory contents are checkpointed every SyncInterval, bounding
	// the loss at a crash to that interval.
	Periodic
	// Sync: Enqueue returns only once its item is durable (group commit).
	Sync
)

// Compression of WAL records.
type Compression int

const (
	Snappy Compression = iota // default
	LZ4
	NoCompression
)

// WALConfig configures the disk tier. Dir "" means memory only.
type WALConfig struct {
	Dir          string
	Mode         WALMode
	Compression  Compression
	SegmentSize  int64         // bytes per segment file; default 64 MiB
	MaxBytes     int64         // 0 = no limit other than the disk
	SyncInterval time.Duration // Periodic mode; default 1s
}

// RetryPolicy bounds the retries of a failed Send.
type RetryPolicy struct {
	// MaxAttempts is the number of Send calls for one batch, first included;
	// default 5. 1 means no retry.
	MaxAttempts int
	// InitialBackoff (default 10ms) grows by Multiplier (default 2) per attempt
	// up to MaxBackoff (default 5s); each wait is jittered by ±Jitter (default 0.2).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	Jitter         float64
}

// Config configures a Queue. Only Send is required.
type Config[T any] struct {
	Send          SendFunc[T]
	BatchSize     int           // default 1000 (with Adaptive: the start)
	MinBatchSize  int           // adaptive floor; default 1
	MaxBatchSize  int           // adaptive ceiling and hard cap of one batch; default max(BatchSize, 10000)
	Adaptive      bool          // latency-driven batch size
	FlushInterval time.Duration // default 5s: an item waits at most this long to be sent
	Workers       int           // concurrent Send calls; default 1
	RingSize      int           // slots per P ring, power of two; default 1024
	Memory        MemoryConfig
	WAL           WALConfig
	Codec         Codec[T]    // needed with a WAL unless T is []byte or string
	SizeOf        func(T) int // bytes accounted per item; default by type
	Retry         RetryPolicy // Send retries
	OnDrop        func(batch []T, reason error)
	Logger        *slog.Logger // default: discards
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

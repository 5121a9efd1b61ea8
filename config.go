package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/governor"
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

// String returns the mode's name.
func (m WALMode) String() string {
	switch m {
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
	Snappy        Compression = iota // snappy block format (the default)
	LZ4                              // lz4 block format: better ratio, slower to write
	NoCompression                    // stored as encoded
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

// RetryPolicy bounds the retries of a failed Send: MaxAttempts (default 5;
// 1 means no retry), InitialBackoff (10ms) growing by Multiplier (2) up to
// MaxBackoff (5s), each wait spread by ±Jitter (0.2; negative: none). It is
// batch.RetryPolicy, where the retry loop lives; the fields are documented
// there.
type RetryPolicy = batch.RetryPolicy

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
	SizeOf        func(T) int // bytes accounted per item; default: its size plus the bytes behind its strings and []byte (New refuses, naming SizeOf, a T holding pointers, maps, interfaces, chans, funcs or other slices)
	Retry         RetryPolicy // Send retries
	OnDrop        func(batch []T, reason error)
	Logger        *slog.Logger // default: discards
}

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
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.MinBatchSize < 0 {
		return invalid("MinBatchSize", "%d < 0", c.MinBatchSize)
	}
	if c.MinBatchSize == 0 {
		c.MinBatchSize = 1
	}
	if c.MaxBatchSize < 0 {
		return invalid("MaxBatchSize", "%d < 0", c.MaxBatchSize)
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
	if c.WAL.Dir == "" && (c.WAL.Mode == Sync || c.WAL.Mode == Periodic) {
		return invalid("WAL.Dir", "required by WAL.Mode %v (without a Dir the queue is memory only)", c.WAL.Mode)
	}
	switch {
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

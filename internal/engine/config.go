package engine

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/wal"
)

// Config is what the engine runs with: the root package's Config, validated
// and with its defaults filled in (the root package documents each field
// and checks each value; the engine refuses only what it cannot run: a
// Memory.Limit too small for its rings, a T it cannot size, a WAL it cannot
// open).
type Config[T any] struct {
	Send          func(ctx context.Context, batch []T) error
	BatchSize     int
	MinBatchSize  int
	MaxBatchSize  int
	Adaptive      bool
	FlushInterval time.Duration
	Workers       int
	RingSize      int
	Memory        MemoryConfig
	WAL           WALConfig
	Codec         Codec[T] // required with a WAL
	SizeOf        func(T) int
	Retry         batch.RetryPolicy
	OnDrop        func(batch []T, reason error)
	ParkKeys      bool         // needs a WAL (the root package checks)
	Logger        *slog.Logger // required

	// Collectors is the number of central shards, each with its own
	// collector goroutine (central.go); 0: DefaultCollectors of
	// GOMAXPROCS at New. The sync tier, which has no rings, has one.
	Collectors int

	// CheckpointStarted, a test hook the root package never sets, is
	// called on the collector when a periodic checkpoint starts, with the
	// start it takes, before it cuts anything; it may block the checkpoint.
	CheckpointStarted func(start time.Time)

	// KeyedParking, a test hook the root package never sets, is called
	// by an EnqueueKey call that has decided to park for room in its
	// shard (waitRoom), after it asked the collector and just before it
	// waits.
	KeyedParking func()
}

// MemoryConfig is the root package's MemoryConfig, filled in.
type MemoryConfig struct {
	Limit         int64
	Soft, Hard    float64
	Policy        Policy // Reject, Spill or Block
	Measure       governor.Measure
	OnLevelChange func(from, to governor.Level)
}

// WALConfig is the root package's WALConfig, filled in: Mode is set
// whenever Dir is.
type WALConfig struct {
	Dir          string
	Mode         WALMode
	Compression  wal.Compression
	SegmentSize  int64
	MaxBytes     int64
	SyncInterval time.Duration
	// EncryptionKey and DecryptionKeys go to wal.Options as they are.
	EncryptionKey  []byte
	DecryptionKeys [][]byte
}

// Policy is what intake does at the hard memory level, numbered as the
// root package's Policy.
type Policy int

// The policies (PolicyDefault, 0, is resolved by the root package).
const (
	Reject Policy = 1 + iota
	Spill
	Block
)

// WALMode chooses the durability tier, numbered as the root package's
// WALMode.
type WALMode int

// The modes with a WAL (0: no WAL, the memory tier).
const (
	Overflow WALMode = 1 + iota
	Periodic
	Sync
)

// Codec encodes items for the WAL: the root package's Codec.
type Codec[T any] interface {
	Append(dst []byte, v T) ([]byte, error)
	Decode(src []byte) (T, error)
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// syncInterval is the periodic tier's checkpoint period.
func (c *WALConfig) syncInterval() time.Duration {
	if c.SyncInterval > 0 {
		return c.SyncInterval
	}
	return time.Second
}

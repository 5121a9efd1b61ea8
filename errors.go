package vinequeue

import "errors"

// Sentinel errors. Match them with errors.Is: the queue wraps them with context.
var (
	// ErrClosed is returned by Enqueue and friends once Stop has begun.
	ErrClosed = errors.New("vinequeue: queue closed")
	// ErrFull is returned when the memory governor is at its hard level and the
	// policy is Reject. It is retryable: the caller may try again later.
	ErrFull = errors.New("vinequeue: queue full")
	// ErrWALFull is returned when the WAL cannot take more data (disk full or
	// WALConfig.MaxBytes reached); it wraps the cause. The memory tier keeps working.
	ErrWALFull = errors.New("vinequeue: wal full")
	// ErrTooLarge is returned for an item larger than the WAL record limit.
	ErrTooLarge = errors.New("vinequeue: item too large")
	// ErrInvalidConfig is returned by New; the message names the field.
	ErrInvalidConfig = errors.New("vinequeue: invalid config")
	// ErrLocked is returned by New when another process holds the WAL directory.
	ErrLocked = errors.New("vinequeue: wal directory locked by another process")
)

package vinequeue

import (
	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/internal/engine"
)

// Sentinel errors. Match them with errors.Is: the queue wraps them with
// context. (They are the engine's values, so errors.Is matches whichever
// layer wrapped them.)
var (
	// ErrClosed is returned by Enqueue and friends once Stop has begun
	// (always once Health().Closed is true; a call that overlaps Stop's
	// start may still be accepted).
	ErrClosed = engine.ErrClosed
	// ErrFull is returned when the memory governor is at its hard level and the
	// policy is Reject. It is retryable: the caller may try again later.
	ErrFull = engine.ErrFull
	// ErrWALFull is returned when the WAL cannot take more data (disk full or
	// WALConfig.MaxBytes reached); it wraps the cause. The memory tier keeps working.
	ErrWALFull = engine.ErrWALFull
	// ErrTooLarge is returned for an item larger than the WAL record limit.
	// An item accepted on its SizeOf whose encoding turns out too large
	// when a spill writes it is handed to OnDrop with an error matching it
	// (see Config.Codec).
	ErrTooLarge = engine.ErrTooLarge
	// ErrInvalidConfig is returned by New; the message names the field.
	ErrInvalidConfig = engine.ErrInvalidConfig
	// ErrLocked is returned by New when another Queue, in this process or
	// another, holds the WAL directory.
	ErrLocked = engine.ErrLocked
)

// ErrSendPanic is matched (errors.Is) by the error recorded for a Send that
// panicked; the panic is recovered and the batch retried like any failure.
var ErrSendPanic = batch.ErrSendPanic

// Permanent marks a Send error that retrying cannot fix (say, a record the
// broker rejects as too large): the batch goes to OnDrop without further
// attempts. errors.Is and errors.As still see err.
func Permanent(err error) error { return batch.Permanent(err) }

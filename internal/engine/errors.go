package engine

import "errors"

// The sentinel errors. The root package re-exports each value under the
// same name and documents it there; errors.Is matches them across both.
var (
	ErrClosed        = errors.New("vinequeue: queue closed")
	ErrFull          = errors.New("vinequeue: queue full")
	ErrWALFull       = errors.New("vinequeue: wal full")
	ErrTooLarge      = errors.New("vinequeue: item too large")
	ErrInvalidConfig = errors.New("vinequeue: invalid config")
	ErrLocked        = errors.New("vinequeue: wal directory locked by another process")
	ErrNoDeadLetter  = errors.New("vinequeue: no such dead letter")
	ErrDropped       = errors.New("vinequeue: item dropped")
)

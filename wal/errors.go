package wal

import "errors"

// Sentinel errors. Match them with errors.Is: the log wraps them with context
// (ErrFull wraps the cause, e.g. unix.ENOSPC, so errors.Is works for both).
var (
	// ErrLocked is returned by Open when another Log, in this process or
	// another, has the directory open.
	ErrLocked = errors.New("wal: directory in use")
	// ErrFull is returned when a new segment or dead letter cannot be
	// written: the disk is full or Options.MaxBytes is reached. The log stays usable: appends
	// succeed again once acknowledged segments have been deleted.
	ErrFull = errors.New("wal: full")
	// ErrTooLarge is returned for a payload or item over Options.MaxRecord.
	ErrTooLarge = errors.New("wal: record too large")
	// ErrCorrupt describes damaged on-disk data found by Check, ReadSegment or
	// a replay. Open itself never fails on corruption: it quarantines the
	// damage and counts it in Stats.Corrupt.
	ErrCorrupt = errors.New("wal: corrupt data")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("wal: closed")
	// ErrNotFound is returned for a dead-letter id that is not (or no
	// longer) in the dead-letter log.
	ErrNotFound = errors.New("wal: no such dead letter")
	// ErrInvalidOptions is returned by Open for options that cannot work
	// together; the message names the field.
	ErrInvalidOptions = errors.New("wal: invalid options")
	// ErrKeyedDeadLetter is returned by the offline RequeueDeadLetters
	// for dead letters of keyed items (written by a queue that parks keys)
	// that it cannot move without breaking their key's order: while the
	// main log still holds items not delivered, or without an earlier dead
	// letter of the same key. A running queue's RequeueDeadLetters
	// releases them in key order instead.
	ErrKeyedDeadLetter = errors.New("wal: keyed dead letter: requeue it with the queue, not offline")
)

// ErrKey is a key problem: an encryption key that is not KeySize bytes, or
// a directory holding a file encrypted under a key id that none of the
// keys given has (a wrong or missing key). Open returns it wrapped with
// ErrInvalidOptions, before it reads a record or changes anything: a key
// problem is never replayed as garbage nor counted as damage.
var ErrKey = errors.New("wal: encryption key")

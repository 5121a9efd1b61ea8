package vinequeue

import (
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
)

// Stats is a snapshot of the queue's counters and gauges.
//
// At quiescence (after Flush returns, or after Stop) the counters balance:
//
//	Enqueued + Replayed == Delivered + Dropped + LeftOnDisk + Parked + Buffered
//
// where Buffered is 0 after Stop. Parked items (Config.ParkKeys) are their
// own term, not Buffered: they leave delivery for the dead-letter log, and
// when they are delivered again from it they count as Enqueued anew (as
// requeued dead letters do). Under load the fields are read one by one
// and are not a consistent cut.
type Stats struct {
	// Counters since New.
	Enqueued     uint64 // items accepted (the call returned nil)
	Delivered    uint64 // items in batches whose Send returned nil
	Rejected     uint64 // items refused (ErrFull, ErrWALFull, ErrTooLarge, a codec error)
	Dropped      uint64 // items given up on and handed to OnDrop (retries exhausted, Permanent, Stop out of time for items not in the WAL); also replayed records the Codec cannot decode, which go to the dead-letter log only
	DeadLettered uint64 // of Dropped, those kept in the WAL's dead-letter log (see DeadLetters)
	Spilled      uint64 // items written to the WAL by the governor (Policy Spill)
	Replayed     uint64 // items read back from the WAL and handed to delivery (found at New)
	LeftOnDisk   uint64 // items not delivered that stay in the WAL for the next New (Stop out of time; a failed batch whose dead letter could not be written, and with ParkKeys its keys' later items, kept behind it)
	Retries      uint64 // Send calls that were retries
	Corrupt      uint64 // WAL records lost to damage, counted exactly: the main log's, and dead letters found damaged at New
	Delayed      uint64 // slow-path delays applied at the soft level
	Blocked      uint64 // calls that waited at the hard level (Policy Block; EnqueueKey under Spill)
	Batches      uint64 // Send calls that returned nil
	Parked       uint64 // items moved to the dead-letter log behind a dead letter of their key (Config.ParkKeys)

	// Gauges at the time of the call.
	Buffered  uint64 // items accepted or replayed and not yet delivered, dropped or left on disk
	BytesHeld uint64 // bytes of items the queue holds in memory, by SizeOf
	Level     Level
	BatchSize uint64 // current target batch size
	WALBytes  uint64 // bytes of the WAL's unacknowledged records on disk
	// ParkedItems are the items parked now (Config.ParkKeys), this
	// process's and those an earlier one parked; ParkedKeys the keys
	// parked now (every key of a live keyed dead letter).
	ParkedItems uint64
	ParkedKeys  uint64
	Backlog     Backlog

	// DurableThrough is an instant before which every accepted item is
	// delivered, or on disk and fsynced: a crash from now on loses none of
	// them.
	// time.Since(DurableThrough) is the durability lag, how much a crash
	// now could lose.
	//
	// With WALModeSync it is the time of the Stats call: an item is on
	// disk when its call returns. With WALModePeriodic it is the start of
	// the last checkpoint that wrote and synced everything accepted before
	// it and not delivered (zero before the first): it advances every SyncInterval while the
	// disk keeps up, and falls behind by however long a checkpoint's write
	// and fsync take. It does not advance while a write fails, while an
	// item the WAL cannot take (its Codec refused it, or it is too large
	// for a record) is not yet delivered or given up, or while the
	// memory governor holds rings full at the hard level. Without a WAL,
	// and with WALModeOverflow, it is zero: nothing is promised.
	//
	// It carries a monotonic clock reading (measured from New on that
	// clock), so comparing it with time.Now() or time.Since is not fooled
	// by a wall-clock step; its wall-clock value is New's plus that.
	DurableThrough time.Time
}

// Backlog is what waits for delivery, in memory and in the WAL.
type Backlog struct {
	// Items waiting for delivery: Buffered, plus the items found in the
	// WAL at New that the replay has not read yet (exact, except for
	// records written by an older version, whose count is unknown).
	Items uint64
	// Bytes is BytesHeld plus WALBytes: memory and disk together (an item
	// both in memory and in the WAL counts twice: it occupies both).
	Bytes uint64
	// Oldest is when the oldest unacknowledged WAL record was written
	// (zero without a WAL, or with nothing pending): its age is how far
	// delivery is behind.
	Oldest time.Time
	// Replaying is true while records found in the WAL at New are still
	// being delivered.
	Replaying bool
}

// Stats returns a snapshot of the counters and gauges.
func (q *Queue[T]) Stats() Stats { return statsOf(q.e.Stats()) }

func statsOf(s engine.Stats) Stats {
	return Stats{
		Enqueued: s.Enqueued, Delivered: s.Delivered, Rejected: s.Rejected, Dropped: s.Dropped,
		DeadLettered: s.DeadLettered, Spilled: s.Spilled, Replayed: s.Replayed, LeftOnDisk: s.LeftOnDisk,
		Retries: s.Retries, Corrupt: s.Corrupt, Delayed: s.Delayed, Blocked: s.Blocked, Batches: s.Batches,
		Parked: s.Parked, ParkedItems: s.ParkedItems, ParkedKeys: s.ParkedKeys,
		Buffered: s.Buffered, BytesHeld: s.BytesHeld, Level: levelOf(s.Level),
		BatchSize: s.BatchSize, WALBytes: s.WALBytes, Backlog: Backlog(s.Backlog),
		DurableThrough: s.DurableThrough,
	}
}

// Health is what a readiness probe needs to know.
type Health struct {
	// Ready is false once Stop has begun, at the hard memory level (new
	// items meet the Policy), while the WAL is full, and while the sink has
	// been failing for longer than a retry cycle would cover. A load balancer should send
	// traffic elsewhere while it is false.
	Ready bool
	// Closed is true once Stop has sealed intake: every call that starts
	// after Health returned it (Enqueue and friends, the fast path
	// included) returns ErrClosed. Stop does that first; until then Ready
	// is already false, and a call that overlaps Stop's start may still be
	// accepted (and is then delivered like any other).
	Closed bool
	// Level is the memory governor's level.
	Level Level
	// SinkFailingSince is when Send first failed after its last success;
	// zero while Send succeeds.
	SinkFailingSince time.Time
	// WALFull is true while the WAL cannot take more (a call was refused
	// with ErrWALFull in the last second).
	WALFull bool
	// Backlog is what waits for delivery (Stats.Backlog).
	Backlog Backlog
}

// Health reports the queue's readiness, for a /readyz handler.
func (q *Queue[T]) Health() Health {
	h := q.e.Health()
	return Health{
		Ready: h.Ready, Closed: h.Closed, Level: levelOf(h.Level),
		SinkFailingSince: h.SinkFailingSince, WALFull: h.WALFull, Backlog: Backlog(h.Backlog),
	}
}

package vinequeue

import "time"

// Stats is a snapshot of the queue's counters and gauges.
//
// At quiescence (after Flush returns, or after Stop) the counters balance:
//
//	Enqueued + Replayed == Delivered + Dropped + LeftOnDisk + Buffered
//
// where Buffered is 0 after Stop. Under load the fields are read one by one
// and are not a consistent cut.
type Stats struct {
	// Counters since New.
	Enqueued     uint64 // items accepted (the call returned nil)
	Delivered    uint64 // items in batches whose Send returned nil
	Rejected     uint64 // items refused (ErrFull, ErrWALFull, ErrTooLarge, a codec error)
	Dropped      uint64 // items given up on and handed to OnDrop (retries exhausted, Permanent, Stop out of time without a WAL)
	DeadLettered uint64 // of Dropped, those kept in the WAL's dead-letter log (see DeadLetters)
	Spilled      uint64 // items written to the WAL by the governor (Policy Spill)
	Replayed     uint64 // items read back from the WAL and handed to delivery (found at New)
	LeftOnDisk   uint64 // items not delivered that stay in the WAL for the next New (Stop out of time)
	Retries      uint64 // Send calls that were retries
	Corrupt      uint64 // WAL records lost to damage, counted exactly
	Delayed      uint64 // slow-path delays applied at the soft level
	Blocked      uint64 // calls that waited at the hard level (Policy Block)
	Batches      uint64 // Send calls that returned nil

	// Gauges at the time of the call.
	Buffered  uint64 // items accepted or replayed and not yet delivered, dropped or left on disk
	BytesHeld uint64 // bytes of items the queue holds in memory, by SizeOf
	Level     Level
	BatchSize uint64 // current target batch size
	WALBytes  uint64 // bytes of the WAL's unacknowledged records on disk
	Backlog   Backlog
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
func (q *Queue[T]) Stats() Stats {
	enq := q.drained.Load() + q.keyedIn.Load() + q.syncAccepted.Load()
	for _, s := range q.procs.Load().procs {
		enq += uint64(s.cur.Load().Len())
	}
	s := Stats{
		Enqueued:     enq,
		Delivered:    q.delivered.Load(),
		Rejected:     q.rejected.Load(),
		Dropped:      q.dropped.Load(),
		LeftOnDisk:   q.leftOnDisk.Load(),
		DeadLettered: q.deadLettered.Load(),
		Retries:      q.retries.Load(),
		Batches:      q.batches.Load(),
		BatchSize:    uint64(q.batchSize.Load()),
		Delayed:      q.delayed.Load(),
		Replayed:     q.replayed.Load(),
		Spilled:      q.spilled.Load(),
		Blocked:      q.blocked.Load(),
		Level:        levelOf(q.gov.Level()),
	}
	var oldest time.Time
	if q.wal != nil {
		ws := q.wal.log.Stats()
		oldest = ws.OldestPending
		s.WALBytes = uint64(max(ws.Bytes, 0))
		s.Corrupt = ws.Corrupt + q.corrupt.Load()
		s.Rejected += q.walRejected.Load()
	}
	// Replayed items were accepted by an earlier process: they leave as
	// delivered, dropped or left on disk like the rest.
	if done := s.Delivered + s.Dropped + s.LeftOnDisk; enq+s.Replayed > done {
		s.Buffered = enq + s.Replayed - done
	}
	if b := q.bytesHeld.Load(); b > 0 {
		s.BytesHeld = uint64(b)
	}
	s.Backlog = Backlog{Items: s.Buffered, Bytes: s.BytesHeld + s.WALBytes, Oldest: oldest, Replaying: q.replaying.Load()}
	if s.Backlog.Replaying && q.backlogAtOpen > s.Replayed {
		s.Backlog.Items += q.backlogAtOpen - s.Replayed
	}
	return s
}

// Health is what a readiness probe needs to know.
type Health struct {
	// Ready is false once Stop has begun, at the hard memory level (new
	// items meet the Policy), while the WAL is full, and while the sink has
	// been failing for longer than a retry cycle would cover. A load balancer should send
	// traffic elsewhere while it is false.
	Ready bool
	// Closed is true once Stop has begun.
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
	st := q.Stats()
	h := Health{
		Closed:  q.closing.Load(),
		Level:   st.Level,
		Backlog: st.Backlog,
	}
	if ns := q.failingSince.Load(); ns != 0 {
		h.SinkFailingSince = time.Unix(0, ns)
	}
	failingTooLong := !h.SinkFailingSince.IsZero() && time.Since(h.SinkFailingSince) > q.cfg.Retry.MaxBackoff*time.Duration(max(q.cfg.Retry.MaxAttempts, 1))
	// A call refused with ErrWALFull in the last second: the WAL cannot
	// take more, whatever the memory level says.
	walFull := q.walFull.Load() != nil
	if at := q.walFullAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < time.Second {
		walFull = true
	}
	h.WALFull = walFull
	h.Ready = !h.Closed && h.Level != LevelHard && !failingTooLong && !walFull
	return h
}

package engine

import (
	"time"

	"github.com/vineroute/vinequeue/governor"
)

// Stats is the root package's Stats (documented there), with the
// governor's Level.
type Stats struct {
	Enqueued, Delivered, Rejected, Dropped, DeadLettered, Spilled, Replayed, LeftOnDisk,
	Retries, Corrupt, Delayed, Blocked, Batches uint64

	Parked, ParkedItems, ParkedKeys uint64

	Buffered, BytesHeld uint64
	Level               governor.Level
	BatchSize, WALBytes uint64
	Backlog             Backlog
	DurableThrough      time.Time
}

// Backlog is the root package's Backlog.
type Backlog struct {
	Items, Bytes uint64
	Oldest       time.Time
	Replaying    bool
}

// Stats returns a snapshot of the counters and gauges.
func (q *Queue[T]) Stats() Stats {
	enq := q.drained.Load() + q.syncAccepted.Load() + q.released.Load() + q.acks.accepted.Load()
	for i := range q.keyed.shards {
		enq += q.keyed.shards[i].accepted()
	}
	for _, s := range q.procs.Load().procs {
		enq += uint64(s.Cur.Load().Len())
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
		Level:        q.gov.Level(),
		Parked:       q.parked.Load(),
	}
	if p := q.park; p != nil {
		s.ParkedItems = uint64(max(p.items.Load(), 0))
		s.ParkedKeys = uint64(max(p.nkeys.Load(), 0))
	}
	var oldest time.Time
	if q.wal != nil {
		ws := q.wal.log.Stats()
		oldest = ws.OldestPending
		s.WALBytes = uint64(max(ws.Bytes, 0))
		// A dead letter lost to damage is a record lost too: the one a
		// parked key waits behind is one (its parked items are not lost).
		s.Corrupt = ws.Corrupt + ws.DeadCorrupt + q.corrupt.Load()
		s.Rejected += q.walRejected.Load()
	}
	// Replayed items were accepted by an earlier process: they leave as
	// delivered, dropped, left on disk or parked like the rest. (Items
	// delivered again from a dead letter count as accepted again.)
	if done := s.Delivered + s.Dropped + s.LeftOnDisk + s.Parked; enq+s.Replayed > done {
		s.Buffered = enq + s.Replayed - done
	}
	// Less the credit admitted for keyed items not yet accepted: not held.
	if b := q.keyed.heldBytes(&q.bytesHeld); b > 0 {
		s.BytesHeld = uint64(b)
	}
	s.DurableThrough = q.durableThrough()
	s.Backlog = Backlog{Items: s.Buffered, Bytes: s.BytesHeld + s.WALBytes, Oldest: oldest, Replaying: q.replaying.Load()}
	if s.Backlog.Replaying && q.backlogAtOpen > s.Replayed {
		s.Backlog.Items += q.backlogAtOpen - s.Replayed
	}
	return s
}

// Health is the root package's Health, with the governor's Level.
type Health struct {
	Ready, Closed    bool
	Level            governor.Level
	SinkFailingSince time.Time
	WALFull          bool
	Backlog          Backlog
}

// Health reports the queue's readiness, for a /readyz handler.
func (q *Queue[T]) Health() Health {
	st := q.Stats()
	h := Health{
		Closed:  q.sealed.Load(),
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
	h.Ready = !q.closing.Load() && h.Level != governor.LevelHard && !failingTooLong && !walFull
	return h
}

// MemoryLimit is the memory governor's limit now, and where it comes from.
func (q *Queue[T]) MemoryLimit() governor.Limit { return q.gov.Limit() }

// MaxRecord is the largest WAL record, in bytes (0 without a WAL): an item
// whose encoding and framing (up to MaxFrameOverhead) exceed it cannot be
// written.
func (q *Queue[T]) MaxRecord() int {
	if q.wal == nil {
		return 0
	}
	return q.wal.log.MaxRecord()
}

// Rings is how many P rings exist (current, spare and handed off): at most
// RingsPerP per P.
func (q *Queue[T]) Rings() int { return int(q.ringCount.Load()) }

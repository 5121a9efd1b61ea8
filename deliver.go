package vinequeue

import (
	"context"
	"fmt"
	"time"

	"github.com/vineroute/vinequeue/batch"
)

// ErrSendPanic is matched (errors.Is) by the error recorded for a Send that
// panicked; the panic is recovered and the batch retried like any failure.
var ErrSendPanic = batch.ErrSendPanic

// Permanent marks a Send error that retrying cannot fix (say, a record the
// broker rejects as too large): the batch goes to OnDrop without further
// attempts. errors.Is and errors.As still see err.
func Permanent(err error) error { return batch.Permanent(err) }

// sendLoop is one sender: it takes batches from the collector until Stop.
func (q *Queue[T]) sendLoop() {
	for b := range q.work {
		q.deliver(b)
	}
}

// deliver sends one batch with retries (batch.Attempt: backoff with jitter,
// panics recovered, Permanent errors not retried); after the last attempt the
// batch goes to OnDrop. Either way it is done: counted, recycled, its shard
// released.
func (q *Queue[T]) deliver(b *pending[T]) {
	for {
		var start time.Time
		if q.sizer != nil { // only adaptive sizing needs the clock
			start = time.Now()
		}
		err := batch.Attempt(q.sendCtx, q.cfg.Retry, b.send, q.onRetry)
		if q.sizer != nil {
			q.sizer.Observe(len(b.items), time.Since(start), err)
			q.batchSize.Store(int64(q.sizer.Size()))
		}
		if err == nil {
			q.delivered.Add(uint64(len(b.items)))
			q.batches.Add(1)
			q.ackDelivered(b)
			q.finish(b)
			return
		}
		if !b.durable() || batch.IsPermanent(err) {
			q.drop(b, fmt.Errorf("vinequeue: send failed: %w", err))
			return
		}
		// The items are in the WAL: they are not given up on. Retry
		// after the longest backoff until Stop runs out of time; then
		// they stay on disk, and the next New replays them.
		if q.sendCtx.Err() != nil {
			q.leftOnDisk.Add(uint64(len(b.items)))
			q.finish(b)
			return
		}
		q.retries.Add(1)
		t := time.NewTimer(q.cfg.Retry.MaxBackoff)
		select {
		case <-t.C:
		case <-q.sendCtx.Done():
		}
		t.Stop()
	}
}

func (q *Queue[T]) countRetry(int, error) { q.retries.Add(1) }

// durable reports whether b's items are in the WAL.
func (b *pending[T]) durable() bool { return b.rec != nil || len(b.recs) > 0 }

// giveUp ends a batch that Stop ran out of time for: a batch in the WAL stays
// there for the next New to replay; any other goes to OnDrop.
func (q *Queue[T]) giveUp(b *pending[T], reason error) {
	if b.durable() {
		q.leftOnDisk.Add(uint64(len(b.items)))
		q.finish(b)
		return
	}
	q.drop(b, reason)
}

// drop hands a batch to OnDrop and counts it.
func (q *Queue[T]) drop(b *pending[T], reason error) {
	if q.cfg.OnDrop != nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					q.logger.Error("vinequeue: OnDrop panicked", "panic", p)
				}
			}()
			q.cfg.OnDrop(b.items, reason)
		}()
	}
	q.ackDelivered(b) // given up on: the WAL must not replay it either
	q.dropped.Add(uint64(len(b.items)))
	q.logger.Warn("vinequeue: dropped a batch", "items", len(b.items), "reason", reason)
	q.finish(b)
}

// finish marks b done and recycles it.
func (q *Queue[T]) finish(b *pending[T]) {
	q.hold(-b.bytes)
	seq, s, sd, n := b.seq, b.shard, b.spill, len(b.items)
	q.putBatch(b)
	if sd != nil {
		q.spills.settle(sd, n)
	}
	if s != nil {
		s.inflight.Store(false)
	}
	// The collector may be waiting for this key's shard to be free, or
	// for memory to fall below the hard level; otherwise it has no reason
	// to run (its tick is the backstop for a level change it missed).
	if s != nil || q.stalled.Load() {
		q.wakeCollector()
	}
	q.track.complete(seq)
}

// hold records n more bytes held by batches (n < 0: fewer).
func (q *Queue[T]) hold(n int64) {
	q.bytesHeld.Add(n)
	q.gov.Add(n)
}

func (q *Queue[T]) getBatch() *pending[T] {
	select {
	case b := <-q.free:
		return b
	default:
		// Sized for the current target; a batch that grows past it
		// (adaptive sizing) reallocates once and keeps its capacity.
		b := &pending[T]{items: make([]T, 0, q.batchSize.Load())}
		// Made once per batch object and kept across recycling, so a
		// delivery allocates nothing.
		b.send = func(ctx context.Context) error { return q.cfg.Send(ctx, b.items) }
		return b
	}
}

func (q *Queue[T]) putBatch(b *pending[T]) {
	clear(b.items) // retention rule: no pointers kept past delivery
	b.items = b.items[:0]
	clear(b.recs)
	b.bytes, b.seq, b.shard, b.rec, b.recOff, b.recs, b.spill = 0, 0, nil, nil, 0, b.recs[:0], nil
	select {
	case q.free <- b:
	default:
	}
}

// Stats returns a snapshot of the counters and gauges. The counters are read
// one by one, so under load they are not a consistent cut.
func (q *Queue[T]) Stats() Stats {
	enq := q.drained.Load() + q.keyedIn.Load() + q.syncAccepted.Load()
	for _, s := range q.procs.Load().procs {
		enq += uint64(s.cur.Load().Len())
	}
	s := Stats{
		Enqueued:  enq,
		Delivered: q.delivered.Load(),
		Rejected:  q.rejected.Load(),
		Dropped:   q.dropped.Load(),
		Retries:   q.retries.Load(),
		Batches:   q.batches.Load(),
		BatchSize: uint64(q.batchSize.Load()),
		Delayed:   q.delayed.Load(),
		Replayed:  q.replayed.Load(),
		Spilled:   q.spilled.Load(),
		Blocked:   q.blocked.Load(),
		Level:     levelOf(q.gov.Level()),
	}
	if q.wal != nil {
		ws := q.wal.log.Stats()
		s.WALBytes = uint64(max(ws.Bytes, 0))
		s.Corrupt = ws.Corrupt + q.corrupt.Load()
		s.Rejected += q.walRejected.Load()
	}
	// Replayed items were accepted by an earlier process: they count in
	// Delivered or Dropped when done, so add them to the accepted side.
	if done := s.Delivered + s.Dropped; enq+s.Replayed > done {
		s.Buffered = enq + s.Replayed - done
	}
	if b := q.bytesHeld.Load(); b > 0 {
		s.BytesHeld = uint64(b)
	}
	return s
}

// bytesOf is the accounted size of items.
func (q *Queue[T]) bytesOf(items []T) int64 {
	if q.fixedSize > 0 {
		return int64(q.fixedSize) * int64(len(items))
	}
	var n int64
	for _, v := range items {
		n += int64(q.sizeOf(v))
	}
	return n
}

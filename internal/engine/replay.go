package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/vineroute/vinequeue/wal"
)

// Replay: the records a WAL holds unacknowledged at New (a crash, or a Stop
// that ran out of time) are delivered again by the replayer goroutine, beside
// intake. New items are accepted and delivered meanwhile; the backlog never
// holds the collector, so a slow or down sink slows the replay, not intake,
// and a Send that enqueues cannot deadlock against it.
//
// Pacing and order. The replayer hands the collector one batch at a time,
// and the next only once that one is finished (it decodes the next one
// meanwhile), so a replay uses at most one sender and three batches of
// memory however large the backlog, and the records go out in id order.
//
// Keys. EnqueueKey's items are in the WAL in each key's order, in keyed
// records that hold their keys (the sync tier's appends, the periodic
// tier's shard writes). Keyed shards do not dispatch until the replay is
// over: per key, replayed items precede new ones, with any number of
// Workers. (New keyed items are accepted and held meanwhile, under the
// memory limit and, in Periodic and Sync mode, on disk.) Replayed keyed
// items travel in keyed batches of their own, with their keys, so with
// ParkKeys a sender parks those of a parked key (divert, park.go) as it
// does a shard's: a key parked before a crash or a Stop out of time stays
// parked behind its dead letter, its items from the main log after it.
// Records written before keyed records existed have no keys and replay as
// unkeyed items.
//
// Consecutive records are coalesced into batches of up to BatchSize items,
// their spans naming each record's share, so a replay still sends full
// batches: one being filled with unkeyed items, one with keyed items (in
// id order among themselves: a key's items never overtake each other). Stop lets the replay run to its end while its ctx allows; when
// ctx expires the replay stops and the rest stays in the WAL.

// errReplayStopped ends a replay that Stop ran out of time for.
var errReplayStopped = errors.New("vinequeue: replay stopped")

// replayLoop is the replayer goroutine.
func (q *Queue[T]) replayLoop(w *walTier[T]) {
	defer func() {
		q.replaying.Store(false)
		close(q.replayDone)
		q.keyed.kick.Store(true)
		q.wakeCollector() // keyed shards may dispatch now
	}()
	limit := min(q.cfg.BatchSize, q.cfg.MaxBatchSize)
	// The batches being filled: unkeyed items, and keyed ones (with keys).
	var plain, keyed *pending[T]
	// One replayed batch is with the collector or a sender at a time; the
	// next is decoded meanwhile. waitAck waits until it is finished.
	inFlight := false
	waitAck := func() error {
		if !inFlight {
			return nil
		}
		select {
		case <-q.replayAck:
			inFlight = false
			return nil
		case <-q.sendCtx.Done():
			// The batch is the collector's: Stop gives it up (it stays
			// in the WAL).
			return errReplayStopped
		}
	}
	// send hands *cur to the collector once the previous batch is finished.
	send := func(cur **pending[T]) error {
		if err := waitAck(); err != nil {
			return err
		}
		b := *cur
		*cur = nil
		b.replay = true
		b.bytes = q.bytesOf(b.items)
		n := uint64(len(b.items))
		// Counted before the hand-over: once the collector has it, it may
		// be delivered (and counted there) at once.
		q.replayed.Add(n)
		select {
		case q.replayCh <- b:
			inFlight = true
			return nil
		case <-q.sendCtx.Done():
			q.replayed.Add(-n)
			q.putBatch(b)
			return errReplayStopped
		}
	}
	var items []T
	// Each record comes with the items already done with (delivered or
	// given up on before a crash); only the others go out, each under its
	// index in the record, which is what its span acknowledges.
	err := w.log.ReplayRecords(func(r *wal.ReplayedRecord) error {
		id, payload, done, keys := r.ID, r.Payload, r.Done, r.Keys
		if q.sendCtx.Err() != nil {
			return errReplayStopped
		}
		var err error
		items, err = w.decode(items[:0], payload)
		if err != nil {
			// Intact on disk, but this Codec cannot read it (a codec
			// changed between runs?): keep it, in the dead-letter log,
			// where a fixed Codec can requeue it. Left in place if even
			// that fails; the next New tries again.
			n := 0
			wal.ForEachItem(payload, func([]byte) error { n++; return nil })
			meta := wal.DeadMeta{Reason: "replay: " + err.Error(), Records: []uint64{id}}
			if q.park != nil && len(keys) == n {
				meta.Keys = keys // its keys park behind it, as a failed batch's do
				// Written and recorded as one step for RequeueDeadLetters
				// and PurgeDeadLetters (parking.recording).
				q.park.recording.RLock()
				defer q.park.recording.RUnlock()
			}
			did, derr := w.log.DeadLetter(payload, meta)
			if derr != nil {
				q.logger.Error("vinequeue: wal record does not decode and cannot be dead-lettered; it stays in the wal", "record", id, "err", err, "dead-letter error", derr)
				return nil
			}
			// Read back and given up on: counted as replayed, dropped
			// and dead-lettered (OnDrop cannot have them: they do not
			// decode).
			q.replayed.Add(uint64(n))
			q.dropped.Add(uint64(n))
			q.deadLettered.Add(uint64(n))
			if meta.Keys != nil {
				q.park.addLetter(did, meta.Keys, n)
			}
			q.logger.Error("vinequeue: wal record does not decode; moved to the dead-letter log", "record", id, "items", n, "err", err)
			return w.log.Ack(id)
		}
		if len(items) == 0 {
			return w.log.Ack(id)
		}
		cur := &plain
		if keys != nil {
			if len(keys) != len(items) { // cannot happen: the log checks the trailer
				return fmt.Errorf("vinequeue: wal record %d: %d keys for %d items", id, len(keys), len(items))
			}
			cur = &keyed
		}
		for off := 0; off < len(items); {
			if len(done) > 0 && off >= done[0].Off {
				off = max(off, done[0].Off+done[0].N)
				done = done[1:]
				continue
			}
			end := len(items)
			if len(done) > 0 {
				end = min(end, done[0].Off)
			}
			if *cur == nil {
				*cur = q.getBatch()
			}
			b := *cur
			n := min(end-off, limit-len(b.items))
			b.spans = appendSpan(b.spans, id, off, n)
			b.items = append(b.items, items[off:off+n]...)
			if keys != nil {
				b.keys = append(b.keys, keys[off:off+n]...)
			}
			off += n
			if len(b.items) == limit {
				if err := send(cur); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil && plain != nil {
		err = send(&plain)
	}
	if err == nil && keyed != nil {
		err = send(&keyed)
	}
	if err == nil {
		// The replay is over when its last batch is finished: only then
		// may keyed shards dispatch (per key, replayed items go first).
		err = waitAck()
	}
	for _, b := range []*pending[T]{plain, keyed} {
		if b != nil { // stopped: its items stay in the WAL
			q.putBatch(b)
		}
	}
	if err != nil && !errors.Is(err, errReplayStopped) && !errors.Is(err, context.Canceled) {
		q.logger.Error("vinequeue: wal replay stopped", "err", err)
	}
}

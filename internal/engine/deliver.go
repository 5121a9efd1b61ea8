package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vineroute/vinequeue/batch"
)

// senderSlot is one sender's batch while it is in Send (nil between
// batches). The sender stores it before the first attempt and takes it back
// with a compare-and-swap after each; Stop out of time swaps it out instead
// (abandonInFlight). Whoever takes the batch accounts for it, so a Send
// that ignores its ctx cannot hold Stop past its deadline, and its late
// result is ignored.
type senderSlot[T any] struct {
	b      atomic.Pointer[pending[T]]
	writer recordWriter // the tier's record buffers for persist (sender-owned): a batch failed for good
	_      [cacheLine]byte
}

// sendLoop is one sender: it takes batches from the collector until Stop.
//
// From before it takes a batch until the batch is in its slot (or, Stop
// being out of time, accounted for) it holds q.finishing shared, as it does
// while finishing a batch: a batch taken from the collector is in no one
// else's hands, so Stop, out of time, waits for it to reach the slot where
// it can take it (abandonInFlight). Waiting for the next batch with the
// lock held delays no one: Stop takes it only once the collectors have
// closed q.work, which ends the wait.
func (q *Queue[T]) sendLoop(slot *senderSlot[T]) {
	for {
		q.finishing.RLock()
		b, ok := <-q.work
		if !ok {
			q.finishing.RUnlock()
			return
		}
		send := q.take(slot, b)
		q.finishing.RUnlock()
		if send {
			q.deliver(slot, b)
		}
	}
}

// take readies b for Send, q.finishing held shared: the items of parked
// keys leave it, and it goes into slot. It reports false when nothing is
// left to send: every item was parked, or Stop ran out of time meanwhile
// (b is then given up, here or by Stop's swap). Until Stop begins nothing
// is written here: a batch not on disk yet is written only if a checkpoint
// or Stop finds it undelivered (durable.go), or if its Send fails for
// good. Once a Stop that can run out of time has begun (its ctx can end),
// a batch not on disk is written here, before Send, so that the Stop has
// none left to write past its deadline.
func (q *Queue[T]) take(slot *senderSlot[T], b *pending[T]) bool {
	if p := q.park; p != nil && len(b.keys) > 0 && b.letter == 0 {
		// Items of keys held behind a failed batch left in the main log
		// stay there too (parkwait.go).
		if p.nbehind.Load() > 0 && p.holdBehind(b, &slot.writer) {
			q.finish(b, true, nil)
			return false
		}
		// Items of parked keys leave b first (park.go), held against a
		// checkpoint's write meanwhile: its items are changing.
		held := b.hold(&q.durable.waits)
		if p.divert(b) {
			// Every item was parked: nothing to send. (A keyed batch:
			// no EnqueueAck caller waits on it.)
			q.finish(b, true, nil)
			return false
		}
		if held {
			b.release(&q.durable.waits)
		}
	}
	if b.ticket != 0 && q.writeBeforeSend.Load() {
		// A Stop that can run out of time has begun: written before
		// Send, so that it has nothing to write past its deadline
		// (collector.stop).
		q.persistOwned(b, &slot.writer)
	}
	slot.b.Store(b)
	// Stored first, then checked: Stop cancels sendCtx before it swaps the
	// slots out, so either its swap finds b, or b was stored after the
	// swap and the cancellation is seen here.
	if err := q.sendCtx.Err(); err != nil {
		// Stop is out of time: b is not sent. Whoever takes it from the
		// slot gives it up, as Stop gives up the others.
		if slot.b.CompareAndSwap(b, nil) {
			q.giveUp(b, fmt.Errorf("%w: stop deadline: %w", ErrClosed, err), true)
		}
		return false
	}
	return true
}

// deliver sends one batch with retries (batch.Attempt: backoff with jitter,
// panics recovered, Permanent errors not retried, Config.Retry's attempts).
// Then the batch is done: delivered; or, failed for good, dead-lettered
// (with a WAL) or dropped to OnDrop; or, when Stop ran out of time, left in
// the WAL for the next New (or dropped without one). Nothing retries beyond
// Config.Retry unless it says RetryForever. b is in slot (take). If Stop
// abandoned the batch meanwhile, deliver leaves it alone.
func (q *Queue[T]) deliver(slot *senderSlot[T], b *pending[T]) {
	var start time.Time
	if q.sizer != nil { // only adaptive sizing needs the clock
		start = time.Now()
	}
	err := batch.Attempt(q.sendCtx, q.cfg.Retry, b.send, q.onRetry)
	if q.sizer != nil {
		q.sizer.Observe(len(b.items), time.Since(start), err)
		q.batchSize.Store(int64(q.sizer.Size()))
	}
	// Finishing holds q.finishing (shared) so that Stop, having swapped out
	// the batches still in Send, can wait for the ones already past it.
	q.finishing.RLock()
	defer q.finishing.RUnlock()
	if !slot.b.CompareAndSwap(b, nil) {
		return // Stop gave it up at its deadline
	}
	switch {
	case err == nil:
		// Delivered: taken unwritten, unless a checkpoint wrote it first
		// (then acknowledged as any batch on disk).
		q.settleSent(b, true, &slot.writer)
		q.delivered.Add(uint64(len(b.items)))
		q.batches.Add(1)
		if q.failingSince.Load() != 0 {
			q.failingSince.Store(0)
		}
		q.tier.acknowledge(b)
		if b.letter != 0 {
			q.park.delivered(b)
		}
		q.finish(b, true, nil)
	case q.sendCtx.Err() != nil:
		// Stop ran out of time: not a verdict on the batch.
		q.sinkFailing()
		q.giveUp(b, fmt.Errorf("%w: stop deadline: %w", ErrClosed, err), true)
	default:
		q.sinkFailing()
		// Failed for good: on disk first, as the dead-letter path has
		// always found it (a dead letter names its records, and one that
		// cannot be written leaves the batch in the WAL for the next New).
		q.settleSent(b, false, &slot.writer)
		q.failed(b, fmt.Errorf("vinequeue: send failed: %w", err))
	}
}

// failed ends a batch whose sending failed for good (retries exhausted, or
// Permanent): with a WAL it moves to the dead-letter log first (deadletter.go);
// then it is handed to OnDrop and acknowledged in the WAL. If the dead-letter
// log cannot take it (a full disk), a batch in the WAL stays there
// unacknowledged for the next New instead.
func (q *Queue[T]) failed(b *pending[T], reason error) {
	if b.letter != 0 {
		// Delivered again from its dead letter, and failed again: the
		// dead letter stays as it is, and blocks its keys (park.go).
		q.park.failedAgain(b)
		q.deadLettered.Add(uint64(len(b.items)))
		q.drop(b, reason, true)
		return
	}
	kept, err := q.tier.deadLetter(b, reason)
	if err != nil {
		q.logger.Error("vinequeue: a failed batch could not be dead-lettered", "items", len(b.items), "err", err)
		if b.onDisk() {
			if p := q.park; p != nil && len(b.keys) > 0 && p.await(b, reason, err) {
				// Its keys' later items wait behind it until its dead
				// letter is written (parkwait.go).
				return
			}
			// Not acknowledged: the next New replays it (with its keys
			// held behind it, when it has keys: parkwait.go).
			q.leftOnDisk.Add(uint64(len(b.items)))
			q.finish(b, true, outcomeLeftFailed(reason))
			return
		}
	}
	if kept {
		q.deadLettered.Add(uint64(len(b.items)))
	}
	q.drop(b, reason, true)
}

// abandonInFlight gives up the batches still in Send when Stop runs out of
// time (after sendCancel): a Send that ignores its ctx keeps its goroutine,
// not Stop. The batches are not recycled: Send may still read them. Then it
// waits for the senders finishing a batch and for the OnDrop calls due
// (waitOnDrops), each only while it makes progress.
func (q *Queue[T]) abandonInFlight(reason error) {
	var given []*pending[T]
	for i := range q.senders {
		if b := q.senders[i].b.Swap(nil); b != nil {
			given = append(given, b)
		}
	}
	q.giveUpAll(given, reason, false)
	// Senders whose Send returned before the swap are finishing their
	// batch (counting it first, then OnDrop), and senders that took a
	// batch but had not put it in their slot yet (take: parking its keys)
	// give it up themselves: wait a moment for both, so that Stats and
	// OnDrop are complete when Stop returns, but not for an OnDrop or a
	// write that blocks: Stop is out of time already.
	finished := make(chan struct{})
	go func() {
		q.finishing.Lock()
		q.finishing.Unlock() //lint:ignore SA2001 an empty critical section: waiting for the readers is the point
		close(finished)
	}()
	t := time.NewTimer(finishGrace)
	select {
	case <-finished:
		t.Stop()
		q.waitOnDrops()
	case <-t.C:
		q.logger.Warn("vinequeue: stop: a sender is still taking or finishing a batch (a write, OnDrop?) past the deadline; not waiting for it")
	}
}

// giveUpAll gives up batches for a Stop out of time. A batch the periodic
// tier has not written yet (it waited for a sender, or was in Send) is
// written first, as a checkpoint would have. Each is accounted for
// at once, before Stop returns whatever OnDrop does: left in the WAL
// (LeftOnDisk), or counted Dropped, acknowledged, its EnqueueAck callers
// told, and recycled. The dropped items are then handed to OnDrop merged,
// in calls of up to dropChunk items rather than one per batch, by a
// goroutine of their own: Stop waits for those calls (waitOnDrops) as long
// as each returns within finishGrace.
func (q *Queue[T]) giveUpAll(given []*pending[T], reason error, recycle bool) {
	var items []T
	dropped := 0
	var rw recordWriter
	for _, b := range given {
		q.persistOwned(b, &rw)           // not delivered: on disk if the tier writes such batches
		if b.onDisk() || b.letter != 0 { // a released batch stays in its dead letter
			q.leftOnDisk.Add(uint64(len(b.items)))
			q.finish(b, recycle, outcomeLeftAtStop(reason))
			continue
		}
		if q.cfg.OnDrop != nil {
			items = append(items, b.items...) // b is recycled (or still in a Send): a copy
		}
		dropped += len(b.items)
		q.tier.acknowledge(b) // given up on: the WAL must not replay it either
		q.dropped.Add(uint64(len(b.items)))
		q.finish(b, recycle, outcomeDropped(reason))
	}
	if dropped > 0 {
		q.logger.Warn("vinequeue: stop: dropped what the deadline left undelivered", "items", dropped, "batches", len(given), "reason", reason)
	}
	if len(items) == 0 {
		return
	}
	calls := (len(items) + dropChunk - 1) / dropChunk
	q.onDrops.due(calls)
	go func() {
		for len(items) > 0 {
			n := min(len(items), dropChunk)
			q.callOnDrop(items[:n:n], reason)
			q.onDrops.done()
			items = items[n:]
		}
	}()
}

// dropChunk bounds the items of one OnDrop call made by giveUpAll, so that
// a Stop out of time with many small batches waiting makes a few calls,
// each of a size OnDrop can be expected to handle promptly.
const dropChunk = 4096

// finishGrace is how long Stop, out of time, waits for one step of what is
// left once delivery is given up: the senders taking or finishing a batch,
// or one OnDrop call. Counting takes microseconds, so only an OnDrop that
// blocks (or crawls) uses it up.
const finishGrace = 50 * time.Millisecond

// dropCalls counts the OnDrop calls under way or due (a sender's drop, or
// giveUpAll's merged calls), so that Stop can wait for them.
type dropCalls struct {
	n        atomic.Int64
	progress chan struct{} // cap 1: a call returned
}

func (d *dropCalls) due(n int) { d.n.Add(int64(n)) }

func (d *dropCalls) done() {
	d.n.Add(-1)
	select {
	case d.progress <- struct{}{}:
	default:
	}
}

// waitOnDrops waits until no OnDrop call is under way or due, as long as
// each call returns within finishGrace of the previous one (or of the
// wait's start); past that, Stop stops waiting and the calls left are made
// after it returns. The items are counted (Stats.Dropped) before either.
func (q *Queue[T]) waitOnDrops() {
	t := time.NewTimer(finishGrace)
	defer t.Stop()
	for q.onDrops.n.Load() > 0 {
		select {
		case <-q.onDrops.progress:
			t.Reset(finishGrace)
		case <-t.C:
			q.logger.Warn("vinequeue: stop: an OnDrop call is still running past the deadline; not waiting for it")
			return
		}
	}
}

func (q *Queue[T]) countRetry(int, error) {
	q.retries.Add(1)
	q.sinkFailing()
}

// sinkFailing records that a Send failed: Health reports the sink failing
// since the first failure after the last success.
func (q *Queue[T]) sinkFailing() {
	q.failingSince.CompareAndSwap(0, time.Now().UnixNano())
}

// durable reports whether b has been through the WAL: its spans name where
// its items are, or (id 0) that a write failed. Not all of them need be on
// disk: see onDisk.
func (b *pending[T]) durable() bool { return len(b.spans) > 0 }

// onDisk reports whether every item of b is in the WAL, so that leaving b
// unacknowledged keeps it for the next New. A span of id 0 names items
// whose write failed (a full WAL, an item too large): they are in memory
// only, and the next New could not replay them.
func (b *pending[T]) onDisk() bool {
	if len(b.spans) == 0 {
		return false
	}
	for _, s := range b.spans {
		if s.id == 0 {
			return false
		}
	}
	return true
}

// giveUp ends a batch that Stop ran out of time for: a batch in the WAL
// (written now if the periodic tier has not written it yet) stays
// there for the next New to replay; any other goes to OnDrop, also one only
// partly in the WAL (a write that failed part way): OnDrop has all of it and
// the part on disk is acknowledged, so nothing is both dropped and replayed.
// recycle is false for a batch a stuck Send may still be reading.
func (q *Queue[T]) giveUp(b *pending[T], reason error, recycle bool) {
	var rw recordWriter              // Stop out of time only
	q.persistOwned(b, &rw)           // not delivered: on disk if the tier writes such batches
	if b.onDisk() || b.letter != 0 { // a released batch stays in its dead letter
		q.leftOnDisk.Add(uint64(len(b.items)))
		q.finish(b, recycle, outcomeLeftAtStop(reason))
		return
	}
	q.drop(b, reason, recycle)
}

// drop hands a batch to OnDrop and counts it. With recycle false the batch
// may still be in a Send: OnDrop gets a copy of the items. The batch is
// counted Dropped (and acknowledged) before OnDrop is called, so that an
// OnDrop that blocks past Stop's deadline cannot leave it Buffered; it is
// finished after, so that Flush covers the call.
func (q *Queue[T]) drop(b *pending[T], reason error, recycle bool) {
	q.tier.acknowledge(b) // given up on: the WAL must not replay it either
	q.dropped.Add(uint64(len(b.items)))
	q.logger.Warn("vinequeue: dropped a batch", "items", len(b.items), "reason", reason)
	if q.cfg.OnDrop != nil {
		items := b.items
		if !recycle {
			items = append([]T(nil), items...)
		}
		q.onDrops.due(1)
		q.callOnDrop(items, reason)
		q.onDrops.done()
	}
	q.finish(b, recycle, outcomeDropped(reason))
}

// callOnDrop calls OnDrop, recovering (and logging) a panic in it.
func (q *Queue[T]) callOnDrop(items []T, reason error) {
	defer func() {
		if p := recover(); p != nil {
			q.logger.Error("vinequeue: OnDrop panicked", "panic", p)
		}
	}()
	q.cfg.OnDrop(items, reason)
}

// finish marks b done and, with recycle, recycles it. outcome is how it
// ended for EnqueueAck's callers waiting on its items (nil: delivered).
func (q *Queue[T]) finish(b *pending[T], recycle bool, outcome error) {
	b.retire(&q.durable.waits) // no write of it under way or to come
	q.written(b)               // delivered or given up on: no longer at risk
	settleAcks(b, outcome)
	q.hold(-b.bytes)
	seq, sd, n, replay, keyed, letter := b.seq, b.spill, len(b.items), b.replay, len(b.shards) > 0, b.letter
	for _, s := range b.shards {
		s.inflight.Store(false)
	}
	if keyed {
		// settleFlight may wait for its shard's batch to be finished (a
		// write by another writer it missed: a look that read inflight
		// before this and wrote after the batch was recycled): a change
		// a waiter waits for, signalled as every such change is.
		q.durable.waits.signal()
	}
	if recycle {
		q.putBatch(b)
	}
	if replay {
		q.replayAck <- struct{}{} // cap 1, one replayed batch at a time
	}
	if letter != 0 {
		q.park.ack <- struct{}{} // cap 1, one released batch at a time
	}
	if sd != nil { // read back from a spill: there is a spiller
		q.spill.list.settle(sd, n)
	}
	// The primary may be waiting for keyed shards to be free, or any
	// collector for memory to fall below the hard level; otherwise they have
	// no reason to run (their tick is the backstop for a level change they
	// missed).
	if keyed {
		q.keyed.kick.Store(true) // its shards are free: cut for them
		q.wakeCollector()
	}
	if q.stalledShards.Load() > 0 {
		q.wakeCollectors()
	}
	q.track.complete(seq)
}

// hold records n more bytes held by batches (n < 0: fewer). Never called
// pinned. Releasing bytes settles the governor at once, so that producers
// waiting for memory to fall (Policy Block) wake now rather than at its
// next sample.
func (q *Queue[T]) hold(n int64) {
	q.bytesHeld.Add(n)
	q.gov.Add(n)
	if n < 0 {
		q.gov.Settle()
	}
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
	clear(b.shards)
	clear(b.acks) // finish told them
	b.acks = b.acks[:0]
	b.bytes, b.seq, b.shards, b.spans, b.spill, b.replay = 0, 0, b.shards[:0], b.spans[:0], nil, false
	b.keys, b.letter, b.since, b.ticket = b.keys[:0], 0, 0, 0
	b.claim.Store(0)
	b.wrote.Store(0)
	select {
	case q.free <- b:
	default:
	}
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

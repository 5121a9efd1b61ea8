package engine

import (
	"errors"
	"slices"
	"time"
)

// A keyed batch that fails for good when its dead letter cannot be
// written (ParkKeys). Its keys cannot park: parking needs that dead letter,
// written before the key's later items. Leaving the batch in the main log
// and letting its keys flow, as an unkeyed batch is left, would deliver the
// keys' later items now and the failed ones at the next New: per key, out
// of order. Parking the later items would not help either: their dead
// letters, written first, would be released before the failed items (id
// order), and a restart would park the replayed failed items behind them.
//
// So the batch waits, unfinished and off its sender (a sender held until
// there is room could wait for good: the WAL frees room as batches are
// delivered), for room for its dead letter (waitLoop tries again every
// waitRetry, as the log's ack writer frees acknowledged segments), as long
// as other batches are under way whose delivery can free some. Its
// keyed shards stay in flight meanwhile, so its keys' later items stay in
// their shards (counted by the memory governor, and in Sync mode on disk
// already); a replayed batch holds the replay, whose keyed items precede
// the shards' anyway. Once written, it is a dead letter like any other
// (its keys park, OnDrop, Stats.DeadLettered) and its shards go on: their
// later items park behind it, in order. Meanwhile its items count as
// Buffered, and Flush waits for them.
//
// When it cannot wait: at Stop (which must not wait for room that may
// never come), when the queue has stalled (no sender busy and no batch
// finished for a few retries: nothing is left to free room, and Flush
// would wait for good), or when the write failed for another reason than
// a full WAL (a broken log, a codec that refuses an item), the batch is
// left unacknowledged in the main log for the next New (Stats.LeftOnDisk), and
// its keys are held behind it for the rest of the queue's life: a sender
// takes the items of those keys out of every later batch and leaves them
// in the main log too, written first if the tier had not written them
// (take, holdBehind), so that the next New replays each key's items in
// their order (record id order) with nothing of theirs delivered ahead.
// An item whose write fails there cannot be replayed: it goes to OnDrop.
//
// The same holds a parked key behind an item of its own that the full WAL
// would not take as a parked dead letter (divert, notParked): left in the
// main log, it would otherwise be parked at the next New behind the key's
// later items, parked meanwhile once room freed.
//
// A crash at any point replays the same: the failed batch and its keys'
// later items are unacknowledged in the main log until a dead letter holds
// the batch (and then it is the dead letter that parks them).

// waitRetry is how often a batch waiting for room tries its dead letter
// again: about the log's ack interval, at which acknowledged segments are
// freed.
const waitRetry = 20 * time.Millisecond

// waitingFailure is a keyed batch failed for good, waiting for room for its
// dead letter.
type waitingFailure[T any] struct {
	b      *pending[T]
	reason error
}

// await takes b, failed for good (reason) and not dead-lettered (err, the
// write's error), to wait for room (true), unless it cannot wait (Stop has
// begun, or the WAL is not full): then its keys are held behind it, and the
// caller leaves it in the main log (false). b is on disk and keyed. Caller
// holds q.finishing shared.
func (p *parking[T]) await(b *pending[T], reason, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping || !errors.Is(err, ErrWALFull) {
		p.holdBehindLocked(b.keys)
		return false
	}
	if len(p.waiting) == 0 {
		p.q.logger.Warn("vinequeue: a failed keyed batch waits for room in the WAL for its dead letter; its keys' later items wait behind it", "items", len(b.items))
	}
	p.waiting = append(p.waiting, waitingFailure[T]{b, reason})
	select {
	case p.waitKick <- struct{}{}:
	default:
	}
	return true
}

// holdBehindLocked holds keys behind a batch left in the main log.
func (p *parking[T]) holdBehindLocked(keys []uint64) {
	for _, k := range keys {
		p.behind[k] = struct{}{}
	}
	p.nbehind.Store(int64(len(p.behind)))
}

// waitLoop is the goroutine that writes the dead letters of the batches
// waiting for room; at Stop it gives up on those that still do not fit.
func (p *parking[T]) waitLoop() {
	q := p.q
	var tick <-chan time.Time
	var t *time.Ticker
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-p.waitKick:
		case <-tick:
		case <-q.closedCtx.Done():
			p.retryWaiting(true)
			return
		}
		if left := p.retryWaiting(false); left > 0 && t == nil {
			t = time.NewTicker(waitRetry)
			tick = t.C
		} else if left == 0 && t != nil {
			t.Stop()
			t, tick = nil, nil
			p.idleRetries = 0 // the next to wait counts its own stall
		}
	}
}

// retryWaiting tries the waiting batches' dead letters again and returns
// how many still wait. With final (Stop), none waits any longer: those that
// still do not fit are left in the main log, their keys held behind them,
// and the batches that fail from now on do not wait either (await). Nor do
// they wait once the queue has stalled (stalled): no batch is left whose
// delivery would free room; then the acknowledged segments are freed now
// (the log's ack writer would, later), and those that still do not fit
// are left.
func (p *parking[T]) retryWaiting(final bool) int {
	q := p.q
	p.mu.Lock()
	list := p.waiting
	p.waiting = nil
	if final {
		p.stopping = true
	}
	p.mu.Unlock()
	still := p.tryWaiting(list, final)
	if !final && len(still) > 0 && p.stalled() {
		if err := q.wal.log.Checkpoint(); err != nil {
			q.logger.Warn("vinequeue: freeing acknowledged wal segments for a dead letter failed", "err", walErr(err))
		}
		still = p.tryWaiting(still, true)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting = append(still, p.waiting...) // oldest first
	return len(p.waiting)
}

// stalled reports whether, for stallRetries retries in a row, no sender
// held a batch and no batch was finished: nothing is under way whose
// delivery frees room. (Counting the batches cut and not finished would
// not do: those cut behind a waiting batch, in its shards, are among them,
// and cannot go before it.) waitLoop goroutine.
func (p *parking[T]) stalled() bool {
	q := p.q
	busy := false
	for i := range q.senders {
		if q.senders[i].b.Load() != nil {
			busy = true
			break
		}
	}
	finished := q.track.finished()
	if busy || finished != p.lastFinished {
		p.lastFinished, p.idleRetries = finished, 0
		return false
	}
	p.idleRetries++
	return p.idleRetries >= stallRetries
}

// stallRetries is how many retries (waitRetry apart) with nothing under way
// make a stall: more than one, so that a batch cut between two looks (items
// waiting in a ring for the collector's tick) is seen in a sender's hands.
const stallRetries = 3

// tryWaiting writes the dead letters of list's batches and returns those
// that still wait for room; with last, none waits: those that do not fit
// are left in the main log, their keys held behind them.
func (p *parking[T]) tryWaiting(list []waitingFailure[T], last bool) []waitingFailure[T] {
	q := p.q
	var still []waitingFailure[T]
	for _, w := range list {
		b, reason := w.b, w.reason
		// Finished as a sender finishes a batch (deliver): Stop, out of
		// time, waits for it as for them.
		q.finishing.RLock()
		_, err := q.tier.deadLetter(b, reason)
		switch {
		case err == nil:
			q.deadLettered.Add(uint64(len(b.items)))
			q.drop(b, reason, true)
		case last || !errors.Is(err, ErrWALFull):
			q.logger.Error("vinequeue: a failed keyed batch could not be dead-lettered; it stays in the WAL with its keys' later items", "items", len(b.items), "err", err)
			p.mu.Lock()
			p.holdBehindLocked(b.keys)
			p.mu.Unlock()
			q.leftOnDisk.Add(uint64(len(b.items)))
			q.finish(b, true, outcomeLeftFailed(reason))
		default:
			still = append(still, w)
		}
		q.finishing.RUnlock()
	}
	return still
}

// holdBehind takes the items of keys held behind a batch left in the main
// log out of b, before b is sent, and leaves them in the main log too
// (written first if the tier had not written b; one whose write failed goes
// to OnDrop). It reports whether b is left empty. Sender goroutine (take).
func (p *parking[T]) holdBehind(b *pending[T], rw *recordWriter) (empty bool) {
	q := p.q
	held := func(k uint64) bool { _, ok := p.behind[k]; return ok }
	p.mu.Lock()
	if !slices.ContainsFunc(b.keys, held) {
		p.mu.Unlock()
		return false
	}
	keep := make([]bool, len(b.items))
	for i, k := range b.keys {
		keep[i] = !held(k)
	}
	p.mu.Unlock()
	// On disk first, where the tier writes a batch only if it is not
	// delivered: these items will not be.
	q.persistOwned(b, rw)
	pos := itemPositions(b.spans, len(b.items))
	var dropped []T
	var removedBytes int64
	for i, v := range b.items {
		if keep[i] {
			continue
		}
		removedBytes += q.bytesOf(b.items[i : i+1])
		if pos != nil && pos[i].id != 0 {
			q.leftOnDisk.Add(1) // unacknowledged: the next New replays it
			continue
		}
		dropped = append(dropped, v)
	}
	if len(dropped) > 0 {
		reason := errors.New("vinequeue: an earlier item of its key was left in the WAL for the next New, and this one could not be written there")
		q.dropped.Add(uint64(len(dropped)))
		if q.cfg.OnDrop != nil {
			q.onDrops.due(1)
			q.callOnDrop(dropped, reason)
			q.onDrops.done()
		}
	}
	return q.keepOnly(b, keep, pos, removedBytes)
}

package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// durableMark is the periodic tier's Stats.DurableThrough: an instant
// before which every accepted item is on disk and fsynced.
//
// A checkpoint that starts at S covers the items accepted before S that it
// finds in the rings, the ack inbox and the keyed shards (each collector
// cuts and writes them during its part of the checkpoint, which starts after
// S). What it cannot see are batches cut earlier and handed to a sender that
// has not written them yet: their write may end after the checkpoint's
// fsync. So every batch handed on unwritten is registered here, by the
// start of the last checkpoint its collector took part in before cutting
// it (since: its items were accepted no earlier, as that checkpoint cut
// every earlier item), until it is written (or, if its write failed,
// finished). Just before its fsync the checkpoint takes the oldest since
// still registered, and once the fsync succeeds advances the mark to the
// smaller of that and S.
//
// A checkpoint that could not write everything it found (a write failed,
// a keyed shard holds items whose write failed, a collector left rings full
// at the hard level) does not advance the mark: the mark only ever moves to
// an instant every item before which is known to be durable.
//
// Instants are kept as nanoseconds on a clock that reads like Unix time but
// advances with the monotonic clock from New's time (epoch): a wall-clock
// step (NTP, an operator) would otherwise let a checkpoint start stamped
// ahead of the clock claim items accepted after the clock went back, and
// the mark is handed out with epoch's monotonic reading, so a caller's
// time.Now() compares with it on that clock too.
type durableMark struct {
	through atomic.Int64 // nanos; 0: nothing claimed yet
	epoch   time.Time    // New's time, with its monotonic reading
	origin  int64        // epoch's nanos: no item is older (the collectors' first since)
	mu      sync.Mutex
	// unwritten counts the batches handed on and not written yet, by since.
	// Few keys: one per checkpoint whose batches are still being written.
	unwritten map[int64]int
}

// sinceUnknown registers a batch whose items' acceptance is not bounded
// (items whose write failed in a keyed shard): while it is registered the
// mark does not move.
const sinceUnknown = 1

// registerUnwritten notes b as handed on unwritten, its items accepted at
// since or later (see durableMark).
func (q *Queue[T]) registerUnwritten(b *pending[T], since int64) {
	d := &q.durable
	d.mu.Lock()
	if d.unwritten == nil {
		d.unwritten = make(map[int64]int)
	}
	d.unwritten[since]++
	d.mu.Unlock()
	b.since = since
}

// written takes b off the unwritten batches (its write succeeded, or it is
// finished); nothing if it was not registered.
func (q *Queue[T]) written(b *pending[T]) {
	if b.since == 0 {
		return
	}
	d := &q.durable
	d.mu.Lock()
	if d.unwritten[b.since]--; d.unwritten[b.since] <= 0 {
		delete(d.unwritten, b.since)
	}
	d.mu.Unlock()
	b.since = 0
}

// unwrittenSince is what b is registered with when its collector hands it
// on, its collector's since being since: since if no item of it is on disk
// yet (the tier writes it before Send), sinceUnknown if some of its items'
// write failed (they will not be written: the batch is at risk until it is
// finished), 0 if it is on disk already.
func unwrittenSince[T any](b *pending[T], since int64) int64 {
	if len(b.spans) == 0 {
		return since
	}
	for _, s := range b.spans {
		if s.id == 0 {
			return sinceUnknown
		}
	}
	return 0
}

// checkpointDrain is a collector's share of a checkpoint's cutting: every
// ring of its shard, handed off or current, drained and the partial batch
// cut. It reports whether it can vouch for having found every item
// accepted before the checkpoint started: not if it left rings full at the
// hard level, nor if it met a hand-off under way. A ring being handed off
// is stored in the P's slot before it leaves Cur and cleared only after it
// is on the shard's stack, so when the drain saw none, each ring that had
// already left Cur is on the stack, and the second drain's take finds it.
func (c *collector[T]) checkpointDrain() bool {
	c.handoffSeen = false
	c.drain(true)
	c.drain(true)
	return !c.stalled && !c.handoffSeen
}

// bound is the instant a checkpoint started at start can claim:
// start, or the oldest since of a batch still unwritten.
func (d *durableMark) bound(start int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for since := range d.unwritten {
		start = min(start, since)
	}
	return start
}

// advance moves the mark to at if that is later (a checkpoint bound can be
// older than the mark: a batch registered long ago is still unwritten).
func (d *durableMark) advance(at int64) {
	if at <= sinceUnknown {
		// Held by a batch of unknown acceptance: nothing to claim (and
		// the mark, still zero, would otherwise read as 1970).
		return
	}
	for {
		old := d.through.Load()
		if at <= old || d.through.CompareAndSwap(old, at) {
			return
		}
	}
}

// newDurableMark starts the mark's clock now.
func newDurableMark() durableMark {
	now := time.Now()
	return durableMark{epoch: now, origin: now.UnixNano()}
}

// nanos is t on the mark's clock (t with a monotonic reading: time.Now()).
func (d *durableMark) nanos(t time.Time) int64 { return d.origin + int64(t.Sub(d.epoch)) }

// at is the instant ns on the mark's clock, with a monotonic reading.
func (d *durableMark) at(ns int64) time.Time { return d.epoch.Add(time.Duration(ns - d.origin)) }

// durableThrough is Stats.DurableThrough for q's tier.
func (q *Queue[T]) durableThrough() time.Time {
	switch q.tier.(type) {
	case syncTier[T]:
		return time.Now() // an accepted item is on disk when its call returns
	case periodicTier[T]:
		if ns := q.durable.through.Load(); ns != 0 {
			return q.durable.at(ns)
		}
	}
	return time.Time{}
}

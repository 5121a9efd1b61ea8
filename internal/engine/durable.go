package engine

import (
	"cmp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// durableMark is the periodic tier's Stats.DurableThrough: an instant
// before which every accepted item is delivered, or on disk and fsynced.
//
// A checkpoint that starts at S covers the items accepted before S that it
// finds in the rings, the ack inbox and the keyed shards (each collector
// cuts and writes them during its part of the checkpoint, which starts after
// S), and the batches cut earlier and not delivered yet, which it finds
// here: every batch handed on unwritten is registered, by the start of the
// last checkpoint its collector took part in before cutting it (since: its
// items were accepted no earlier, as that checkpoint cut every earlier
// item), until it is written, delivered or finished (written with an item
// the WAL cannot take, it stays registered until finished: that item is in
// memory only). The checkpoint writes
// every registered batch nobody has claimed (writeUnwritten, in cut order);
// one claimed by another writer (a sender whose batch failed for good,
// Stop) stays registered until that write is over. Just before its fsync
// the checkpoint takes the oldest since still registered, and once the
// fsync succeeds advances the mark to the smaller of that and S. A batch
// delivered unwritten leaves the registry as its Send returns: its items
// are not at risk, and it holds the mark no longer.
//
// A checkpoint that could not write everything it found (a write failed,
// a keyed shard holds items whose write failed, a collector left rings full
// at the hard level) does not advance the mark: the mark only ever moves to
// an instant every item before which is known to be delivered or durable.
//
// Instants are kept as nanoseconds on a clock that reads like Unix time but
// advances with the monotonic clock from New's time (epoch): a wall-clock
// step (NTP, an operator) would otherwise let a checkpoint start stamped
// ahead of the clock claim items accepted after the clock went back, and
// the mark is handed out with epoch's monotonic reading, so a caller's
// time.Now() compares with it on that clock too.
type durableMark[T any] struct {
	through atomic.Int64 // nanos; 0: nothing claimed yet
	epoch   time.Time    // New's time, with its monotonic reading
	origin  int64        // epoch's nanos: no item is older (the collectors' first since)
	mu      sync.Mutex
	// unwritten counts the batches handed on and not written yet, by since.
	// Few keys: one per checkpoint whose batches are still being written.
	unwritten map[int64]int
	// tickets are the registered batches with a write ticket (unwritten,
	// nobody has claimed them yet when registered), for a checkpoint to
	// claim and write. The ticket and seq are copied here: once a batch
	// leaves the registry it may be recycled, and its fields rewritten.
	tickets map[*pending[T]]ticketOf
	// waits is where those who wait on a ticket (waitWrite, claimToWrite,
	// settleFlight) sleep once a short spin has not seen the end.
	waits ticketWaits
}

// ticketOf is what the registry keeps of a batch with a ticket.
type ticketOf struct{ ticket, seq uint64 }

// sinceUnknown registers a batch whose items' acceptance is not bounded
// (items whose write failed in a keyed shard): while it is registered the
// mark does not move.
const sinceUnknown = 1

// registerUnwritten notes b as handed on unwritten, its items accepted at
// since or later (see durableMark). A batch none of whose items is on disk
// gets a write ticket (see writeTicket), and a checkpoint or a Stop out of
// time writes it unless its Send succeeds first. A dead letter delivered
// again (parking's release) is on disk already, in its dead letter: it is
// neither registered nor written to the main log.
func (q *Queue[T]) registerUnwritten(b *pending[T], since int64) {
	if b.letter != 0 {
		return
	}
	d := &q.durable
	d.mu.Lock()
	if d.unwritten == nil {
		d.unwritten = make(map[int64]int)
		d.tickets = make(map[*pending[T]]ticketOf)
	}
	d.unwritten[since]++
	b.since = since
	if len(b.spans) == 0 {
		b.ticket = b.seq + 1
		b.claim.Store(b.ticket)
		d.tickets[b] = ticketOf{b.ticket, b.seq}
	}
	d.mu.Unlock()
}

// written takes b off the unwritten batches (its write succeeded, it was
// delivered, or it is finished); nothing if it was not registered.
func (q *Queue[T]) written(b *pending[T]) {
	if b.since == 0 {
		return
	}
	d := &q.durable
	d.mu.Lock()
	if d.unwritten[b.since]--; d.unwritten[b.since] <= 0 {
		delete(d.unwritten, b.since)
	}
	delete(d.tickets, b)
	b.since = 0
	d.mu.Unlock()
}

// unwrittenSince is what b is registered with when its collector hands it
// on, its collector's since being since: since if no item of it is on disk
// yet (written by a checkpoint unless delivered first), sinceUnknown if some
// of its items' write failed (they will not be written: the batch is at
// risk until it is finished), 0 if it is on disk already.
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

// # The write ticket
//
// A batch cut unwritten in the periodic tier is written only if it is still
// undelivered when a checkpoint (or a Stop out of time) looks for it; one
// whose Send succeeds first is never written, and needs no acknowledgement
// (it has no spans). Whoever claims its ticket first decides:
//
//   - a writer (a checkpoint, Stop out of time, or its sender for a batch
//     failed for good, as the dead-letter path expects it on disk as
//     before) swaps claim from the ticket to 0, writes it, and stores the
//     ticket in wrote;
//   - its sender, once Send returned nil, swaps claim from the ticket to
//     ticket|claimTaken: delivered, nothing to write. Had a writer claimed
//     it first, the sender waits for wrote and acknowledges the batch's
//     spans as any batch's;
//   - its sender, while parking moves items of parked keys out of it
//     (take), holds it (ticket|claimHeld): a writer waits, since the items
//     are changing; the sender then puts the ticket back, or, every item
//     parked, takes it.
//
// A writer reads b.items while Send may be reading them too: Send must not
// modify its batch (Config.Send). The ticket is seq+1, unique, so a claim
// made with a ticket read before the batch was recycled fails.
const (
	claimTaken = 1 << 63
	claimHeld  = 1 << 62
)

// claimToWrite claims b, whose ticket is t, for a writer: true if the
// caller is to write it (then writeClaimed); false if someone else claimed
// it first (a write under way or over, delivered, finished or recycled).
// It waits (w) while b's sender holds it: parking's divert, a few item
// moves, or a dead letter's write and fsync.
func (b *pending[T]) claimToWrite(t uint64, w *ticketWaits) bool {
	for {
		switch c := b.claim.Load(); c {
		case t:
			if b.claim.CompareAndSwap(t, 0) {
				return true
			}
		case t | claimHeld:
			w.wait(func() bool { return b.claim.Load() != t|claimHeld })
		default:
			return false
		}
	}
}

// waitWrite waits (w) for the write of b (ticket t) a writer claimed, if
// any: only by whoever keeps b from being recycled meanwhile.
func (b *pending[T]) waitWrite(t uint64, w *ticketWaits) {
	if b.claim.Load() != 0 {
		return
	}
	w.wait(func() bool { return b.wrote.Load() == t })
}

// ticketWaits lets a goroutine that waits on a write ticket (a write of a
// batch to be over, a held batch to be let go) sleep rather than spin: the
// write is an encoding, a compression and a write to the log, milliseconds
// for a large batch or a slow disk (longer when the log must make room),
// and a Gosched loop kept a core busy all that time. A wait spins briefly
// first (most writes are over in microseconds), then sleeps until the next
// signal, made after every change a waiter may wait for (writeClaimed,
// release, retire, and finish clearing a keyed shard's inflight), and
// looks again. One per queue: waits are rare and
// short, so a signal wakes every sleeper, and a signal with none costs one
// atomic load.
type ticketWaits struct {
	sleeping atomic.Int32 // goroutines between taking ch and looking again
	mu       sync.Mutex
	ch       chan struct{} // closed by the next signal (nil: none made yet)
}

// ticketSpins is how many times a wait yields before it sleeps: a few
// microseconds, the length of the writes most waits are for.
const ticketSpins = 16

// wait returns once done reports true (done reads atomics only).
func (w *ticketWaits) wait(done func() bool) {
	for range ticketSpins {
		if done() {
			return
		}
		runtime.Gosched()
	}
	for {
		w.mu.Lock()
		if w.ch == nil {
			w.ch = make(chan struct{})
		}
		ch := w.ch
		w.sleeping.Add(1)
		w.mu.Unlock()
		// Counted as sleeping before looking: a change made after this
		// look is signalled (signal sees the count), and one made before
		// it is seen here.
		ok := done()
		if !ok {
			<-ch
		}
		w.sleeping.Add(-1)
		if ok {
			return
		}
	}
}

// signal wakes every waiter, after a change one may wait for.
func (w *ticketWaits) signal() {
	if w.sleeping.Load() == 0 {
		return
	}
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// settleSent is b's sender's side once Send is over (or b is given up),
// the batch being its own again (out of its slot): sent, it takes b
// unwritten; otherwise it writes it (rw) unless a writer claimed it
// first; either way, if a writer claimed it first, it waits for that write
// to be over, after which b's spans name where it is. Nothing for a batch
// without a ticket.
func (q *Queue[T]) settleSent(b *pending[T], sent bool, rw *recordWriter) {
	t := b.ticket
	if t == 0 {
		return
	}
	for {
		c := b.claim.Load()
		if c != t {
			b.waitWrite(t, &q.durable.waits) // 0: a writer's; taken: nothing under way
			return
		}
		if sent {
			if b.claim.CompareAndSwap(t, t|claimTaken) {
				q.written(b) // delivered: no longer at risk
				return
			}
		} else if b.claim.CompareAndSwap(t, 0) {
			q.writeClaimed(b, t, rw)
			return
		}
	}
}

// hold keeps writers off b while its sender changes its items (parking):
// true if the caller holds it (then release, or retire); false if b has no
// ticket, or a writer claimed it first (whose write is then over).
func (b *pending[T]) hold(w *ticketWaits) bool {
	t := b.ticket
	if t == 0 {
		return false
	}
	if b.claim.CompareAndSwap(t, t|claimHeld) {
		return true
	}
	b.waitWrite(t, w)
	return false
}

// release lets writers claim b again (see hold), and wakes a writer
// waiting for that.
func (b *pending[T]) release(w *ticketWaits) {
	b.claim.Store(b.ticket)
	w.signal()
}

// retire ends b's ticket as b is finished: nobody may claim it from now
// on, and a write claimed earlier is over. Every path that finishes a
// batch has settled it already; this is what makes recycling it safe
// whatever the path.
func (b *pending[T]) retire(w *ticketWaits) {
	t := b.ticket
	if t == 0 {
		return
	}
	for {
		c := b.claim.Load()
		switch {
		case c == 0:
			b.waitWrite(t, w)
			return
		case c&claimTaken != 0:
			return
		case b.claim.CompareAndSwap(c, t|claimTaken): // t, or held by the caller
			if c != t {
				w.signal() // a writer may wait for the hold to end
			}
			return
		}
	}
}

// writeUnwritten is a checkpoint's pass over the registry: every batch
// registered with a ticket and not claimed yet is written, in cut order
// (so that a key's batches reach the WAL in its order), whether it waits
// for a sender, is in Send or retrying, or is being taken. A batch another
// writer claimed is left to that write (it stays registered until it is
// over, and holds the mark meanwhile); one delivered meanwhile is not
// written. Collector (the primary, at a checkpoint).
func (c *collector[T]) writeUnwritten() {
	q := c.q
	d := &q.durable
	d.mu.Lock()
	refs := make([]ticketRef[T], 0, len(d.tickets)) // once per checkpoint
	for b, tk := range d.tickets {
		refs = append(refs, ticketRef[T]{b, tk})
	}
	d.mu.Unlock()
	slices.SortFunc(refs, func(x, y ticketRef[T]) int { return cmp.Compare(x.seq, y.seq) })
	for _, r := range refs {
		if r.b.claimToWrite(r.ticket, &d.waits) {
			q.writeClaimed(r.b, r.ticket, &c.enc)
		}
		c.serveKeyed()
	}
}

// writeKeyed is a checkpoint's pass over the keyed shards, after
// writeUnwritten: in each shard, a backlog of full batches is cut into the
// shard's cut queue, what the shard handed on is settled (settleFlight:
// written, delivered, or another writer's write waited for; a key's
// records reach the WAL in its order), and what is left, less than a
// batch, is written where it is (persistShard). So every keyed item
// accepted so far is then delivered or on disk, or its write is over. A
// Stop that can run out of time runs it as it begins too (stop). It
// reports false if a shard holds items whose write failed: the checkpoint
// cannot claim them. Collector (the primary).
func (c *collector[T]) writeKeyed() bool {
	q := c.q
	complete := true
	size := int(q.batchSize.Load())
	for i := range q.keyed.shards {
		s := &q.keyed.shards[i]
		// Cut rather than moved into the shard's queue and written
		// there: each item is copied once rather than twice. The
		// batches are written just below, and sent as they are (the
		// collector's next cut dispatches them, one at a time).
		for s.backlog() >= size && s.cutOne(c, size) {
			q.keyed.kick.Store(true)
		}
		c.settleFlight(s) // what it handed on first: a key's order on disk
		c.absorb(s, true) // what its ring holds, into the shard
		s.mu.Lock()
		q.tier.persistShard(c, s)
		for _, sp := range s.spans {
			if sp.id == 0 { // items whose write failed, held here
				complete = false
			}
		}
		s.mu.Unlock()
		c.serveKeyed()
	}
	return complete
}

// persistOwned has the tier write b (persist), b being the caller's to
// give up or to hand on (a batch waiting for a sender, cut and waiting in
// a keyed shard, or given up at Stop), so that it cannot be recycled
// meanwhile: its ticket, if any, is claimed first, and if a writer claimed
// it first, that write is waited for.
func (q *Queue[T]) persistOwned(b *pending[T], rw *recordWriter) {
	t := b.ticket
	if t == 0 {
		q.tier.persist(b, rw)
		return
	}
	if b.claimToWrite(t, &q.durable.waits) {
		q.writeClaimed(b, t, rw)
		return
	}
	b.waitWrite(t, &q.durable.waits)
}

// writeClaimed writes b, whose ticket t the caller claimed, and marks the
// write over (wrote), which whoever waits for it (waitWrite, settleFlight)
// sees, woken.
func (q *Queue[T]) writeClaimed(b *pending[T], t uint64, rw *recordWriter) {
	q.tier.persist(b, rw)
	b.wrote.Store(t)
	q.durable.waits.signal()
}

// ticketRef is a registered batch with its ticket, as writeUnwritten found
// it.
type ticketRef[T any] struct {
	b *pending[T]
	ticketOf
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
func (d *durableMark[T]) bound(start int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for since := range d.unwritten {
		start = min(start, since)
	}
	return start
}

// advance moves the mark to at if that is later (a checkpoint bound can be
// older than the mark: a batch registered long ago is still unwritten).
func (d *durableMark[T]) advance(at int64) {
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
func newDurableMark[T any]() durableMark[T] {
	now := time.Now()
	return durableMark[T]{epoch: now, origin: now.UnixNano()}
}

// nanos is t on the mark's clock (t with a monotonic reading: time.Now()).
func (d *durableMark[T]) nanos(t time.Time) int64 { return d.origin + int64(t.Sub(d.epoch)) }

// at is the instant ns on the mark's clock, with a monotonic reading.
func (d *durableMark[T]) at(ns int64) time.Time { return d.epoch.Add(time.Duration(ns - d.origin)) }

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

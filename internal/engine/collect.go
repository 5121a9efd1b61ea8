package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/ring"
	"github.com/vineroute/vinequeue/wal"
)

// A collector is the single consumer of the P rings of its central shard
// (central.go); the primary's is also the consumer of the keyed shards and
// the durable inbox. It cuts batches, hands them to the senders, recycles
// drained rings as spares, and (the primary) answers Flush and Stop. It is
// the only goroutine that touches its cur, ready and backlog (and, the
// primary, the shards' cut queues), so they need no lock.
type collector[T any] struct {
	q        *Queue[T]
	shard    *central[T]       // the central shard it drains
	stalled  bool              // it counts in Queue.stalledShards
	backlog  []*ring.SPSC[T]   // handed-off rings not yet drained, oldest first
	active   bool              // the last drain found work: linger before parking
	flushing bool              // a Flush is draining: ignore the hard-level stall
	cur      *pending[T]       // the batch being filled from the rings
	durable  *pending[T]       // the batch being filled from the durable inbox (on disk already)
	ready    fifo[*pending[T]] // cut, waiting for a sender, oldest first
	inItems  []T               // the durable inbox's spare slices, swapped on take
	inSpans  []span
	ack      ackCut[T]    // EnqueueAck's batch being filled (ack.go; the primary's only)
	enc      recordWriter // the collector's record buffers (spills, checkpoints)
	// syncing is the periodic tier's checkpoint sync under way (nil:
	// none), ended by endSync.
	syncing *checkpointSync
	// since is the start of the last checkpoint this collector took part
	// in (New's time before the first): it had cut every item accepted
	// before it, so the batches it cuts now hold none (durable.go).
	since int64
	// handoffSeen: a drain of the current rings met a hand-off under way
	// (ProcSlot.handing), whose ring may hold items it did not find.
	handoffSeen bool
}

// collect is the primary collector: centrals[0]'s rings, and the work that
// has one owner (see central.go).
func (q *Queue[T]) collect() {
	c := &collector[T]{q: q, shard: q.centrals[0], since: q.durable.origin}
	// A tick every half FlushInterval bounds an item's wait: it is in a
	// ring at most one period before a tick drains it, and every tick cuts
	// the partial batch. An idle queue wakes only for these ticks.
	tick := time.NewTicker(q.cfg.FlushInterval / 2)
	defer tick.Stop()
	var checkpoint <-chan time.Time
	if d := q.tier.checkpointEvery(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		checkpoint = t.C
	}
	var unspilled <-chan *pending[T]
	if s := q.spill; s != nil {
		unspilled = s.out
	}
	for {
		var out chan *pending[T]
		var next *pending[T]
		if c.ready.len() > 0 {
			out, next = q.work, c.ready.peek()
		} else if c.linger() {
			c.drain(false)
			c.cutKeyed(cutFull)
			continue
		}
		select {
		case out <- next:
			c.ready.pop()
			if len(c.backlog) > 0 || !c.shard.full.Empty() {
				c.drain(false) // room for more: go on with the backlog
			}
		case <-q.wake:
			c.takeInbox()
			c.drain(false)
		case <-tick.C:
			q.gov.Refresh()
			c.takeInbox()
			c.drain(true)
			c.cutKeyed(cutPartial)
		case b := <-unspilled:
			c.push(b)
		case b := <-q.replayCh:
			c.pushReplayed(b)
		case b := <-q.releaseCh():
			c.pushReplayed(b) // a dead letter delivered again (park.go)
		case <-checkpoint:
			q.tier.checkpoint(c)
		case <-c.syncEnded():
			c.endSync()
		case req := <-q.reqs:
			switch req.kind {
			case reqFlush:
				// A Flush covers what sits in the rings even at the hard
				// level: drain them regardless, once.
				c.flushing = true
				c.takeInbox()
				c.drain(true)
				c.flushing = false
				c.shardRequest(reqFlush)
				c.cutKeyed(cutAll)
				q.track.wait(q.seq.Load(), req.done)
				if s := q.spill; s != nil {
					s.list.track.wait(s.list.issued(), req.spilled)
				} else {
					req.spilled <- nil
				}
			case reqStop:
				c.stop(req)
				return
			}
		}
		c.cutKeyed(cutFull)
	}
}

// lingerRounds bounds how long the collector keeps looking for handed-off
// rings before it parks: each round yields the P once (runtime.Gosched), a
// few hundred nanoseconds to a few microseconds. A producer hands a ring off
// every BatchSize items; if the collector is parked then, the hand-off pays
// for waking it (a futex call, microseconds on the producer's own time). A
// short linger after activity avoids that under sustained load, and an idle
// queue still parks at once: lingering only follows work.
const lingerRounds = 64

// linger waits briefly for more handed-off rings after the collector did
// work; it reports whether one arrived.
func (c *collector[T]) linger() bool {
	if !c.active {
		return false
	}
	c.active = false
	for range lingerRounds {
		if !c.shard.full.Empty() || c.shard.wantsDrain.Load() {
			c.active = true
			return true
		}
		runtime.Gosched()
	}
	return false
}

// drain moves the handed-off rings into batches and, with partial, also what
// the P's current rings hold, cutting the partial batch at the end.
func (c *collector[T]) drain(partial bool) {
	q := c.q
	if c.stalled { // set again below if memory is still at Hard
		c.stalled = false
		q.stalledShards.Add(-1)
	}
	if c.shard == q.centrals[0] { // the ack inbox has one owner, the primary
		c.takeAcks(partial)
	}
	c.backlog = c.shard.full.TakeAll(c.backlog)
	if len(c.backlog) > 0 {
		c.active = true
	}
	// Handed-off rings are drained even at the hard level: none is handed
	// off while holdRings (producers keep their full ring and meet the
	// Policy), so the backlog cannot grow there, and a ring left full would
	// hold its slots' memory up for good (the level could never fall).
	recycled := len(c.backlog)
	for i, r := range c.backlog {
		c.drainRing(r)
		c.backlog[i] = nil
		q.recycleRing(r)
	}
	c.backlog = c.backlog[:0]
	if partial {
		c.drainRings(true)
		// A producer that waits for a ring while its ring has room
		// (the one it waited behind went on and did not fill it) is
		// woken here at the latest: each tick, Flush and Stop.
		q.pokeAll()
	} else {
		c.drainWaiting(recycled)
	}
}

// drainRings drains what the current rings of the shard's Ps hold; with
// cutPartial, the partial batch is cut too (the interval trigger, Flush,
// Stop). Without it, only full batches go out (a ring reported BatchSize
// items).
func (c *collector[T]) drainRings(cutPartial bool) {
	q := c.q
	stopping := q.closing.Load() || c.flushing
	for _, s := range q.procs.Load().procs {
		if s.central != c.shard {
			continue
		}
		if !stopping && q.holdRings() {
			if !c.stalled {
				c.stalled = true
				q.stalledShards.Add(1)
			}
			q.signalStall()
			break
		}
		// A ring loaded here may be handed off meanwhile; draining it
		// again from the backlog later is harmless: this goroutine is its
		// only consumer.
		c.drainRing(s.Cur.Load())
		if s.handing.Load() != nil {
			c.handoffSeen = true
		}
	}
	if cutPartial {
		if c.cur != nil && len(c.cur.items) > 0 {
			c.cut()
		}
		c.cutDurable()
	}
}

// signalStall wakes producers waiting for a spare ring: a collector has
// stopped draining at the hard level, so none will come until memory falls.
func (q *Queue[T]) signalStall() { q.pokeAll() }

// drainRing moves what r holds now into batches. It takes a snapshot of the
// length rather than chasing a producer that keeps pushing, which would
// bounce the cache line of r's tail for every few items.
func (c *collector[T]) drainRing(r *ring.SPSC[T]) {
	q := c.q
	size := int(q.batchSize.Load())
	for left := r.Len(); left > 0; {
		if c.cur == nil {
			c.cur = q.getBatch()
		}
		before := len(c.cur.items)
		c.cur.items = r.Drain(c.cur.items, min(size-before, left))
		got := len(c.cur.items) - before
		left -= got
		q.drained.Add(uint64(got))
		// Counted as soon as drained, so the level check sees them.
		n := q.bytesOf(c.cur.items[before:])
		c.cur.bytes += n
		q.hold(n)
		if len(c.cur.items) >= size {
			c.cut()
		}
	}
}

// cut hands on the batch being filled from the rings. A tier that writes
// undelivered batches (periodic) writes it only if a checkpoint finds it
// undelivered, here (writeReady) or past here (writeUnwritten).
func (c *collector[T]) cut() {
	b := c.cur
	c.cur = nil
	c.push(b)
}

// writeReady has the tier persist the batches still waiting for a sender:
// the checkpoint, and Stop out of time (they then stay in the WAL rather
// than being lost). The collector owns them until a sender takes them, so
// nobody else writes them meanwhile.
func (c *collector[T]) writeReady() {
	for _, b := range c.ready.items() {
		c.q.persistOwned(b, &c.enc)
	}
}

// takeInbox moves the items made durable by their call so far (the sync
// tier's intake, requeued dead letters) into batches of BatchSize (a call
// that has returned has its items in the inbox).
// Their bytes were charged at admission: they are carried, not charged.
func (c *collector[T]) takeInbox() {
	items, spans := c.q.inbox.take(c.inItems[:0], c.inSpans[:0])
	c.fill(&c.durable, items, spans, nil, c.cutDurable)
	clear(items) // retention rule
	c.inItems, c.inSpans = items[:0], spans[:0]
}

// fill is the one way an inbox's items become batches (the durable inbox,
// the ack inbox): it moves items, named by spans when they are on disk,
// into the batch *cur (getting one when there is none), and hands it on
// with cut each time it holds BatchSize items. with, unless nil, is told of
// each batch that receives items (the ack inbox lists its group there).
// Their bytes were charged at admission: carried, not charged.
func (c *collector[T]) fill(cur **pending[T], items []T, spans []span, with func(*pending[T]), cut func()) {
	q := c.q
	size := int(q.batchSize.Load())
	for len(items) > 0 {
		if *cur == nil {
			*cur = q.getBatch()
		}
		b := *cur
		if with != nil {
			with(b)
		}
		// max: adaptive sizing may have shrunk size below what b holds
		// (a negative n would panic here; b is cut with what it has).
		n := min(max(size-len(b.items), 0), len(items))
		b.items = append(b.items, items[:n]...)
		if len(spans) > 0 {
			b.spans = takeSpans(b.spans, &spans, n)
		}
		b.bytes += q.bytesOf(items[:n])
		items = items[n:]
		if len(b.items) >= size {
			cut()
		}
	}
}

// cutDurable hands on the batch of durable items being filled (it is on
// disk already: never written again).
func (c *collector[T]) cutDurable() {
	if b := c.durable; b != nil && len(b.items) > 0 {
		c.durable = nil
		c.push(b)
	}
}

// number gives b the next batch sequence number, for Flush and Stop.
func (c *collector[T]) number(b *pending[T]) {
	b.seq = c.q.seq.Add(1) - 1
	c.q.track.cut(b.seq)
}

func (c *collector[T]) push(b *pending[T]) {
	c.number(b)
	q := c.q
	// Keyed batches are not spilled: their order would have to survive
	// the round trip through the WAL. Nor are replayed batches: they are
	// on disk already, and the replayer sends one at a time. Nor are
	// EnqueueAck's: their callers wait on them (ack.go).
	if s := q.spill; s != nil && len(b.shards) == 0 && !b.replay && b.letter == 0 && len(b.acks) == 0 && !q.closing.Load() && q.gov.Level() == governor.LevelHard && s.spill(c, b) {
		return
	}
	if _, ok := q.tier.(periodicTier[T]); ok {
		if since := unwrittenSince(b, c.since); since != 0 {
			q.registerUnwritten(b, since)
		}
	}
	c.ready.push(b)
}

// dispatch hands every ready batch to the senders, waiting for them, until
// ctx ends.
func (c *collector[T]) dispatch(ctx context.Context) error {
	for c.ready.len() > 0 {
		select {
		case c.q.work <- c.ready.peek():
			c.ready.pop()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// stop is the collector's part of Stop: by now every ring is sealed and every
// push that saw an unsealed ring has finished (Stop's barrier), so a last
// drain collects every accepted item.
func (c *collector[T]) stop(req request) {
	q := c.q
	// The secondary collectors drain and hand out their rings meanwhile.
	shardsDone := c.stopShards(req.ctx)
	// Stop closed the intake gate: every item accepted through the durable
	// inbox is in it by now.
	c.takeInbox()
	if s := q.spill; s != nil {
		s.stop(c, req.ctx)
	}
	c.drain(true)
	c.cutKeyed(cutStop)
	// A Stop that can run out of time writes, now, while ctx still runs,
	// everything accepted that is not delivered or on disk (the periodic
	// tier writes a batch only if it is found undelivered), as a
	// checkpoint does: the batches cut (waiting, in Send or retrying),
	// then what the keyed shards hold behind a batch in flight, which
	// cannot be cut before it is finished; and from here on a sender
	// writes its batch before Send (take). So, out of time, it has nothing
	// left to write past its deadline. Its fsync starts too, and runs
	// while ctx does: the log's close, which Stop waits for whether in
	// time or not, then has next to nothing left to sync. A Stop whose ctx
	// cannot end (Close) never gives a batch up, so it writes nothing it
	// need not.
	if t, ok := q.tier.(periodicTier[T]); ok && q.stopCanEnd {
		q.writeBeforeSend.Store(true)
		c.writeUnwritten()
		c.writeKeyed()
		t.log.StartSync()
	}
	// Hand out everything: ready batches, the replay (which runs on while
	// ctx allows) and the keyed shards (which dispatch once it is over).
	replayDone := q.replayDone
	var err error
	for err == nil && (c.ready.len() > 0 || replayDone != nil || q.keyed.hasWork()) {
		var out chan *pending[T]
		var next *pending[T]
		if c.ready.len() > 0 {
			out, next = q.work, c.ready.peek()
		}
		select {
		case out <- next:
			c.ready.pop()
		case b := <-q.replayCh:
			c.pushReplayed(b)
		case <-replayDone:
			replayDone = nil
		case <-q.wake:
		case <-req.ctx.Done():
			err = req.ctx.Err()
		}
		c.cutKeyed(cutStop)
	}
	// Every secondary has handed its batches to a sender, or given them up
	// at the deadline.
	for range cap(shardsDone) {
		if serr := <-shardsDone; err == nil {
			err = serr
		}
	}
	if err == nil {
		// Every batch is cut: wait for the senders to finish them.
		waitDone := make(chan error, 1)
		q.track.wait(q.seq.Load(), waitDone)
		select {
		case err = <-waitDone:
		case <-req.ctx.Done():
			err = req.ctx.Err()
		}
	}
	if err != nil {
		// Out of time: what is not yet with a sender is given up (left
		// in the WAL, or to OnDrop); senders see their context cancelled
		// and Stop gives up what they hold (Queue.stop).
		q.sendCancel()
		reason := fmt.Errorf("%w: stop deadline: %w", ErrClosed, err)
		c.cutKeyed(cutAll) // what cutStop left uncut, to be given up too
		// A tier that writes undelivered batches wrote them as Stop
		// began (above), and the batches cut since are on disk already:
		// these find nothing to write. They stay so that a batch some
		// path left unwritten is still left in the WAL, in its key's
		// order, late rather than lost.
		c.writeReady()
		given := append([]*pending[T](nil), c.ready.items()...)
		c.ready.reset()
		c.settleKeyed()
		given = append(given, q.keyed.takeAll()...)
		// The replayer ends on sendCancel; a batch it was handing over
		// meanwhile is given up too.
		for replayDone != nil {
			select {
			case b := <-q.replayCh:
				c.number(b)
				q.hold(b.bytes)
				given = append(given, b)
			case <-replayDone:
				replayDone = nil
			}
		}
		q.giveUpAll(given, reason, true)
	}
	close(q.work)
	req.done <- err
}

// pushReplayed takes a batch from the replayer: its bytes are held from
// now until it is finished.
func (c *collector[T]) pushReplayed(b *pending[T]) {
	c.q.hold(b.bytes)
	c.push(b)
}

// Flush returns once every item accepted before the call has been delivered
// or given up on (OnDrop), or ctx is done. That includes items the governor
// spilled to the WAL: they are read back once memory is below the soft
// level, so at the hard level Flush waits for memory to fall (or ctx). It
// includes the backlog New found in the WAL too (accepted by the process
// before): Flush first waits for the replayer to have handed all of it to
// the collector (replayCh is unbuffered, so by then the collector has
// numbered every replayed batch), and the request below covers it.
func (q *Queue[T]) Flush(ctx context.Context) error {
	// A ctx already ended gets its error, not whatever a select among
	// ready cases would pick at random.
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-q.replayDone:
	case <-q.stopDone:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	req := request{kind: reqFlush, ctx: ctx, done: make(chan error, 1), spilled: make(chan error, 1)}
	select {
	case q.reqs <- req:
	case <-q.stopDone:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, ch := range []chan error{req.done, req.spilled} {
		select {
		case err := <-ch:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The dead-letter releases asked for so far (park.go), counted only
	// now: a batch finished above may have asked for one that delivers
	// items accepted before the call (a parked key's letter written while
	// its older ones were released).
	if p := q.park; p != nil {
		return p.waitReleased(ctx, p.issued())
	}
	return nil
}

// Stop stops accepting items and delivers everything accepted. Its first
// step seals intake: from then on (Health.Closed) every call returns
// ErrClosed; a call that overlaps that step may still be accepted, and is
// then delivered like any other. When ctx ends first, what is
// undelivered goes to OnDrop, is counted in Stats.Dropped, and Stop returns
// ctx's error. Stop waits for the queue's goroutines to exit. Calling it again
// returns the first call's result. A call made while the first is under way
// waits for it only until its own ctx ends: then the Stop under way runs
// out of time (a Close included), so that it too returns by its deadline.
func (q *Queue[T]) Stop(ctx context.Context) error {
	q.stopMu.Lock()
	sc := q.stopCtx
	first := sc == nil
	if first {
		sc = newStopContext(ctx)
		q.stopCtx = sc
		q.stopCanEnd = ctx.Done() != nil
	}
	q.stopMu.Unlock()
	if first {
		q.stopErr = q.stop(sc)
		sc.release()
		close(q.stopDone)
		return q.stopErr
	}
	select {
	case <-q.stopDone:
	case <-ctx.Done():
		sc.end(ctx.Err())
		<-q.stopDone
	}
	return q.stopErr
}

// stopContext is the context a Stop runs under: its caller's, which a
// later Stop call ends at that call's deadline. Its Err is whichever
// context's error ended it first.
type stopContext struct {
	context.Context // the first caller's: Deadline and Value
	done            chan struct{}
	once            sync.Once
	mu              sync.Mutex
	err             error
	unwatch         func() bool
}

func newStopContext(ctx context.Context) *stopContext {
	sc := &stopContext{Context: ctx, done: make(chan struct{})}
	if err := ctx.Err(); err != nil {
		// Ended before Stop began: so from its first look, and with no
		// goroutine of AfterFunc's left behind.
		sc.end(err)
		sc.unwatch = func() bool { return false }
		return sc
	}
	// No goroutine for a ctx that cannot end (Close).
	sc.unwatch = context.AfterFunc(ctx, func() { sc.end(ctx.Err()) })
	return sc
}

func (sc *stopContext) Done() <-chan struct{} { return sc.done }

func (sc *stopContext) Err() error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.err
}

// end ends sc with err, unless it has ended already.
func (sc *stopContext) end(err error) {
	sc.once.Do(func() {
		sc.mu.Lock()
		sc.err = err
		sc.mu.Unlock()
		close(sc.done)
	})
}

// release stops watching the caller's ctx once the Stop is over.
func (sc *stopContext) release() { sc.unwatch() }

// Close is Stop(context.Background()).
func (q *Queue[T]) Close() error { return q.Stop(context.Background()) }

func (q *Queue[T]) stop(ctx context.Context) error {
	// Seal, wait, seal, wait. A push pinned to its P cannot be stopped, so
	// stopping the world (ReadMemStats does) waits for every push that saw
	// an unsealed ring. The first round seals the current rings; a hand-off
	// that was already under way may then install a fresh, unsealed spare,
	// so the second round seals those. After it no push can succeed, and
	// every accepted item is in a ring the collector's last drain reaches.
	q.growMu.Lock()
	q.closing.Store(true)
	q.closedCancel()
	q.growMu.Unlock()
	q.pokeAll()      // producers waiting for a spare ring: ErrClosed on their retry
	q.intake.close() // waits for Sync-mode and keyed calls under way
	// Keyed calls outside the gate: their shards refuse from now on.
	q.keyed.shedCredit(q, true)
	var ms runtime.MemStats
	for range 2 {
		q.growMu.Lock()
		for _, s := range q.procs.Load().procs {
			s.Cur.Load().Seal()
		}
		q.growMu.Unlock()
		runtime.ReadMemStats(&ms)
	}
	q.sealed.Store(true)

	done := make(chan error, 1)
	req := request{kind: reqStop, ctx: ctx, done: done}
	q.reqs <- req // the collector never blocks for long: it answers at once
	err := <-done
	<-q.done
	if err != nil {
		// Out of time: the senders' context is cancelled; what a Send
		// still holds is given up now rather than waited for.
		q.abandonInFlight(fmt.Errorf("%w: stop deadline: %w", ErrClosed, err))
	} else {
		<-q.sendersDone
	}
	q.sendCancel()
	// Closing the governor waits for an OnLevelChange in progress; Stop
	// waits for it only while ctx allows (everything is delivered by now:
	// a hook still running is not an error of Stop's).
	govClosed := make(chan struct{})
	go func() { q.gov.Close(); close(govClosed) }()
	select {
	case <-govClosed:
	case <-ctx.Done():
		q.logger.Warn("vinequeue: stop: OnLevelChange still running at the deadline; not waiting for it")
	}
	if q.wal != nil {
		if werr := q.wal.log.Close(); werr != nil && !errors.Is(werr, wal.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("vinequeue: closing the wal: %w", werr))
		}
	}
	if err != nil {
		return fmt.Errorf("vinequeue: stop: %w", err)
	}
	return nil
}

package engine

import (
	"fmt"
	"math"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/pin"
	"github.com/vineroute/vinequeue/ring"
)

// AfterWatermark follows, unpinned, a push that reported a watermark: the
// ring held a batch's worth of items (BatchSize, or RingSize if smaller)
// and the pinned caller has tried to hand it off (HandOff; h is what that
// did). The ring is handed off whole, so that the collector never reads a
// ring its producer is still writing (which would bounce the ring's cache
// lines between the two cores). The pushed item is accepted whatever
// happens here.
func (q *Queue[T]) AfterWatermark(h HandOffResult) error {
	switch h.kind() {
	case handedOff:
		q.handedOff(h)
	case noSpare:
		q.wakeCollectors() // they are behind: let them recycle rings
		q.refill()
	}
	q.pressureDelay()
	return nil
}

// HandOffResult says what a pinned hand-off did (its kind), and to which
// central shard, so that the caller can act on it once unpinned.
type HandOffResult uint32

const (
	handedOff  HandOffResult = iota // the P's spare took the full ring's place
	keptFull                        // holdRings: the full ring stays, producers meet the Policy
	noSpare                         // the P has no spare ring: get one unpinned (refill)
	sealedRing                      // Stop has begun
)

func (h HandOffResult) kind() HandOffResult { return h & 0xff }

// central is the index of the shard the ring went to (handedOff).
func (h HandOffResult) central() int { return int(h >> 8) }

// HandOff moves the P's full ring to the collector (one CAS) and installs
// the P's spare in its place. It runs pinned, so it touches only the P's
// slot, the ring and lock-free structures: no lock, no channel, no governor
// charge, no callback. Getting a spare ring (from the pool, or making one
// and charging the governor for it) is refill's job, unpinned.
func (q *Queue[T]) HandOff(s *ProcSlot[T]) HandOffResult {
	if q.closing.Load() {
		return sealedRing
	}
	if q.holdRings() {
		return keptFull
	}
	r := s.spare.Swap(nil)
	if r == nil {
		return noSpare
	}
	full := s.Cur.Load()
	// The spare's next batch of slots was last read by the collector, on
	// another core: ask for those lines now, all at once, so that the
	// pushes do not wait for them one by one (see ring.SPSC.Prefetch).
	r.Prefetch(q.watermark())
	s.handing.Store(full) // between the two stores the ring is in neither place
	s.Cur.Store(r)
	s.central.full.Push(full)
	s.handing.Store(nil)
	return handedOff | HandOffResult(s.central.index)<<8
}

// handedOff follows a hand-off, unpinned: it wakes the shard's collector
// and, at the normal level, gets the P its next spare. Above Normal the P
// keeps none; it gets one when it needs one (noSpare), so that idle spares
// do not keep the level up.
func (q *Queue[T]) handedOff(h HandOffResult) {
	q.centrals[h.central()].wakeUp()
	if q.gov.Level() == governor.LevelNormal {
		q.refill()
	}
}

// refill gets a spare ring for the caller's P, unpinned: one from the pool,
// or a new one, charged to the governor, while the queue has fewer than
// RingsPerP per P (newRing). It reports false when there is none to have.
// As sync.Pool's pinSlow does, it does the slow work unpinned, then pins
// again and re-checks: the goroutine may be on another P by then, whose
// slot takes the ring if it has no spare.
func (q *Queue[T]) refill() bool {
	r := q.newRing()
	if r == nil {
		return false
	}
	q.placeRing(r)
	return true
}

// placeRing gives r to the current P as its spare, and hands the P's ring
// off if it holds a batch (so a waiting producer's full ring moves on at
// once). A ring nobody takes goes back to the pool.
func (q *Queue[T]) placeRing(r *ring.SPSC[T]) {
	pid := pin.Pin()
	t := q.procs.Load()
	h := keptFull
	if uint(pid) < uint(len(t.procs)) && !q.closing.Load() {
		s := t.procs[pid]
		if s.spare.CompareAndSwap(nil, r) {
			r = nil
		}
		if cur := s.Cur.Load(); cur.Len() >= q.watermark() {
			h = q.HandOff(s)
		}
	}
	pin.Unpin()
	if r != nil {
		q.recycleRing(r)
	}
	if h.kind() == handedOff {
		q.centrals[h.central()].wakeUp()
	}
}

// watermark is the ring fill at which a ring is handed off.
func (q *Queue[T]) watermark() int { return min(q.cfg.BatchSize, q.cfg.RingSize) }

// pinSlot pins the goroutine (pin.Pin: the engine's slow paths need no
// assembly) and returns its P's slot, first growing the slot table if
// GOMAXPROCS grew since the table was made. The caller unpins (pin.Unpin).
func (q *Queue[T]) pinSlot() *ProcSlot[T] {
	for {
		pid := pin.Pin()
		if t := q.procs.Load(); uint(pid) < uint(len(t.procs)) {
			return t.procs[pid]
		}
		pin.Unpin()
		q.growProcs(pid)
	}
}

// EnqueueSlow is Enqueue past its fast path (the caller is unpinned): the
// tier's intake.
func (q *Queue[T]) EnqueueSlow(v T) error { return q.tier.acceptOne(v) }

// enqueueRing is the ring tiers' acceptOne: it retries a push that found
// the ring full or sealed, or the P without a slot yet (GOMAXPROCS grew).
// Each round passes admission first: at Hard, the Policy.
func (q *Queue[T]) enqueueRing(v T) error {
	for {
		if err := q.admit(1, 0, true); err != nil {
			return err
		}
		s := q.pinSlot()
		r := s.Cur.Load()
		switch r.Push(v) {
		case ring.Pushed:
			pin.Unpin()
			return nil
		case ring.PushedWatermark:
			h := q.HandOff(s)
			pin.Unpin()
			return q.AfterWatermark(h)
		case ring.Sealed:
			pin.Unpin()
			return ErrClosed
		}
		// Full: hand the ring off and retry with the spare.
		h := q.HandOff(s)
		pin.Unpin()
		if err := q.afterFull(s, h); err != nil {
			return err
		}
	}
}

// afterFull follows up, unpinned, a hand-off tried because the P's ring was
// full; the caller then retries (keptFull: its admission meets the Policy).
// s is the slot of that P.
func (q *Queue[T]) afterFull(s *ProcSlot[T], h HandOffResult) error {
	switch h.kind() {
	case sealedRing:
		return ErrClosed
	case handedOff:
		q.handedOff(h)
	case noSpare:
		return q.waitSpare(s)
	}
	return nil
}

// waitSpare waits, unpinned, for the full ring of slot s to move on. It
// first tries to get a spare at once (refill: one from the pool, or room to
// make one). Failing that it asks the shard's collector to drain s's ring
// where it is (wantsDrain, drainWaiting) and parks for a recycled ring,
// which it gives to whatever P it is on then (placeRing: installing it,
// rather than putting it back for a retry, keeps many waiters from passing
// one spare around without any of them using it). The caller retries: the
// ring has room again, or a spare, or the retry meets the Policy (the hard
// level) or ErrClosed (Stop).
//
// The park is one channel receive, not a select: at a thousand producers
// parks are frequent, each on a goroutine whose stack is cold and often
// still at its starting size, and a select both costs more and needs
// enough stack to make that first park grow it (a copy per goroutine).
// So the stall, a freed ring and Stop wake waiters by the same channel,
// with nil (pokeWaiters).
func (q *Queue[T]) waitSpare(s *ProcSlot[T]) error {
	q.spareWaiters.Add(1)
	r, err := q.awaitRing(s)
	q.spareWaiters.Add(-1)
	if r != nil {
		q.placeRing(r)
	}
	if err == nil {
		q.prefetchCur()
	}
	return err
}

// prefetchCur asks for the next batch of slots of the current P's ring, as
// a hand-off does for the spare it installs (HandOff): a waiter may go on
// in a ring the collector drained where it was (drainWaiting), whose slots
// the collector's core read last. Prefetching is a hint: nothing blocks.
func (q *Queue[T]) prefetchCur() {
	s := q.pinSlot()
	s.Cur.Load().PrefetchDrained(q.watermark())
	pin.Unpin()
}

// awaitRing is waitSpare's wait: a ring to place, or nil to retry.
func (q *Queue[T]) awaitRing(s *ProcSlot[T]) (*ring.SPSC[T], error) {
	switch {
	case q.closing.Load():
		return nil, ErrClosed
	case q.holdRings():
		return nil, nil // the retry meets the Policy
	case q.refill():
		return nil, nil
	}
	s.central.wantsDrain.Store(true)
	q.wakeCollectors()
	return <-q.spare, nil
}

// pokeWaiters wakes up to n producers parked in waitSpare with a nil, so
// that they retry. Each waiter is counted (spareWaiters) before it checks
// what it waits for, and whoever changes that (Stop, the stall, a freed
// ring) does so before it reads the count (sequentially consistent
// atomics): a waiter either sees the change or is poked. A nil that a
// non-waiter takes from the pool is passed on (newRing, shedRings), so a
// poke is not lost; one left over wakes a later waiter for a harmless retry.
func (q *Queue[T]) pokeWaiters(n int32) {
	n = min(n, q.spareWaiters.Load())
	for ; n > 0; n-- {
		select {
		case q.spare <- nil:
		default:
			return // the pool is full: nobody waits on it
		}
	}
}

// pokeAll wakes every producer parked in waitSpare, and every keyed call
// parked for room (waitRoom): Stop, the stall, the tick.
func (q *Queue[T]) pokeAll() {
	q.pokeWaiters(math.MaxInt32)
	q.keyed.wakeParked()
}

// shedRings lets go of the rings nobody is using, the Ps' spares and the
// pool's, so that memory can fall: a producer about to be refused or to wait
// at the hard level calls it. Unpinned (freeRing charges the governor).
func (q *Queue[T]) shedRings() {
	for _, s := range q.procs.Load().procs {
		if r := s.spare.Swap(nil); r != nil {
			q.freeRing(r)
		}
	}
	var pokes int32
	defer func() { q.pokeWaiters(pokes) }() // pass the pokes on
	for {
		select {
		case r := <-q.spare:
			if r == nil {
				pokes++
				continue
			}
			q.freeRing(r)
		default:
			return
		}
	}
}

// EnqueueBatch is the root package's EnqueueBatch: the tier's intake.
func (q *Queue[T]) EnqueueBatch(vs []T) (int, error) { return q.tier.acceptBatch(vs) }

// enqueueRingBatch is the ring tiers' acceptBatch. It passes admission
// once per ring's worth of items.
func (q *Queue[T]) enqueueRingBatch(vs []T) (int, error) {
	if q.itemLimit != 0 {
		for i, v := range vs {
			if err := q.CheckItem(v); err != nil {
				n, berr := q.enqueueRingBatch(vs[:i])
				if berr != nil {
					return n, berr
				}
				return n, err
			}
		}
	}
	n := 0
	for n < len(vs) {
		if err := q.admit(len(vs)-n, 0, true); err != nil {
			return n, err
		}
		s := q.pinSlot()
		r := s.Cur.Load()
		k, mark := r.PushBatch(vs[n:])
		n += k
		if n == len(vs) && !mark && r.Len() < r.Cap() {
			pin.Unpin()
			return n, nil
		}
		if r.IsSealed() {
			pin.Unpin()
			return n, ErrClosed
		}
		// The ring holds a batch, or is full: hand it off and go on
		// with the spare.
		h := q.HandOff(s)
		pin.Unpin()
		if n == len(vs) {
			// All in (a sealed ring is drained by Stop): only make sure
			// the next hand-off has a spare.
			switch h.kind() {
			case handedOff:
				q.handedOff(h)
			case noSpare:
				q.wakeCollectors()
				q.refill()
			}
			return n, nil
		}
		if err := q.afterFull(s, h); err != nil {
			return n, err
		}
	}
	return n, nil
}

// wakeCollector wakes the primary collector (keyed shards, the inbox, the
// replay: its work alone).
func (q *Queue[T]) wakeCollector() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// MaxFrameOverhead is the most the WAL's framing adds to an item (its
// length as a uvarint).
const MaxFrameOverhead = 10

// CheckItem refuses, in the periodic and overflow tiers (itemLimit set), an
// item too large for any WAL record: it could never be on disk. The check uses SizeOf (the
// encoding happens later, off the call); for []byte and string items it is
// exact. An item whose encoding still does not fit when it is written is
// delivered from memory only, counted and logged; one a spill meets is
// given up (spill.go).
func (q *Queue[T]) CheckItem(v T) error {
	if n := q.sizeOf(v); n > q.itemLimit {
		q.walRejected.Add(1)
		return fmt.Errorf("%w: item of %d bytes by SizeOf, WAL records hold %d", ErrTooLarge, n, q.wal.log.MaxRecord())
	}
	return nil
}

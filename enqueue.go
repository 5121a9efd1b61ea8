package vinequeue

import (
	"fmt"
	"unsafe"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/ring"
)

// Enqueue accepts v for delivery. nil means accepted: v will be delivered (or,
// if delivery fails for good, handed to OnDrop and counted). ErrClosed once
// Stop has begun; at the hard memory level, ErrFull under Policy Reject, and
// under Spill an error matching ErrWALFull while the WAL cannot take more.
//
// The common case touches only the calling P's ring: no lock, no shared
// write, no allocation, no clock. For 8-byte pointer-free items it is one
// assembly call (pinPush8), small enough for Enqueue to inline into its
// caller; anything else, and every push that meets the ring's limit, takes
// enqueuePinned.
func (q *Queue[T]) Enqueue(v T) error {
	if q.itemLimit != 0 {
		if err := q.checkItem(v); err != nil {
			return err
		}
	}
	if pinAssembly && !raceBuild && unsafe.Sizeof(v) == 8 && q.rawPush &&
		pinPush8(unsafe.Pointer(unsafe.SliceData(q.fast)), len(q.fast), *(*uint64)(unsafe.Pointer(&v))) {
		return nil
	}
	return q.enqueuePinned(v)
}

// atWatermark is entered pinned after a push that reported a watermark: the
// ring holds a batch's worth of items (BatchSize, or RingSize if smaller).
// The ring is handed off whole, so that the collector never reads a ring its
// producer is still writing (which would bounce the ring's cache lines
// between the two cores). It unpins; v is accepted whatever happens next.
func (q *Queue[T]) atWatermark(s *procSlot[T], tok *int32) error {
	h := q.handOff(s)
	procUnpin(tok)
	switch h {
	case handedOff:
		q.handedOff()
	case noSpare:
		q.wakeCollector() // it is behind: let it recycle rings
		q.refill()
	}
	q.pressureDelay()
	return nil
}

// handOffResult says what a pinned hand-off did, so that the caller can act
// on it once unpinned.
type handOffResult uint8

const (
	handedOff  handOffResult = iota // the P's spare took the full ring's place
	keptFull                        // holdRings: the full ring stays, producers meet the Policy
	noSpare                         // the P has no spare ring: get one unpinned (refill)
	sealedRing                      // Stop has begun
)

// handOff moves the P's full ring to the collector (one CAS) and installs
// the P's spare in its place. It runs pinned, so it touches only the P's
// slot, the ring and lock-free structures: no lock, no channel, no governor
// charge, no callback. Getting a spare ring (from the pool, or making one
// and charging the governor for it) is refill's job, unpinned.
func (q *Queue[T]) handOff(s *procSlot[T]) handOffResult {
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
	full := s.cur.Load()
	// The spare's next batch of slots was last read by the collector, on
	// another core: ask for those lines now, all at once, so that the
	// pushes do not wait for them one by one (see ring.SPSC.Prefetch).
	r.Prefetch(q.watermark())
	s.cur.Store(r)
	q.full.Push(full)
	return handedOff
}

// handedOff follows a hand-off, unpinned: it wakes the collector and, at
// the normal level, gets the P its next spare. Above Normal the P keeps
// none; it gets one when it needs one (noSpare), so that idle spares do not
// keep the level up.
func (q *Queue[T]) handedOff() {
	q.wakeCollector()
	if q.gov.Level() == governor.LevelNormal {
		q.refill()
	}
}

// refill gets a spare ring for the caller's P, unpinned: one from the pool,
// or a new one, charged to the governor, while the queue has fewer than
// ringsPerP per P (newRing). It reports false when there is none to have.
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
	pid, tok := procPin()
	t := q.procs.Load()
	h := keptFull
	if uint(pid) < uint(len(t.procs)) && !q.closing.Load() {
		s := t.procs[pid]
		if s.spare.CompareAndSwap(nil, r) {
			r = nil
		}
		if cur := s.cur.Load(); cur.Len() >= q.watermark() {
			h = q.handOff(s)
		}
	}
	procUnpin(tok)
	if r != nil {
		q.recycleRing(r)
	}
	if h == handedOff {
		q.wakeCollector()
	}
}

// watermark is the ring fill at which a ring is handed off.
func (q *Queue[T]) watermark() int { return min(q.cfg.BatchSize, q.cfg.RingSize) }

// pinSlot pins the goroutine and returns its P's slot, first growing the
// slot table if GOMAXPROCS grew since the table was made.
func (q *Queue[T]) pinSlot() (*procSlot[T], *int32) {
	for {
		pid, tok := procPin()
		if t := q.procs.Load(); uint(pid) < uint(len(t.procs)) {
			return t.procs[pid], tok
		}
		procUnpin(tok)
		q.growProcs(pid)
	}
}

// enqueueSlow is Enqueue past its fast path: the tier's intake.
func (q *Queue[T]) enqueueSlow(v T) error { return q.tier.acceptOne(v) }

// enqueueRing is the ring tiers' acceptOne: it retries a push that found
// the ring full or sealed, or the P without a slot yet (GOMAXPROCS grew).
// Each round passes admission first: at Hard, the Policy.
func (q *Queue[T]) enqueueRing(v T) error {
	for {
		if err := q.admit(1, 0, true); err != nil {
			return err
		}
		s, tok := q.pinSlot()
		r := s.cur.Load()
		switch r.Push(v) {
		case ring.Pushed:
			procUnpin(tok)
			return nil
		case ring.PushedWatermark:
			return q.atWatermark(s, tok)
		case ring.Sealed:
			procUnpin(tok)
			return ErrClosed
		}
		// Full: hand the ring off and retry with the spare.
		h := q.handOff(s)
		procUnpin(tok)
		if err := q.afterFull(h); err != nil {
			return err
		}
	}
}

// afterFull follows up, unpinned, a hand-off tried because the P's ring was
// full; the caller then retries (keptFull: its admission meets the Policy).
func (q *Queue[T]) afterFull(h handOffResult) error {
	switch h {
	case sealedRing:
		return ErrClosed
	case handedOff:
		q.handedOff()
	case noSpare:
		return q.waitSpare()
	}
	return nil
}

// waitSpare waits, unpinned, for a ring: one the collector recycles, or
// room to make one (a ring was freed), and gives it to whatever P the caller
// is on then, handing that P's full ring off (placeRing). Installing it,
// rather than putting it back for a retry, keeps many waiters from passing
// one spare around without any of them using it.
func (q *Queue[T]) waitSpare() error {
	q.spareWaiters.Add(1)
	defer q.spareWaiters.Add(-1)
	q.stallMu.Lock()
	stall := q.stallCh
	q.stallMu.Unlock()
	if q.holdRings() {
		return nil // the retry meets the Policy
	}
	if q.refill() {
		return nil
	}
	q.wakeCollector()
	select {
	case r := <-q.spare:
		q.placeRing(r)
		return nil
	case <-stall:
		return nil
	case <-q.closedCtx.Done():
		return ErrClosed
	}
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
	for {
		select {
		case r := <-q.spare:
			q.freeRing(r)
		default:
			return
		}
	}
}

// EnqueueBatch accepts vs in order and returns how many it accepted: all of
// them unless the error is non-nil (ErrClosed, ErrFull, ErrWALFull), in which
// case vs[n:] were not accepted. It is cheaper per item than Enqueue. It
// passes admission once per ring's worth of items.
func (q *Queue[T]) EnqueueBatch(vs []T) (int, error) { return q.tier.acceptBatch(vs) }

// enqueueRingBatch is the ring tiers' acceptBatch.
func (q *Queue[T]) enqueueRingBatch(vs []T) (int, error) {
	if q.itemLimit != 0 {
		for i, v := range vs {
			if err := q.checkItem(v); err != nil {
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
		s, tok := q.pinSlot()
		r := s.cur.Load()
		k, mark := r.PushBatch(vs[n:])
		n += k
		if n == len(vs) && !mark && r.Len() < r.Cap() {
			procUnpin(tok)
			return n, nil
		}
		if r.IsSealed() {
			procUnpin(tok)
			return n, ErrClosed
		}
		// The ring holds a batch, or is full: hand it off and go on
		// with the spare.
		h := q.handOff(s)
		procUnpin(tok)
		if n == len(vs) {
			// All in (a sealed ring is drained by Stop): only make sure
			// the next hand-off has a spare.
			switch h {
			case handedOff:
				q.handedOff()
			case noSpare:
				q.wakeCollector()
				q.refill()
			}
			return n, nil
		}
		if err := q.afterFull(h); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (q *Queue[T]) wakeCollector() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// maxFrameOverhead is the most the WAL's framing adds to an item (its
// length as a uvarint).
const maxFrameOverhead = 10

// checkItem refuses, in the periodic and overflow tiers (itemLimit set), an
// item too large for any WAL record: it could never be on disk. The check uses SizeOf (the
// encoding happens later, off the call); for []byte and string items it is
// exact. An item whose encoding still does not fit when it is written is
// delivered from memory only, counted and logged.
func (q *Queue[T]) checkItem(v T) error {
	if n := q.sizeOf(v); n > q.itemLimit {
		q.walRejected.Add(1)
		return fmt.Errorf("%w: item of %d bytes by SizeOf, WAL records hold %d", ErrTooLarge, n, q.wal.log.MaxRecord())
	}
	return nil
}

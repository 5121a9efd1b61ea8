package vinequeue

import (
	"errors"
	"time"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/ring"
)

// Enqueue accepts v for delivery. nil means accepted: v will be delivered (or,
// if delivery fails for good, handed to OnDrop and counted). ErrClosed once
// Stop has begun; ErrFull when memory is at the hard level and the Policy is
// Reject.
//
// The common case touches only the calling P's ring: no lock, no shared
// write, no allocation, no clock (DESIGN.md's fast-path rule).
func (q *Queue[T]) Enqueue(v T) error {
	pid, tok := procPin()
	if uint(pid) < uint(len(q.fast)) {
		s := &q.fast[pid]
		// nil until this P id first has a slot (see Queue.fast).
		if r := s.cur.Load(); r != nil {
			if r.TryPush(v) {
				procUnpin(tok)
				return nil
			}
			st := r.Push(v)
			if st == ring.Pushed {
				procUnpin(tok)
				return nil
			}
			if st == ring.PushedWatermark { // v is in, and a batch is ready
				return q.atWatermark(s, tok)
			}
		}
	}
	procUnpin(tok)
	return q.enqueueSlow(v)
}

// atWatermark is entered pinned after a push that reported a watermark: the
// ring holds a batch's worth of items (BatchSize, or RingSize if smaller).
// The ring is handed off whole, so that the collector never reads a ring its
// producer is still writing (which would bounce the ring's cache lines
// between the two cores). It unpins.
func (q *Queue[T]) atWatermark(s *procSlot[T], tok *int32) error {
	h := q.handOff(s)
	procUnpin(tok)
	q.afterHandOff(h)
	return nil
}

// handOffResult says what a pinned hand-off did, so that the caller can act
// on it once unpinned.
type handOffResult uint8

const (
	handedOff  handOffResult = iota // a spare took the full ring's place
	keptFull                        // memory is at Hard: no new ring, the full one stays
	noSpare                         // the collector is behind: no spare ring yet
	sealedRing                      // Stop has begun
)

// handOff moves the P's full ring to the collector (one CAS) and installs a
// spare. Called pinned: it must not block. At the hard memory level it keeps
// the full ring instead, so that producers meet the Policy.
func (q *Queue[T]) handOff(s *procSlot[T]) handOffResult {
	if q.closing.Load() {
		return sealedRing
	}
	if q.gov.Level() == governor.LevelHard && !q.spillPolicy() {
		return keptFull
	}
	r := q.newRing()
	if r == nil {
		return noSpare
	}
	full := s.cur.Load()
	s.cur.Store(r)
	q.full.Push(full)
	return handedOff
}

// afterHandOff wakes the collector for a handed-off ring and applies the
// soft-level delay; unpinned.
func (q *Queue[T]) afterHandOff(h handOffResult) {
	if h != sealedRing {
		q.wakeCollector()
	}
	q.pressureDelay()
}

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

// enqueueSlow retries a push that found the ring full or sealed, or the P
// without a slot yet (GOMAXPROCS grew).
func (q *Queue[T]) enqueueSlow(v T) error {
	if q.syncMode() {
		one := [1]T{v}
		_, err := q.enqueueSync(one[:])
		return err
	}
	for {
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
		// Full: the ring was kept at the hard level. Try to hand it off
		// now; if memory is still at Hard, apply the Policy.
		h := q.handOff(s)
		procUnpin(tok)
		switch h {
		case sealedRing:
			return ErrClosed
		case handedOff:
			q.wakeCollector()
			continue
		case noSpare:
			if err := q.waitSpare(); err != nil {
				return err
			}
			continue
		}
		if err := q.atHard(); err != nil {
			return err
		}
	}
}

// waitSpare waits, unpinned, until the collector recycles a ring, and hands
// off the full ring of whatever P the caller is on then (or, if that ring has
// room, keeps the spare for the next hand-off). Installing the spare itself,
// rather than putting it back for a retry, keeps many waiters from passing one
// spare around without any of them using it.
func (q *Queue[T]) waitSpare() error {
	q.stallMu.Lock()
	stall := q.stallCh
	q.stallMu.Unlock()
	if q.gov.Level() == governor.LevelHard {
		return nil // the retry meets the Policy
	}
	q.wakeCollector()
	var r *ring.SPSC[T]
	select {
	case r = <-q.spare:
	case <-stall:
		return nil
	case <-q.closedCtx.Done():
		return ErrClosed
	}
	pid, tok := procPin()
	t := q.procs.Load()
	if uint(pid) >= uint(len(t.procs)) || q.closing.Load() {
		procUnpin(tok)
		q.recycleRing(r)
		return nil // the retry sees the closing or grows procs
	}
	s := t.procs[pid]
	if cur := s.cur.Load(); cur.Len() == cur.Cap() {
		s.cur.Store(r)
		q.full.Push(cur)
		r = nil
	}
	procUnpin(tok)
	if r != nil {
		q.recycleRing(r)
	} else {
		q.wakeCollector()
	}
	return nil
}

// EnqueueBatch accepts vs in order and returns how many it accepted: all of
// them unless the error is non-nil (ErrClosed, ErrFull), in which case vs[n:]
// were not accepted. It is cheaper per item than Enqueue.
func (q *Queue[T]) EnqueueBatch(vs []T) (int, error) {
	if q.syncMode() {
		return q.enqueueSync(vs)
	}
	n := 0
	for n < len(vs) {
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
		// with a spare.
		h := q.handOff(s)
		procUnpin(tok)
		switch h {
		case sealedRing:
			if n == len(vs) {
				return n, nil // all in: the sealed ring is drained by Stop
			}
			return n, ErrClosed
		case handedOff:
			q.wakeCollector()
			q.pressureDelay()
			continue
		}
		if n == len(vs) {
			return n, nil
		}
		if h == noSpare {
			if err := q.waitSpare(); err != nil {
				return n, err
			}
			continue
		}
		if err := q.atHard(); err != nil {
			if errors.Is(err, ErrFull) {
				q.rejected.Add(uint64(len(vs)-n) - 1) // atHard counted one
			}
			return n, err
		}
	}
	return n, nil
}

// pressureDelay slows a producer on the slow path while memory is at the
// soft level or above (the governor's delay grows with pressure).
func (q *Queue[T]) pressureDelay() {
	if d := q.gov.Delay(); d > 0 {
		q.delayed.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-q.closedCtx.Done():
		}
		t.Stop()
	}
}

// atHard applies the Policy when a ring is full and memory is at the hard
// level: Reject counts and returns ErrFull; Block waits until the level falls
// below Soft (or Stop). Below Hard it returns nil: the caller retries.
func (q *Queue[T]) atHard() error {
	if q.gov.Level() != governor.LevelHard {
		return nil
	}
	switch q.cfg.Memory.Policy {
	case Spill:
		return q.atHardSpill()
	case Block:
		q.blocked.Add(1)
		if err := q.gov.WaitBelowSoft(q.closedCtx); err != nil {
			return ErrClosed
		}
		return nil
	default: // Reject
		q.rejected.Add(1)
		return ErrFull
	}
}

func (q *Queue[T]) wakeCollector() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

package vinequeue

import (
	"unsafe"

	"github.com/vineroute/vinequeue/ring"
)

// rawPushable reports whether Enqueue may push a T with pinPush8: 8 bytes,
// no pointers (the assembly store has no write barrier), and a build with
// the pinning assembly and without the race detector (which cannot see an
// assembly store, and whose builds push through producerSync).
func rawPushable[T any]() bool {
	var zero T
	return pinAssembly && !raceBuild && unsafe.Sizeof(zero) == 8 && ring.PointerFree[T]()
}

// enqueuePinned is Enqueue in Go: it pins the goroutine to its P, pushes
// into that P's ring, and unpins. Between pinning and unpinning nothing can
// block (no lock, channel, governor charge, log or callback): a goroutine
// that parked while pinned would take the process down. A push that fills
// the ring to its watermark hands the ring off still pinned
// (engine.Queue.HandOff is lock-free), and the engine does the rest
// unpinned; a push that cannot go in takes the engine's slow path.
func (q *Queue[T]) enqueuePinned(v T) error {
	pid, tok := procPin()
	if uint(pid) < uint(len(q.fast)) {
		s := &q.fast[pid]
		// nil until this P id first has a slot (see engine.Queue.Fast).
		if r := s.Cur.Load(); r != nil {
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
				h := q.e.HandOff(s)
				procUnpin(tok)
				return q.e.AfterWatermark(h)
			}
		}
	}
	procUnpin(tok)
	return q.e.EnqueueSlow(v)
}

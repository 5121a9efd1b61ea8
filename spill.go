package vinequeue

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vineroute/vinequeue/governor"
)

// Spill: at the hard memory level with Policy Spill, the collector writes
// the batches it cuts to the WAL (durably) and lets them go from memory, so
// the rings keep flowing and Enqueue keeps accepting. When the level is back
// to normal the unspiller reads them back, in order, and hands them to the
// senders; they are acknowledged in the WAL once delivered like any record.
// Spilled items still in the WAL at Stop stay there for the next New.

// spillRef locates spilled items: items [off, off+n) of record rec.id.
type spillRef struct {
	rec    *walRecord
	off, n int
}

// spillList is the FIFO of spilled refs, shared by the collector (which
// appends) and the unspiller (which takes).
type spillList struct {
	mu    sync.Mutex
	refs  []spillRef
	items int
	kick  chan struct{} // cap 1: refs were added
}

func (q *Queue[T]) spillPolicy() bool {
	return q.wal != nil && q.cfg.Memory.Policy == Spill
}

// spill writes b to the WAL if it is not there yet, records where it is, and
// lets it go from memory. It returns false, keeping b, if the write fails
// (the WAL is full): the caller keeps b in memory, and producers meet
// ErrWALFull at the hard level until a spill succeeds again.
func (c *collector[T]) spill(b *pending[T]) bool {
	q := c.q
	var err error
	if b.rec == nil {
		err = q.writeBatch(b)
	}
	if err == nil && q.wal.mode != Sync {
		err = walErr(q.wal.log.Sync()) // what the governor spills is durable
	}
	if err != nil {
		q.spillErr.Store(&err)
		q.logger.Warn("vinequeue: spill to the wal failed; batch kept in memory", "items", len(b.items), "err", err)
		return false
	}
	q.spillErr.Store(nil)
	q.spilled.Add(uint64(len(b.items)))
	q.spills.add(spillRef{rec: b.rec, off: b.recOff, n: len(b.items)})
	// Out of memory now: not delivered yet, so not acknowledged.
	q.hold(-b.bytes)
	q.track.complete(b.seq)
	b.rec = nil
	q.putBatch(b)
	return true
}

func (s *spillList) add(r spillRef) {
	s.mu.Lock()
	s.refs = append(s.refs, r)
	s.items += r.n
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// take removes up to max refs, oldest first.
func (s *spillList) take(max int) []spillRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(max, len(s.refs))
	out := append([]spillRef(nil), s.refs[:n]...)
	clear(s.refs[:n])
	s.refs = s.refs[n:]
	for _, r := range out {
		s.items -= r.n
	}
	return out
}

func (s *spillList) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.items
}

// unspillLoop reads spilled records back while memory is at the normal
// level and hands their batches to the collector. At Stop it puts back what
// it has not handed over, for the collector's last pass.
func (q *Queue[T]) unspillLoop() {
	defer close(q.unspillDone)
	send := func(b *pending[T]) bool {
		select {
		case q.unspilled <- b:
			return true
		case <-q.closedCtx.Done():
			return false
		}
	}
	for {
		select {
		case <-q.spills.kick:
		case <-q.closedCtx.Done():
			return
		}
		for {
			if err := q.gov.WaitBelowSoft(q.closedCtx); err != nil {
				return
			}
			refs := q.spills.take(64)
			if len(refs) == 0 {
				break
			}
			if err := q.unspill(refs, send); err != nil {
				if errors.Is(err, errUnspillStopped) {
					return
				}
				q.logger.Error("vinequeue: reading spilled items back failed; they stay in the wal for the next start", "err", err)
			}
		}
	}
}

var errUnspillStopped = errors.New("unspill stopped")

// pushFront puts refs back at the head of the list (an interrupted unspill).
func (s *spillList) pushFront(refs []spillRef) {
	if len(refs) == 0 {
		return
	}
	s.mu.Lock()
	s.refs = append(append([]spillRef(nil), refs...), s.refs...)
	for _, r := range refs {
		s.items += r.n
	}
	s.mu.Unlock()
}

// unspill reads refs (in id order) from the WAL and passes their batches to
// send. When send refuses one (Stop), what was not passed is put back at the
// head of the spill list and errUnspillStopped returned.
func (q *Queue[T]) unspill(refs []spillRef, send func(*pending[T]) bool) error {
	from, to := refs[0].rec.id, refs[0].rec.id
	for _, r := range refs {
		from, to = min(from, r.rec.id), max(to, r.rec.id)
	}
	w := q.wal
	next := 0 // refs[:next] are done
	var items []T
	err := w.log.ReadRange(from, to, func(id uint64, payload []byte) error {
		if next == len(refs) || refs[next].rec.id != id {
			return nil
		}
		var err error
		if items, err = w.decode(items[:0], payload); err != nil {
			return fmt.Errorf("record %d: %w", id, err)
		}
		for next < len(refs) && refs[next].rec.id == id {
			r := &refs[next]
			if r.off+r.n > len(items) {
				return fmt.Errorf("record %d holds %d items, spilled [%d, %d)", id, len(items), r.off, r.off+r.n)
			}
			for _, b := range q.splitBatches(items[r.off:r.off+r.n], r.rec) {
				n := len(b.items) // b is the collector's once sent
				if !send(b) {
					q.hold(-b.bytes)
					q.putBatch(b)
					return errUnspillStopped
				}
				r.off += n
				r.n -= n
			}
			next++
		}
		return nil
	})
	if errors.Is(err, errUnspillStopped) {
		q.spills.pushFront(refs[next:])
		return err
	}
	if err != nil {
		return err
	}
	if next < len(refs) {
		return fmt.Errorf("%d spilled records not found in the wal", len(refs)-next)
	}
	return nil
}

// atHardSpill is atHard for Policy Spill: producers keep going (the
// collector spills), unless spilling is failing.
func (q *Queue[T]) atHardSpill() error {
	if p := q.spillErr.Load(); p != nil && q.gov.Level() == governor.LevelHard {
		q.rejected.Add(1)
		return fmt.Errorf("%w", *p)
	}
	return nil
}

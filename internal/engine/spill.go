package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vineroute/vinequeue/governor"
)

// Spill: at the hard memory level with Policy Spill, the collector writes
// the batches it cuts to the WAL (durably) and lets them go from memory, so
// the rings keep flowing and Enqueue keeps accepting. When the level is back
// to normal the unspiller reads them back, in order, and hands them to the
// senders; they are acknowledged in the WAL once delivered like any record.
// Spilled items still in the WAL at Stop stay there for the next New.
//
// Memory. The rings flow at Hard only because what is cut from them leaves
// memory at once. A spill that fails (the WAL is full) keeps its batch in
// memory, past Hard, so from then on the queue behaves as under Reject or
// Block: no ring is handed off (holdRings) and producers get ErrWALFull,
// until the level leaves Hard. A later spill that succeeds does not lift
// that: the batches that failed are still in memory, and letting the rings
// flow again would add the rings' worth past Hard once more each time the
// WAL fills, without limit. So the failure is kept for the rest of the
// level's stretch (governor.Stretch), and what failed spills leave in
// memory is within the rings handed off before the first of them (the
// R × RingSize of the bound in admit.go). An item the WAL cannot take at
// all (too large for a record, or its Codec fails) does not fail the
// spill; it is given up alone, to OnDrop (giveUpUnwritable), and the rest
// of its batch spills: kept, it would hold memory past Hard while the
// rings flow.
//
// Read-back passes the same rule as intake: the unspiller hands over one
// batch at a time, each only while the level is normal, charged as it is
// handed over (the hand-off channel is unbuffered, so no charged batch
// waits in it); when the level has left normal it puts the rest back and
// waits. So read-back adds at most one batch to what memory holds, and
// never at Hard.

// spillRef locates spilled items: items [off, off+n) of record id.
type spillRef struct {
	span
	done *spillDone
}

// spillDone follows one spilled batch until each of its items is finished
// (delivered, given up on, or left in the WAL at Stop), for Flush. A batch
// read back is split into batches that finish in any order, and one that is
// spilled again keeps its spillDone, so left counts items, not batches.
type spillDone struct {
	seq  uint64       // the spill's number, in the order spills were added
	left atomic.Int64 // items not finished yet
}

// spillList is the FIFO of spilled refs, shared by the collector (which
// appends) and the unspiller (which takes).
//
// Spills are numbered as they are added; track's low passes a spill's number
// once its items are all finished, so a Flush waits for the spills added
// before it with track.wait(issued()). A separate tracker from the
// batches': a spill can stay unfinished for as long as memory stays high,
// and holding the batches' low-water mark back that long would grow its
// done set by every batch delivered meanwhile.
type spillList struct {
	mu    sync.Mutex
	refs  []spillRef
	items int
	added uint64 // spills numbered so far
	track tracker
	kick  chan struct{} // cap 1: refs were added
}

// spiller is the spilling capability: a tier with a log has one when the
// Policy is Spill (New); Queue.spill is nil otherwise, and nothing spills.
type spiller[T any] struct {
	q    *Queue[T]
	w    *walTier[T]
	list spillList
	// failed is the last failed spill; it counts while the level is in
	// the stretch it failed in (failure).
	failed atomic.Pointer[spillFailure]
	out    chan *pending[T] // unspiller → collector, unbuffered
	done   chan struct{}    // closed when the unspiller exits
}

// spillFailure is a spill that failed, and the stretch of the memory level
// it failed in: the failure holds for the rest of that stretch.
type spillFailure struct {
	err     error
	stretch governor.Stretch
}

func newSpiller[T any](q *Queue[T], w *walTier[T]) *spiller[T] {
	s := &spiller[T]{q: q, w: w, out: make(chan *pending[T]), done: make(chan struct{})}
	s.list.kick = make(chan struct{}, 1)
	return s
}

// spill writes b to the WAL if it is not there yet, records where it is, and
// lets it go from memory. It returns false, keeping b, if the write fails
// (the WAL is full): the caller keeps b in memory, and the rings stop and
// producers meet ErrWALFull until the level leaves Hard (see Memory above).
// What the governor spills is durable: what spill writes it fsyncs (a batch
// on disk already came through a durable path).
func (s *spiller[T]) spill(c *collector[T], b *pending[T]) bool {
	q := s.q
	var err error
	write := !b.durable()
	if write {
		err = s.w.writeBatch(b, &c.enc)
	}
	if err == nil {
		if write && s.giveUpUnwritable(c, b) {
			// Every item of b was one the WAL cannot hold.
			q.track.complete(b.seq)
			q.putBatch(b)
			return true
		}
		if write && !s.w.syncsAppends {
			err = walErr(s.w.log.Sync())
		}
	}
	if err != nil {
		// What was written stays named in b.spans (acknowledged with
		// the batch); the rest is under id 0, in memory only.
		s.failed.Store(&spillFailure{err: err, stretch: q.gov.Stretch()})
		q.logger.Warn("vinequeue: spill to the wal failed; batch kept in memory", "items", len(b.items), "err", err)
		return false
	}
	q.spilled.Add(uint64(len(b.items)))
	s.list.add(b.spans, b.spill)
	// Out of memory now: not delivered yet, so not acknowledged.
	q.hold(-b.bytes)
	q.track.complete(b.seq)
	q.putBatch(b)
	return true
}

// giveUpUnwritable takes out of b, which writeBatch has just written
// without error, the items it could not write (too large for any record,
// or refused by the Codec: under a span of id 0) and gives them up: they
// go to OnDrop with the reason (ErrTooLarge, or the Codec's error),
// counted in Stats.Dropped, and leave memory. Kept in memory, they would
// hold their batch there past Hard while the rings go on flowing (the
// spill did not fail: the WAL took everything it could hold), so that
// every such batch would add to memory past the bound; counted as a failed
// spill, they would have every producer refused for one bad item. It
// reports whether b is left empty. Collector goroutine.
func (s *spiller[T]) giveUpUnwritable(c *collector[T], b *pending[T]) (empty bool) {
	q := s.q
	bad := 0
	for _, sp := range b.spans {
		if sp.id == 0 {
			bad += sp.n
		}
	}
	if bad == 0 {
		return false
	}
	var out []T
	var reason error
	j, i := 0, 0 // items kept; item at
	spans := b.spans[:0]
	for _, sp := range b.spans {
		if sp.id != 0 {
			copy(b.items[j:], b.items[i:i+sp.n])
			spans = append(spans, sp)
			j += sp.n
			i += sp.n
			continue
		}
		for _, v := range b.items[i : i+sp.n] {
			out = append(out, v)
			if reason == nil {
				reason = s.unwritableReason(&c.enc, v)
			}
		}
		i += sp.n
	}
	clear(b.items[j:]) // retention rule
	b.items, b.spans = b.items[:j], spans
	gone := q.bytesOf(out)
	b.bytes -= gone
	q.hold(-gone)
	q.dropped.Add(uint64(len(out)))
	q.logger.Warn("vinequeue: spill: items the wal cannot hold given up", "items", len(out), "reason", reason)
	if q.cfg.OnDrop != nil {
		q.onDrops.due(1)
		q.callOnDrop(out, reason)
		q.onDrops.done()
	}
	return j == 0
}

// unwritableReason is why v cannot be written: its Codec's error, or its
// encoding's size past the record limit (ErrTooLarge).
func (s *spiller[T]) unwritableReason(rw *recordWriter, v T) error {
	enc, err := s.w.appendItem(rw.rec[:0], v)
	if err != nil {
		return fmt.Errorf("vinequeue: spill: wal codec: %w", err)
	}
	rw.rec = enc[:0]
	return fmt.Errorf("%w: spill: item of %d bytes encoded, wal records hold %d", ErrTooLarge, len(enc), s.w.log.MaxRecord())
}

// add appends the refs of one spilled batch (its spans), numbering it as a
// new spill unless it already has a spillDone (a batch read back and
// spilled again).
func (s *spillList) add(spans []span, done *spillDone) {
	s.mu.Lock()
	if done == nil {
		n := 0
		for _, sp := range spans {
			n += sp.n
		}
		done = &spillDone{seq: s.added}
		done.left.Store(int64(n))
		s.added++
		s.track.cut(done.seq)
	}
	for _, sp := range spans {
		s.refs = append(s.refs, spillRef{span: sp, done: done})
		s.items += sp.n
	}
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

// issued is the number of spills added so far: a Flush covers those.
func (s *spillList) issued() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.added
}

// settle marks n of d's items finished.
func (s *spillList) settle(d *spillDone, n int) {
	if d.left.Add(-int64(n)) == 0 {
		s.track.complete(d.seq)
	}
}

// abandon settles refs that will not be read back in this process (their
// items stay in the WAL for the next New), so that no Flush waits for them.
func (s *spillList) abandon(refs []spillRef) {
	for _, r := range refs {
		s.settle(r.done, r.n)
	}
}

// abandonAll takes and abandons every ref (Stop, after its last read-back);
// it returns the number of items they hold.
func (s *spillList) abandonAll() int {
	s.mu.Lock()
	refs, n := s.refs, s.items
	s.refs, s.items = nil, 0
	s.mu.Unlock()
	s.abandon(refs)
	return n
}

// unspillLoop reads spilled records back while memory is at the normal
// level and hands their batches to the collector. At Stop it puts back what
// it has not handed over, for the collector's last pass.
func (s *spiller[T]) unspillLoop() {
	q := s.q
	defer close(s.done)
	send := func(b *pending[T]) error {
		if q.gov.Level() != governor.LevelNormal {
			return errUnspillPaused
		}
		q.hold(b.bytes)
		select {
		case s.out <- b:
			return nil
		case <-q.closedCtx.Done():
			q.hold(-b.bytes)
			return errUnspillStopped
		}
	}
	for {
		select {
		case <-s.list.kick:
		case <-q.closedCtx.Done():
			return
		}
		for {
			if err := q.gov.WaitBelowSoft(q.closedCtx); err != nil {
				return
			}
			refs := s.list.take(64)
			if len(refs) == 0 {
				break
			}
			if err := s.unspill(refs, send); err != nil {
				if errors.Is(err, errUnspillStopped) {
					return
				}
				if errors.Is(err, errUnspillPaused) {
					continue // wait for the normal level again
				}
				q.logger.Error("vinequeue: reading spilled items back failed; they stay in the wal for the next start", "err", err)
			}
		}
	}
}

// stop is the collector's part of Stop for the spill: the unspiller stops
// (closedCtx) and puts back what it had not handed over; what it had is
// pushed, and the rest read back here, dispatching as it goes (within ctx)
// so that a large spill is not loaded into memory at once. What cannot be
// read back stays in the WAL for the next New.
func (s *spiller[T]) stop(c *collector[T], ctx context.Context) {
	q := s.q
	for done := false; !done; {
		select {
		case b := <-s.out:
			c.push(b)
		case <-s.done:
			done = true
		}
	}
	for more := true; more; {
		select {
		case b := <-s.out:
			c.push(b)
		default:
			more = false
		}
	}
	// Read back whatever the level: dispatching as it goes keeps what this
	// holds to a batch or two.
	var stopped error
	send := func(b *pending[T]) error {
		if stopped != nil {
			return stopped
		}
		q.hold(b.bytes)
		c.push(b)
		if c.dispatch(ctx) != nil {
			stopped = errUnspillStopped // b is the collector's: Stop gives it up
		}
		return nil
	}
	for refs := s.list.take(64); len(refs) > 0; refs = s.list.take(64) {
		if err := s.unspill(refs, send); err != nil {
			if !errors.Is(err, errUnspillStopped) {
				q.logger.Error("vinequeue: reading spilled items back at stop failed; they stay in the wal", "err", err)
			}
			break
		}
	}
	q.leftOnDisk.Add(uint64(s.list.abandonAll()))
}

// errUnspillStopped ends a read-back that Stop ended; errUnspillPaused
// one that found the level above normal. Either way the refs not handed
// over are put back at the head of the list.
var (
	errUnspillStopped = errors.New("unspill stopped")
	errUnspillPaused  = errors.New("unspill paused: memory above the normal level")
)

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

// unspill reads refs from the WAL and passes their batches to send, which
// charges each batch it takes. When send refuses one (Stop, or the level
// rose), what was not passed is put back at the head of the spill list and
// send's error returned.
func (s *spiller[T]) unspill(refs []spillRef, send func(*pending[T]) error) error {
	q := s.q
	// Spills are added in the order batches reach the collector, which
	// is not record order: Sync mode's committers hand records over
	// concurrently. One pass over the log needs them in record order.
	slices.SortFunc(refs, func(a, b spillRef) int {
		return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.off, b.off))
	})
	from, to := refs[0].id, refs[len(refs)-1].id
	w := s.w
	next := 0 // refs[:next] are done
	var items []T
	err := w.log.ReadRange(from, to, func(id uint64, payload []byte) error {
		if next == len(refs) || refs[next].id != id {
			return nil
		}
		var err error
		if items, err = w.decode(items[:0], payload); err != nil {
			return fmt.Errorf("record %d: %w", id, err)
		}
		for next < len(refs) && refs[next].id == id {
			r := &refs[next]
			if r.off+r.n > len(items) {
				return fmt.Errorf("record %d holds %d items, spilled [%d, %d)", id, len(items), r.off, r.off+r.n)
			}
			for _, b := range q.splitBatches(items[r.off:r.off+r.n], r.span) {
				b.spill = r.done
				n := len(b.items) // b is the collector's once sent
				if err := send(b); err != nil {
					q.putBatch(b)
					return err
				}
				r.off += n
				r.n -= n
			}
			next++
		}
		return nil
	})
	if errors.Is(err, errUnspillStopped) || errors.Is(err, errUnspillPaused) {
		s.list.pushFront(refs[next:])
		return err
	}
	if err == nil && next < len(refs) {
		err = fmt.Errorf("%d spilled records not found in the wal", len(refs)-next)
	}
	if err != nil {
		// refs[next:] (what is left of them) stay in the WAL, for the
		// next New to replay.
		s.list.abandon(refs[next:])
		return err
	}
	return nil
}

// failure is the error producers get at Hard under Policy Spill once a
// spill has failed in the level's current stretch, nil otherwise. It
// matches ErrWALFull whatever the cause (a full disk, MaxBytes, an I/O
// error): either way the WAL cannot take what memory cannot hold.
// Lock-free.
func (s *spiller[T]) failure() error {
	p := s.failed.Load()
	if p == nil || p.stretch != s.q.gov.Stretch() {
		return nil
	}
	if errors.Is(p.err, ErrWALFull) {
		return p.err
	}
	return fmt.Errorf("%w: spilling failed: %w", ErrWALFull, p.err)
}

// failing reports whether a spill has failed in the level's current
// stretch. Lock-free: it runs pinned (holdRings).
func (s *spiller[T]) failing() bool {
	p := s.failed.Load()
	return p != nil && p.stretch == s.q.gov.Stretch()
}

// splitBatches copies items, the items sp names, into batches of at most
// MaxBatchSize, each naming its share of sp, with their bytes (not held:
// whoever takes a batch holds them).
func (q *Queue[T]) splitBatches(items []T, sp span) []*pending[T] {
	var out []*pending[T]
	for off := 0; off < len(items); {
		n := min(len(items)-off, q.cfg.MaxBatchSize)
		b := q.getBatch()
		b.items = append(b.items, items[off:off+n]...)
		b.spans = append(b.spans, span{sp.id, sp.off + off, n})
		b.bytes = q.bytesOf(b.items)
		out = append(out, b)
		off += n
	}
	return out
}

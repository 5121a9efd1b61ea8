package vinequeue

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vineroute/vinequeue/wal"
)

// The WAL tier. Each record on disk is one batch of items (wal.AppendFrame
// frames, codec-encoded). A record is acknowledged (wal.Log.Ack) once every
// item in it has been delivered; the log's ack mark is the low-water mark of
// those acks, and Open replays what is above it, so delivery is at least once.
//
//   - Sync: Enqueue adds its item to the open group and waits; the committer
//     writes each group as one durable record (one fdatasync shared by every
//     caller in the group, on top of the log's own group commit) and then
//     hands the group to the collector as a batch.
//   - Periodic: Enqueue takes the ring fast path; the collector writes every
//     batch it cuts as a record before sending it and syncs the log every
//     SyncInterval, so a crash loses at most what sat in the rings plus one
//     interval of writes.
//   - Overflow: only what the governor spills is written (see spill.go);
//     what sits in memory at a crash is lost.

// syncCommitters is the number of Sync-mode committer goroutines.
const syncCommitters = 2

// walRecord tracks the delivery of one record's items; the batches carrying
// them share it.
type walRecord struct {
	id   uint64
	left atomic.Int64 // items not yet delivered
}

// walTier is the queue's side of the log.
type walTier[T any] struct {
	log   *wal.Log
	codec Codec[T]
	mode  WALMode

	// Sync mode: the open group and its committer.
	mu        sync.Mutex
	cond      *sync.Cond // the committer waits here for a group
	group     *syncGroup[T]
	closed    bool
	committed chan *pending[T] // committers → collector
	exited    chan struct{}    // closed when the last committer exits
	running   atomic.Int32     // committers still running

	encBuf []byte // collector-owned (Periodic)
}

type syncGroup[T any] struct {
	items []T
	done  chan struct{}
	err   error
}

// walErr maps the log's errors to the queue's sentinels, keeping the cause.
func walErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, wal.ErrLocked):
		return fmt.Errorf("%w: %w", ErrLocked, err)
	case errors.Is(err, wal.ErrFull):
		return fmt.Errorf("%w: %w", ErrWALFull, err)
	case errors.Is(err, wal.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, wal.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("vinequeue: wal: %w", err)
}

func (q *Queue[T]) openWAL() error {
	c := q.cfg.WAL
	codec := q.cfg.Codec
	if codec == nil {
		var err error
		if codec, err = builtinCodec[T](); err != nil {
			return err
		}
	}
	log, err := wal.Open(c.Dir, wal.Options{
		Compression: wal.Compression(c.Compression),
		SegmentSize: c.SegmentSize,
		MaxBytes:    c.MaxBytes,
		Logger:      q.logger,
		NoSync:      c.Mode != Sync,
	})
	if err != nil {
		if errors.Is(err, wal.ErrInvalidOptions) {
			return fmt.Errorf("%w: WAL: %w", ErrInvalidConfig, err)
		}
		return walErr(err)
	}
	w := &walTier[T]{log: log, codec: codec, mode: c.Mode,
		committed: make(chan *pending[T], 4), exited: make(chan struct{})}
	w.cond = sync.NewCond(&w.mu)
	w.running.Store(syncCommitters)
	q.wal = w
	return nil
}

// encode frames items into one record payload.
func (w *walTier[T]) encode(dst []byte, items []T) ([]byte, error) {
	var item []byte
	for _, v := range items {
		var err error
		item, err = w.codec.Append(item[:0], v)
		if err != nil {
			return dst, fmt.Errorf("vinequeue: wal codec: %w", err)
		}
		dst = wal.AppendFrame(dst, item)
	}
	return dst, nil
}

// enqueueSync is Enqueue in Sync mode: v joins the open group, and the call
// returns once the group's record is durable.
func (q *Queue[T]) enqueueSync(vs ...T) error {
	w := q.wal
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.group == nil {
		w.group = &syncGroup[T]{done: make(chan struct{})}
		w.cond.Signal() // one idle committer takes it
	}
	g := w.group
	g.items = append(g.items, vs...)
	w.mu.Unlock()
	<-g.done
	return g.err
}

// commitLoop is the Sync-mode committer: it writes each group as one durable
// record and hands it on for delivery. While it writes, the next group fills.
func (q *Queue[T]) commitLoop() {
	w := q.wal
	defer func() {
		if w.running.Add(-1) == 0 {
			close(w.exited)
		}
	}()
	var buf []byte
	for {
		w.mu.Lock()
		for w.group == nil && !w.closed {
			w.cond.Wait()
		}
		g := w.group
		w.group = nil
		w.mu.Unlock()
		if g == nil {
			return // closed and nothing left
		}
		var err error
		buf, err = w.encode(buf[:0], g.items)
		var id uint64
		if err == nil {
			id, err = w.log.Append(buf)
			err = walErr(err)
		}
		if err != nil {
			g.err = err
			q.walRejected.Add(uint64(len(g.items)))
			close(g.done)
			continue
		}
		q.syncAccepted.Add(uint64(len(g.items)))
		rec := &walRecord{id: id}
		rec.left.Store(int64(len(g.items)))
		for _, b := range q.splitBatches(g.items, rec) {
			w.committed <- b
		}
		close(g.done) // after the hand-over: a Flush after Enqueue sees it
	}
}

// closeSync stops accepting Sync-mode items; the committer finishes the open
// group and exits.
func (q *Queue[T]) closeSync() {
	w := q.wal
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// splitBatches copies items into batches of at most MaxBatchSize sharing rec.
func (q *Queue[T]) splitBatches(items []T, rec *walRecord) []*pending[T] {
	var out []*pending[T]
	off := 0
	for len(items) > 0 {
		n := min(len(items), q.cfg.MaxBatchSize)
		b := q.getBatch()
		b.items = append(b.items, items[:n]...)
		b.bytes = q.bytesOf(b.items)
		b.rec = rec
		b.recOff = off
		off += n
		q.hold(b.bytes)
		out = append(out, b)
		items = items[n:]
	}
	return out
}

// writeBatch writes b's items as one record (not synced) and attaches the
// record to b. Collector only (it uses the collector's encoding buffer).
func (q *Queue[T]) writeBatch(b *pending[T]) error {
	w := q.wal
	var err error
	w.encBuf, err = w.encode(w.encBuf[:0], b.items)
	var id uint64
	if err == nil {
		id, err = w.log.Write(w.encBuf)
	}
	if err != nil {
		return walErr(err)
	}
	rec := &walRecord{id: id}
	rec.left.Store(int64(len(b.items)))
	b.rec = rec
	return nil
}

// decode appends the items framed in a record payload to dst.
func (w *walTier[T]) decode(dst []T, payload []byte) ([]T, error) {
	err := wal.ForEachItem(payload, func(item []byte) error {
		v, err := w.codec.Decode(item)
		if err != nil {
			return err
		}
		dst = append(dst, v)
		return nil
	})
	return dst, err
}

// persistBatch writes a batch cut from the rings as a record (Periodic mode).
// On failure the batch is still delivered from memory, just not protected.
func (q *Queue[T]) persistBatch(b *pending[T]) {
	if err := q.writeBatch(b); err != nil {
		q.walErrors.Add(1)
		q.logger.Warn("vinequeue: wal write failed; batch kept in memory only", "items", len(b.items), "err", err)
	}
}

// ackDelivered acknowledges b's share of its record(s).
func (q *Queue[T]) ackDelivered(b *pending[T]) {
	if b.rec != nil {
		q.ackItems(b.rec, len(b.items))
	}
	for _, r := range b.recs {
		q.ackItems(r, 1)
	}
}

func (q *Queue[T]) ackItems(r *walRecord, n int) {
	if r.left.Add(-int64(n)) == 0 {
		if err := q.wal.log.Ack(r.id); err != nil && !errors.Is(err, wal.ErrClosed) {
			q.logger.Warn("vinequeue: wal ack failed", "record", r.id, "err", err)
		}
	}
}

// appendKeyed writes one EnqueueKey item as a durable record of its own.
func (q *Queue[T]) appendKeyed(v T) (*walRecord, error) {
	w := q.wal
	buf, err := w.encode(nil, []T{v})
	if err != nil {
		return nil, err
	}
	id, err := w.log.Append(buf)
	if err != nil {
		q.walRejected.Add(1)
		return nil, walErr(err)
	}
	r := &walRecord{id: id} // accepted: EnqueueKey counts it in keyedIn
	r.left.Store(1)
	return r, nil
}

// walTick syncs the log in Periodic mode.
func (q *Queue[T]) walSync() {
	if err := q.wal.log.Sync(); err != nil && !errors.Is(err, wal.ErrClosed) {
		q.walErrors.Add(1)
		q.logger.Warn("vinequeue: wal sync failed", "err", walErr(err))
	}
}

// syncInterval is the Periodic mode's checkpoint period.
func (c *WALConfig) syncInterval() time.Duration {
	if c.SyncInterval > 0 {
		return c.SyncInterval
	}
	return time.Second
}

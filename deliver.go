package vinequeue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
	"unsafe"
)

// ErrSendPanic is wrapped by the error recorded for a Send that panicked.
var ErrSendPanic = errors.New("vinequeue: send panicked")

// sendLoop is one sender: it takes batches from the collector until Stop.
func (q *Queue[T]) sendLoop() {
	for b := range q.work {
		q.deliver(b)
	}
}

// deliver sends one batch with retries; after the last attempt the batch goes
// to OnDrop. Either way it is done: counted, recycled, its shard released.
func (q *Queue[T]) deliver(b *batch[T]) {
	rp := &q.cfg.Retry
	var err error
	for attempt := 1; ; attempt++ {
		err = q.safeSend(b.items)
		if err == nil {
			q.delivered.Add(uint64(len(b.items)))
			q.batches.Add(1)
			q.finish(b)
			return
		}
		if attempt >= rp.MaxAttempts || q.sendCtx.Err() != nil {
			break
		}
		q.retries.Add(1)
		if !q.backoff(attempt) {
			break
		}
	}
	q.drop(b, fmt.Errorf("vinequeue: send failed after retries: %w", err))
}

// safeSend calls Send, turning a panic into an error.
func (q *Queue[T]) safeSend(items []T) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrSendPanic, p, debug.Stack())
		}
	}()
	return q.cfg.Send(q.sendCtx, items)
}

// backoff waits before retry number attempt (1-based), or returns false when
// Stop ran out of time meanwhile.
func (q *Queue[T]) backoff(attempt int) bool {
	rp := &q.cfg.Retry
	d := float64(rp.InitialBackoff)
	for i := 1; i < attempt && d < float64(rp.MaxBackoff); i++ {
		d *= rp.Multiplier
	}
	d = min(d, float64(rp.MaxBackoff))
	d *= 1 + rp.Jitter*(2*rand.Float64()-1)
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.sendCtx.Done():
		return false
	}
}

// drop hands a batch to OnDrop and counts it.
func (q *Queue[T]) drop(b *batch[T], reason error) {
	if q.cfg.OnDrop != nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					q.logger.Error("vinequeue: OnDrop panicked", "panic", p)
				}
			}()
			q.cfg.OnDrop(b.items, reason)
		}()
	}
	q.dropped.Add(uint64(len(b.items)))
	q.logger.Warn("vinequeue: dropped a batch", "items", len(b.items), "reason", reason)
	q.finish(b)
}

// finish marks b done and recycles it.
func (q *Queue[T]) finish(b *batch[T]) {
	q.hold(-b.bytes)
	seq, s := b.seq, b.shard
	q.putBatch(b)
	if s != nil {
		s.inflight.Store(false)
	}
	// The collector may be waiting for a shard to be free or for memory
	// to fall below the hard level.
	q.wakeCollector()
	q.track.complete(seq)
}

// hold records n more bytes held by batches (n < 0: fewer).
func (q *Queue[T]) hold(n int64) {
	q.bytesHeld.Add(n)
	q.gov.Add(n)
}

func (q *Queue[T]) getBatch() *batch[T] {
	select {
	case b := <-q.free:
		return b
	default:
		return &batch[T]{items: make([]T, 0, q.cfg.MaxBatchSize)}
	}
}

func (q *Queue[T]) putBatch(b *batch[T]) {
	clear(b.items) // retention rule: no pointers kept past delivery
	b.items = b.items[:0]
	b.bytes, b.seq, b.shard = 0, 0, nil
	select {
	case q.free <- b:
	default:
	}
}

// Stats returns a snapshot of the counters and gauges. The counters are read
// one by one, so under load they are not a consistent cut.
func (q *Queue[T]) Stats() Stats {
	var enq uint64
	for _, r := range q.rings.Load().rings {
		enq += r.Pushed()
	}
	enq += q.keyedIn.Load()
	s := Stats{
		Enqueued:  enq,
		Delivered: q.delivered.Load(),
		Rejected:  q.rejected.Load(),
		Dropped:   q.dropped.Load(),
		Retries:   q.retries.Load(),
		Batches:   q.batches.Load(),
		BatchSize: uint64(q.batchSize.Load()),
		Delayed:   q.delayed.Load(),
		Blocked:   q.blocked.Load(),
		Level:     levelOf(q.gov.Level()),
	}
	if done := s.Delivered + s.Dropped; enq > done {
		s.Buffered = enq - done
	}
	if b := q.bytesHeld.Load(); b > 0 {
		s.BytesHeld = uint64(b)
	}
	return s
}

// bytesOf is the accounted size of items.
func (q *Queue[T]) bytesOf(items []T) int64 {
	if q.fixedSize > 0 {
		return int64(q.fixedSize) * int64(len(items))
	}
	var n int64
	for _, v := range items {
		n += int64(q.sizeOf(v))
	}
	return n
}

// defaultSizeOf accounts an item by its type: its in-memory size, plus the
// bytes it points to for []byte and string.
// The second result is that size when it is the same for every item.
func defaultSizeOf[T any]() (func(T) int, int) {
	var zero T
	base := int(unsafe.Sizeof(zero))
	switch any(zero).(type) {
	case []byte:
		return func(v T) int { return base + len(any(v).([]byte)) }, 0
	case string:
		return func(v T) int { return base + len(any(v).(string)) }, 0
	}
	return func(T) int { return base }, max(base, 1)
}

package vinequeue

import (
	"sync"
	"sync/atomic"
)

// nKeyedShards is the number of keyed shards: enough that keys spread over
// every sender, few enough that the collector scans them cheaply.
const nKeyedShards = 64

// keyedShards hold the items of EnqueueKey. A key maps to one shard; a
// shard's items are cut into batches in arrival order, and a shard has at
// most one batch with a sender at a time, so per-key order holds with any
// number of Workers, across retries.
type keyedShards[T any] struct {
	shards [nKeyedShards]keyedShard[T]
	// work counts items accepted and not yet handed to a sender; the
	// collector scans the shards only while it is > 0.
	work atomic.Int64
}

type keyedShard[T any] struct {
	mu     sync.Mutex
	items  []T    // guarded by mu: accepted, not yet cut
	spans  []span // guarded by mu: where items are in the WAL (Sync mode only)
	bytes  int64
	closed bool // guarded by mu

	// Owned by the collector.
	cutq fifo[*pending[T]]
	// inflight is set by the collector when it hands a batch to a sender
	// and cleared by the sender when it is done with it (after retries).
	inflight atomic.Bool
	_        [cacheLine]byte
}

func (ks *keyedShards[T]) init() {}

func shardOf(key uint64) int {
	// Fibonacci hashing: consecutive keys land on different shards.
	return int((key * 0x9E3779B97F4A7C15) >> (64 - 6))
}

// EnqueueKey accepts v like Enqueue, and delivers the items of one key in the
// order they were accepted: FIFO per key, with any number of Workers. It is
// slower than Enqueue (a lock per call on the key's shard).
func (q *Queue[T]) EnqueueKey(key uint64, v T) error {
	// Within the gate, Stop waits for this call: an item written to the
	// WAL is always queued, never refused after the fact.
	if !q.intake.enter() {
		return ErrClosed
	}
	defer q.intake.leave()
	var sp span
	if q.syncMode() {
		// Durable first (concurrent appends share a record and an
		// fdatasync), then queued in its key's order.
		var err error
		if sp, err = q.appendKeyed(v); err != nil {
			return err
		}
	}
	s := &q.keyed.shards[shardOf(key)]
	s.mu.Lock()
	s.items = append(s.items, v)
	if sp.n > 0 {
		s.spans = appendSpan(s.spans, sp.id, sp.off, sp.n)
	}
	s.bytes += int64(q.sizeOf(v))
	s.mu.Unlock()
	q.keyedIn.Add(1)
	if q.keyed.work.Add(1) == 1 || !s.inflight.Load() {
		q.wakeCollector()
	}
	return nil
}

// cutAll cuts batches from the shards. A shard with no batch in flight gets
// its next batch dispatched (cut from its items if none is waiting). With
// all, every item of every shard is cut first, so a Flush or Stop covers it.
func (ks *keyedShards[T]) cutAll(c *collector[T], size int, all bool) {
	for i := range ks.shards {
		s := &ks.shards[i]
		if all {
			for s.cutOne(c, size) {
			}
		}
		if s.inflight.Load() {
			continue
		}
		if s.cutq.len() == 0 {
			s.cutOne(c, size)
		}
		if s.cutq.len() > 0 {
			b := s.cutq.pop()
			s.inflight.Store(true)
			ks.work.Add(-int64(len(b.items)))
			c.ready.push(b)
		}
	}
}

// cutOne moves up to size items into a new batch at the end of cutq.
func (s *keyedShard[T]) cutOne(c *collector[T], size int) bool {
	s.mu.Lock()
	n := min(len(s.items), size)
	if n == 0 {
		s.mu.Unlock()
		return false
	}
	b := c.q.getBatch()
	b.items = append(b.items, s.items[:n]...)
	clear(s.items[:n]) // retention rule
	s.items = s.items[n:]
	if len(s.spans) > 0 {
		b.spans = takeSpans(b.spans, &s.spans, n)
	}
	if len(s.items) == 0 {
		s.items = s.items[:0:0] // let the backing array go once drained
		b.bytes, s.bytes = s.bytes, 0
	} else {
		b.bytes = c.q.bytesOf(b.items)
		s.bytes -= b.bytes
	}
	s.mu.Unlock()
	b.shard = s
	if c.q.wal != nil && c.q.wal.mode == Periodic {
		c.q.persistBatch(b)
	}
	b.seq = c.seq
	c.seq++
	c.q.track.cut(b.seq)
	c.q.hold(b.bytes)
	s.cutq.push(b)
	return true
}

func (ks *keyedShards[T]) seal() {
	for i := range ks.shards {
		s := &ks.shards[i]
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
	}
}

func (ks *keyedShards[T]) hasWork() bool { return ks.work.Load() > 0 }

// takeAll removes every cut batch not yet dispatched (Stop out of time).
func (ks *keyedShards[T]) takeAll() []*pending[T] {
	var out []*pending[T]
	for i := range ks.shards {
		s := &ks.shards[i]
		out = append(out, s.cutq.items()...)
		for _, b := range s.cutq.items() {
			ks.work.Add(-int64(len(b.items)))
		}
		s.cutq.reset()
	}
	return out
}

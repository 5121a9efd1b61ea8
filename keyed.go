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
	items  []T          // guarded by mu: accepted, not yet cut
	recs   []*walRecord // guarded by mu: items[i]'s WAL record (Sync mode only)
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
//
// v is charged to the memory governor when admitted (keyed items wait in
// their shard, outside any ring), and the Policy applies at the hard level
// as for Enqueue, except that under Spill keyed items are not spilled (their
// key's order would have to survive the round trip through the WAL): they
// wait for memory to fall, as under Block, unless spilling fails (an error
// matching ErrWALFull).
func (q *Queue[T]) EnqueueKey(key uint64, v T) error {
	size := int64(q.sizeOf(v))
	if err := q.admit(1, size, false); err != nil {
		return err
	}
	var rec *walRecord
	if q.syncMode() {
		// Durable first, as a record of its own (concurrent appends
		// share an fdatasync), then queued in its key's order.
		var err error
		if rec, err = q.appendKeyed(v); err != nil {
			q.unadmit(size)
			return err
		}
	}
	s := &q.keyed.shards[shardOf(key)]
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if rec != nil {
			// Refused means refused: the record must not come back at
			// the next New.
			q.ackItems(rec, 1)
		}
		q.unadmit(size)
		return ErrClosed
	}
	s.items = append(s.items, v)
	if rec != nil {
		s.recs = append(s.recs, rec)
	}
	s.bytes += size
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
	if len(s.recs) > 0 {
		b.recs = append(b.recs, s.recs[:n]...)
		clear(s.recs[:n])
		s.recs = s.recs[n:]
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
	// b.bytes were charged when its items were admitted (EnqueueKey).
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

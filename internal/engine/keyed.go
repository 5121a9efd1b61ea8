package engine

import (
	"sync"
	"sync/atomic"
)

// nKeyedShards is the number of keyed shards: enough that keys spread over
// every sender, few enough that the collector scans them cheaply.
const nKeyedShards = 64

// Keyed items (EnqueueKey). A key maps to one of nKeyedShards shards; a
// shard keeps its items in arrival order. The invariant that gives FIFO per
// key with any number of Workers, across retries: a shard has at most one
// batch with a sender at a time, and its items enter batches in order.
//
// Batches still fill. A keyed batch gathers the leading items of every
// shard that has none in flight, up to BatchSize, and holds each of those
// shards until it is finished; so a batch is not limited to one shard's
// items, and batches are full (one shard per batch made them as small as
// one shard's arrivals per round trip). As for Enqueue's rings, a partial
// batch is cut only on the interval tick, or for Flush and Stop.
//
// Flush and Stop cut every item: a shard's remaining items become a queue
// of batches of its own (cutq), dispatched one at a time.
//
// The sync tier makes each item durable before it enters its shard, with
// its span; the periodic tier's checkpoint writes what shards hold
// (persistShard) without cutting it, and a cut writes what was not written
// yet. Either way a keyed batch's spans come from its shards.
type keyedShards[T any] struct {
	shards [nKeyedShards]keyedShard[T]
	// work counts items accepted and not yet dispatched (in a shard, or in
	// a cut queue); the collector scans the shards only while it is > 0.
	work atomic.Int64
	next int // collector-owned: the shard the next gathering starts at (fairness)
}

type keyedShard[T any] struct {
	mu        sync.Mutex
	items     []T    // guarded by mu: accepted, not yet cut
	spans     []span // guarded by mu: where items[:persisted] are in the WAL
	persisted int    // guarded by mu: items[:persisted] are on disk (sync tier: all)
	bytes     int64  // guarded by mu: what items weigh (charged at admission)

	// keys are the items' keys, guarded by mu, kept only when keys park
	// (park.go: a dead letter names them) or the tier writes what shards
	// hold (the periodic tier: keyed records name them).
	keys []uint64

	// Owned by the collector.
	cutq fifo[*pending[T]]
	// inflight is set by the collector when the shard's items go into a
	// batch for a sender, and cleared when that batch is finished.
	inflight atomic.Bool
	_        [cacheLine]byte
}

// ShardOf is the keyed shard that holds key's items: the order of a key's
// items is kept within it.
func ShardOf(key uint64) int {
	// Fibonacci hashing: consecutive keys land on different shards.
	return int((key * 0x9E3779B97F4A7C15) >> (64 - 6))
}

// EnqueueKey accepts v like Enqueue, and delivers the items of one key in the
// order they were accepted: FIFO per key, with any number of Workers, across
// retries, spills and crashes. It is slower than Enqueue (a lock per call on
// the key's shard). Use KeyOf for a string key.
//
// v is charged to the memory governor when admitted (keyed items wait in
// their shard, outside any ring), and the Policy applies at the hard level
// as for Enqueue, except that under Spill keyed items are not spilled (their
// key's order would have to survive the round trip through the WAL): they
// wait for memory to fall, as under Block, unless spilling fails (an error
// matching ErrWALFull).
func (q *Queue[T]) EnqueueKey(key uint64, v T) error {
	// Within the gate, Stop waits for this call: an item written to the
	// WAL is always queued, never refused after the fact.
	if !q.intake.enter() {
		return ErrClosed
	}
	defer q.intake.leave()
	if q.itemLimit != 0 {
		if err := q.CheckItem(v); err != nil {
			return err
		}
	}
	size := int64(q.sizeOf(v))
	if err := q.admit(1, size, false); err != nil {
		return err
	}
	// Durable first if the tier says so (the sync tier: concurrent
	// appends share a record and an fdatasync), then queued in its key's
	// order.
	sp, err := q.tier.acceptKeyed(key, v)
	if err != nil {
		q.unadmit(size)
		return err
	}
	s := &q.keyed.shards[ShardOf(key)]
	s.mu.Lock()
	s.items = append(s.items, v)
	if q.keepKeys {
		s.keys = append(s.keys, key)
	}
	if sp.n > 0 {
		s.spans = appendSpan(s.spans, sp.id, sp.off, sp.n)
		s.persisted++
	}
	s.bytes += size
	s.mu.Unlock()
	q.keyedIn.Add(1)
	if q.keyed.work.Add(1) == 1 || !s.inflight.Load() {
		q.wakeCollector()
	}
	return nil
}

// take moves up to n leading items (and their spans) into b. Caller holds
// s.mu and has had the tier persist them (persistShard).
func (s *keyedShard[T]) take(q *Queue[T], b *pending[T], n int) {
	b.items = append(b.items, s.items[:n]...)
	if len(s.keys) > 0 {
		b.keys = append(b.keys, s.keys[:n]...)
		s.keys = s.keys[n:]
		if len(s.keys) == 0 {
			s.keys = s.keys[:0:0]
		}
	}
	if len(s.spans) > 0 {
		b.spans = takeSpans(b.spans, &s.spans, n)
	}
	var bytes int64
	if n == len(s.items) {
		bytes = s.bytes
	} else {
		bytes = q.bytesOf(s.items[:n])
	}
	b.bytes += bytes // charged when admitted
	s.bytes -= bytes
	clear(s.items[:n]) // retention rule
	s.items = s.items[n:]
	s.persisted = max(s.persisted-n, 0)
	if len(s.items) == 0 {
		s.items = s.items[:0:0] // let the backing array go once drained
	}
}

// keyedCut says how much cutKeyed cuts.
type keyedCut int

const (
	cutFull    keyedCut = iota // only full batches (any time the collector runs)
	cutPartial                 // also a partial one: the interval tick
	cutAll                     // every item, into the shards' queues: Flush, Stop
)

// cutKeyed makes keyed batches, as Enqueue's rings do: full batches as soon
// as the shards that have no batch in flight hold BatchSize items between
// them, a partial one only on the interval tick (so FlushInterval bounds a
// keyed item's wait, as it does Enqueue's), and everything for Flush and
// Stop (cutAll: the shards' remaining items go to their cut queues). Each
// shard with no batch in flight first dispatches its next queued batch.
// While a replay is pending nothing is dispatched (per key, replayed items
// go first); with cutAll items are cut and wait.
func (c *collector[T]) cutKeyed(how keyedCut) {
	q := c.q
	ks := &q.keyed
	if how != cutAll && ks.work.Load() == 0 {
		return
	}
	size := int(q.batchSize.Load())
	if how == cutAll {
		for i := range ks.shards {
			for ks.shards[i].cutOne(c, size) {
			}
		}
	}
	if q.replaying.Load() {
		return
	}
	for i := range ks.shards {
		s := &ks.shards[i]
		if s.cutq.len() > 0 && !s.inflight.Load() {
			b := s.cutq.pop()
			s.inflight.Store(true)
			ks.work.Add(-int64(len(b.items)))
			c.ready.push(b)
		}
	}
	for {
		free := ks.free(size)
		if free == 0 || (free < size && how == cutFull) {
			return
		}
		c.gather(size)
	}
}

// free counts the items in shards that could go into a batch now (no batch
// in flight, none queued), stopping at size.
func (ks *keyedShards[T]) free(size int) int {
	n := 0
	for i := range ks.shards {
		s := &ks.shards[i]
		if n >= size || s.inflight.Load() || s.cutq.len() > 0 {
			continue
		}
		s.mu.Lock()
		n += len(s.items)
		s.mu.Unlock()
	}
	return n
}

// gather cuts one batch from the leading items of the shards that have no
// batch in flight and none queued, up to size items, and readies it; it
// reports whether there was anything to cut.
func (c *collector[T]) gather(size int) bool {
	q := c.q
	ks := &q.keyed
	var b *pending[T]
	for k := range nKeyedShards {
		i := (ks.next + k) % nKeyedShards
		s := &ks.shards[i]
		if s.inflight.Load() || s.cutq.len() > 0 {
			continue
		}
		s.mu.Lock()
		if len(s.items) == 0 {
			s.mu.Unlock()
			continue
		}
		if b == nil {
			b = q.getBatch()
		}
		n := min(len(s.items), size-len(b.items))
		q.tier.persistShard(c, s)
		s.take(q, b, n)
		s.mu.Unlock()
		s.inflight.Store(true)
		b.shards = append(b.shards, s)
		if len(b.items) == size {
			ks.next = (i + 1) % nKeyedShards
			break
		}
	}
	if b == nil {
		return false
	}
	ks.work.Add(-int64(len(b.items)))
	c.number(b)
	c.ready.push(b)
	return true
}

// cutOne moves up to size items into a new batch at the end of the shard's
// cut queue (Flush and Stop).
func (s *keyedShard[T]) cutOne(c *collector[T], size int) bool {
	q := c.q
	s.mu.Lock()
	n := min(len(s.items), size)
	if n == 0 {
		s.mu.Unlock()
		return false
	}
	b := q.getBatch()
	q.tier.persistShard(c, s)
	s.take(q, b, n)
	s.mu.Unlock()
	b.shards = append(b.shards, s)
	c.number(b)
	s.cutq.push(b)
	return true
}

func (ks *keyedShards[T]) hasWork() bool { return ks.work.Load() > 0 }

// takeAll removes every cut batch not yet dispatched (Stop out of time).
func (ks *keyedShards[T]) takeAll() []*pending[T] {
	var out []*pending[T]
	for i := range ks.shards {
		s := &ks.shards[i]
		for _, b := range s.cutq.items() {
			ks.work.Add(-int64(len(b.items)))
		}
		out = append(out, s.cutq.items()...)
		s.cutq.reset()
	}
	return out
}

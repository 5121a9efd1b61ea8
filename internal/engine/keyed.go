package engine

import (
	"sync"
	"sync/atomic"
	"unsafe"
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
	// gated: the tier writes a keyed item before it enters its shard (the
	// sync tier's log), so EnqueueKey holds the intake gate from before
	// that write until the item is queued, and admits each item on its
	// own, before the write. Otherwise the shard's lock and closed flag
	// are the gate and admission is taken in chunks (credit). Set in New.
	gated bool
	// chunk is the most credit a shard takes from the governor at once
	// (see credit); 0 admits every item on its own. Set in New.
	chunk int64
	// used is set by the first EnqueueKey: until then the collector does
	// not look at the shards.
	used atomic.Bool
	// kick asks the collector's next full cut (cutFull) to look at the
	// shards: set when a shard gathers a stride of items, a keyed batch
	// is finished (its shards are free) or the replay ends. Between kicks
	// the collector does not read the shards' lines, which the producers
	// are writing.
	kick atomic.Bool
	next int // collector-owned: the shard the next gathering starts at (fairness)
}

type keyedShard[T any] struct {
	// What EnqueueKey writes comes first, so that a call touches as few
	// cache lines as may be.
	mu sync.Mutex
	// items (guarded by mu) are accepted, not yet cut: buf[head:head+n],
	// buf being the backing array from its start (length 0). take moves
	// head on rather than copying what is left, and push slides the items
	// down when the array is full at the back with as much room at the
	// front, so a shard reuses one array however its items are taken, and
	// each item is copied a bounded number of times on average.
	items []T
	buf   []T
	head  int
	// keys are the items' keys (guarded by mu), kept only when keys park
	// (park.go: a dead letter names them) or the tier writes what shards
	// hold (the periodic tier: keyed records name them); then keys is
	// kbuf[head:head+len(items)], kbuf as long as buf, so that whatever
	// moves an item moves its key. Without them both stay nil.
	keys  []uint64
	kbuf  []uint64
	bytes int64 // guarded by mu: what items weigh (charged at admission)
	// credit is admitted memory not yet used by an item (guarded by mu;
	// an atomic only so that Stats can subtract it from BytesHeld): an
	// ungated EnqueueKey takes what its item weighs from here, and only
	// when it runs short passes admission, for a chunk at once. Charged
	// to the governor and bytesHeld like the items; below chunk after
	// every call (admit.go, the memory bound).
	credit atomic.Int64
	// queued is len(items), stored under mu, so that the collector counts
	// a shard's items without its lock; in counts the items it accepted
	// (Stats), also stored under mu.
	queued atomic.Int64
	in     atomic.Uint64
	closed bool // guarded by mu: Stop has closed the shard (ungated intake)

	spans     []span // guarded by mu: where items[:persisted] are in the WAL
	persisted int    // guarded by mu: items[:persisted] are on disk (sync tier: all)

	// Owned by the collector.
	cutq fifo[*pending[T]]
	// seenIn is in at the collector's last tick: a shard that accepted
	// nothing since gives its credit back (releaseIdle).
	seenIn uint64
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
// Per call it writes only its shard's cache lines: admission comes from the
// shard's credit, taken from the governor in chunks (admit.go), Stop's
// gate is the shard's lock and closed flag, and the collector is woken
// once per stride of a shard's items, not per call. Only the sync tier,
// which writes the item to the WAL first, passes the intake gate and
// admits each item.
//
// v is charged to the memory governor when admitted (keyed items wait in
// their shard, outside any ring; from the shard's credit), and the Policy
// applies at the hard level as for Enqueue, except that under Spill keyed items are not spilled (their
// key's order would have to survive the round trip through the WAL): they
// wait for memory to fall, as under Block, unless spilling fails (an error
// matching ErrWALFull).
func (q *Queue[T]) EnqueueKey(key uint64, v T) error {
	ks := &q.keyed
	if ks.gated {
		return q.enqueueKeyGated(key, v)
	}
	if q.closing.Load() {
		return ErrClosed
	}
	if p := q.walFull.Load(); p != nil {
		// As admit: the periodic tier cannot write (credit or not).
		q.rejected.Add(1)
		return q.refusedFull(*p)
	}
	if q.itemLimit != 0 {
		if err := q.CheckItem(v); err != nil {
			return err
		}
	}
	if !ks.used.Load() {
		ks.used.Store(true)
	}
	size := int64(q.sizeOf(v))
	if size == 0 {
		// An item that weighs nothing needs no credit, but still meets
		// the Policy at the hard level.
		if err := q.admit(1, 0, false); err != nil {
			return err
		}
	}
	s := &ks.shards[ShardOf(key)]
	s.mu.Lock()
	for !s.closed && s.credit.Load() < size {
		// Short of credit: admission, for a chunk at once, unlocked (it
		// may wait). Other calls on the shard may spend what it brings
		// meanwhile; then this one goes again.
		get := max(ks.chunk, size-s.credit.Load())
		s.mu.Unlock()
		if err := q.admit(1, get, false); err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			q.unadmit(get)
			return ErrClosed
		}
		s.credit.Add(get)
	}
	if s.closed {
		// Stop closed the shard after this call's closing check: the
		// collector's last cut may be over, so the item is refused.
		s.mu.Unlock()
		return ErrClosed
	}
	left := s.credit.Load() - size
	s.credit.Store(min(left, ks.chunk))
	n := s.push(v, key, q.keepKeys, size)
	s.mu.Unlock()
	if left > ks.chunk {
		q.unadmit(left - ks.chunk) // concurrent top-ups brought more than a chunk
	}
	q.wakeForKeyed(s, n)
	return nil
}

// enqueueKeyGated is EnqueueKey when the tier writes the item first (the
// sync tier): within the intake gate, Stop waits for the call, so an item
// written to the WAL is always queued, never refused after the fact.
func (q *Queue[T]) enqueueKeyGated(key uint64, v T) error {
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
	// Durable first, with its key (concurrent appends share a record and
	// an fdatasync), then queued in its key's order.
	sp, err := q.tier.acceptKeyed(key, v)
	if err != nil {
		q.unadmit(size)
		return err
	}
	if !q.keyed.used.Load() {
		q.keyed.used.Store(true)
	}
	s := &q.keyed.shards[ShardOf(key)]
	s.mu.Lock()
	if sp.n > 0 {
		s.spans = appendSpan(s.spans, sp.id, sp.off, sp.n)
		s.persisted++
	}
	n := s.push(v, key, q.keepKeys, size)
	s.mu.Unlock()
	q.wakeForKeyed(s, n)
	return nil
}

// push appends v, admitted for size bytes, and with keep its key, and
// returns how many items the shard holds now. Caller holds s.mu.
func (s *keyedShard[T]) push(v T, key uint64, keep bool, size int64) int64 {
	if len(s.items) == cap(s.items) && len(s.items) > 0 && s.head >= len(s.items) {
		// Full at the back with at least as much room at the front as
		// there are items: slide down rather than grow (with less room,
		// growing copies as much and the slides would come often).
		all := s.buf[:cap(s.buf)]
		k := copy(all, s.items)
		clear(all[k : s.head+k]) // retention rule: the old places
		s.items, s.head = all[:k], 0
		if keep {
			s.keys = s.kbuf[:copy(s.kbuf[:cap(s.kbuf)], s.keys)]
		}
	} else if len(s.items) == cap(s.items) {
		// Grow by doubling (the first push too, from no array): append
		// grows a large slice by a quarter, which copies each item
		// several times over while a backlog builds up in the shard.
		capacity := 2*len(s.items) + 16
		grown := make([]T, len(s.items), capacity)
		copy(grown, s.items)
		clear(s.items) // retention rule: the old array may be kept alive
		s.items, s.buf, s.head = grown, grown[:0], 0
		if keep {
			// As long as buf: items and keys fill up, slide and grow
			// together, and appending a key never reallocates.
			grownKeys := make([]uint64, len(s.keys), capacity)
			copy(grownKeys, s.keys)
			s.keys, s.kbuf = grownKeys, grownKeys[:0]
		}
	}
	s.items = append(s.items, v)
	if keep {
		s.keys = append(s.keys, key)
	}
	s.bytes += size
	n := int64(len(s.items))
	s.queued.Store(n)
	s.in.Store(s.in.Load() + 1)
	return n
}

// wakeForKeyed wakes the collector when a shard with no batch in flight
// has gathered another stride of items (BatchSize spread over the shards):
// often enough that it cuts a full batch soon after the shards hold one,
// without a wake per call. The interval tick cuts what is partial.
func (q *Queue[T]) wakeForKeyed(s *keyedShard[T], n int64) {
	stride := max(q.batchSize.Load()/nKeyedShards, 1)
	if n%stride == 0 && !s.inflight.Load() {
		if !q.keyed.kick.Load() {
			q.keyed.kick.Store(true)
		}
		q.wakeCollector()
	}
}

// take moves up to n leading items (and their spans) into b. Caller holds
// s.mu and has had the tier persist them (persistShard).
func (s *keyedShard[T]) take(q *Queue[T], b *pending[T], n int) {
	b.items = append(b.items, s.items[:n]...)
	if len(s.keys) > 0 {
		b.keys = append(b.keys, s.keys[:n]...) // one per item, as items
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
	if n == len(s.items) {
		// Drained: from the arrays' start again.
		s.items, s.keys, s.head = s.buf, s.kbuf, 0
	} else {
		s.items, s.head = s.items[n:], s.head+n
		if len(s.keys) > 0 {
			s.keys = s.keys[n:]
		}
	}
	s.queued.Store(int64(len(s.items)))
	s.persisted = max(s.persisted-n, 0)
}

// keyedChunkMax bounds the credit a keyed shard takes from the governor at
// once: with 200-byte items, some fifty calls between two admissions.
const keyedChunkMax = 16 << 10

// keyedKeepBytes is the backing arrays (items, and keys if kept) a drained
// shard keeps however long it idles (its slots hold no pointers once
// drained); larger ones it keeps while busy, and lets go once it has idled
// a tick (releaseIdle).
const keyedKeepBytes = 16 << 10

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
	if !ks.used.Load() {
		return
	}
	if how == cutPartial {
		c.releaseIdle()
	}
	if how == cutFull && !ks.kick.CompareAndSwap(true, false) {
		return // nothing new since the last look
	}
	if how != cutAll && !ks.hasWork() {
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
		n += int(s.queued.Load())
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

// hasWork reports whether any item is accepted and not yet dispatched (in
// a shard, or in a cut queue). Collector only.
func (ks *keyedShards[T]) hasWork() bool {
	for i := range ks.shards {
		if s := &ks.shards[i]; s.queued.Load() > 0 || s.cutq.len() > 0 {
			return true
		}
	}
	return false
}

// takeAll removes every cut batch not yet dispatched (Stop out of time).
func (ks *keyedShards[T]) takeAll() []*pending[T] {
	var out []*pending[T]
	for i := range ks.shards {
		s := &ks.shards[i]
		out = append(out, s.cutq.items()...)
		s.cutq.reset()
	}
	return out
}

// releaseIdle looks at the shards that accepted nothing since the last
// tick: their credit goes back to the governor, so that an idle queue
// holds none, and a drained one lets a large backing array go.
func (c *collector[T]) releaseIdle() {
	ks := &c.q.keyed
	var freed int64
	for i := range ks.shards {
		s := &ks.shards[i]
		in := s.in.Load()
		idle := in == s.seenIn
		s.seenIn = in
		if !idle {
			continue
		}
		s.mu.Lock()
		freed += s.credit.Swap(0)
		if len(s.items) == 0 && cap(s.buf)*int(unsafe.Sizeof(*new(T)))+cap(s.kbuf)*8 > keyedKeepBytes {
			s.items, s.buf, s.keys, s.kbuf, s.head = nil, nil, nil, nil, 0
		}
		s.mu.Unlock()
	}
	c.q.unadmit(freed)
}

// shedCredit gives the governor back every shard's unused credit: at the
// hard level (memory can fall by what nobody uses) and at Stop, where
// close also closes the shards (ungated EnqueueKey refuses from then on).
func (ks *keyedShards[T]) shedCredit(q *Queue[T], close bool) {
	var freed int64
	for i := range ks.shards {
		s := &ks.shards[i]
		if !close && s.credit.Load() == 0 {
			continue
		}
		s.mu.Lock()
		if close {
			s.closed = true
		}
		freed += s.credit.Swap(0)
		s.mu.Unlock()
	}
	q.unadmit(freed)
}

package engine

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vineroute/vinequeue/internal/prefetch"
	"github.com/vineroute/vinequeue/pin"
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
// Flush and Stop cut every item. The shards with no batch in flight are
// gathered as above, partial batch and all (a batch of each shard's own
// made up to 64 slivers at the end of a run); what a shard holds behind a
// batch in flight becomes a queue of batches of its own (cutq), dispatched
// one at a time. Flush cuts all of it at once; Stop cuts only a full batch
// ahead of each batch in flight, and leaves the rest to be gathered with
// the free shards' once the shard is free (see cutStop).
//
// # Intake without a lock
//
// A call appends to its shard's current ring (keyedRing), an array that
// many producers fill without a lock: a call reserves the next index with
// one compare-and-swap on the shard's tail (that order is the key's order:
// a call that returned before another began reserved an earlier index),
// writes the slot and publishes it. The reservation and the publication
// are pinned (pin.Pin), so the scheduler cannot stop a call between the
// two. A ring serves one run of indexes (its base and the len(slots) after
// it). The call that finds it full takes the shard's lock, moves it to the
// shard's list of full rings and installs an empty one for the next run
// (from the shard's spares); so the lock is taken once per ring's worth of
// a shard's items, for a few stores, rather than by every call (with the
// lock taken by every call, its holder was often preempted, with 256
// goroutines on 2 Ps, and most calls spent their time parked behind it).
//
// A shard holds a bounded number of full rings (keyedFullMax: at least
// four, and always more than a batch's worth). A call that needs a ring
// past that bound, with no spare, makes none: it wakes the collector and
// parks (waitRoom, unpinned, without the lock), as Enqueue's calls park
// for a spare ring. The collector then cuts the shard's full batches into
// its cut queue, whether or not the shard has a batch in flight, which
// empties those rings into its spares, and wakes the shard's parked calls;
// Stop, the memory stall and the interval tick wake them too. So a call
// waits for the collector only, never for a sender: behind a slow Send
// the backlog moves into batches, and memory, not the rings, bounds it
// (admission, the Policy). Without the bound, while the producers kept
// both cores busy the collector was seldom scheduled, and the whole
// backlog of a burst went into rings the calls made (below).
//
// # Where the rings come from
//
// A shard's spares are the rings the collector absorbed (reused as they
// are) and rings made for it. While producers outrun delivery, the
// backlog grows in rings, and every new ring is fresh memory from the
// system, whose first store to each page faults: the kernel maps and
// zeroes it, 1.3 µs a page on the benchmark VM. Faulted in the calls'
// pinned slot stores, two cores often on the same page at once, that and
// making the rings were more than half of what EnqueueKey cost its callers
// in the real-job benchmark
// (3M records: 11.7k rings, 290 MB, all made by the calls, p99 1.6 µs).
// So a ring's pages are touched as it is made (touch), off the pinned
// path, and the collector makes them when it can: the call that reserves
// the middle index of a run, finding no spare, sets the shard's bit in
// wantSpare and wakes the collector, which makes spares for the shards
// that asked (supplySpares) before it looks at the shards. If none came,
// the call that reserves the index at three quarters of the run makes
// one, unpinned, as does, last, a call that finds the ring full and no
// spare (pushSlow), both only below the shard's bound of full rings
// (keyedFullMax; at the bound the collector cuts, and the calls wait).
// Rings a shard's calls made themselves raise how many spares the
// collector keeps for it (spareTarget, up to keyedSparesMax), and a shard
// that idles a tick lets its spares go (releaseIdle), so an idle queue
// holds one ring per shard, as before. With both cores busy producing, the
// collector ran seldom and the calls still made most rings (10–50 % came
// from the collector); touched at once they cost the calls less than
// faulted slot by slot (32 producers: 127 → 102 ns of the calls' CPU per
// item, p99 of a call 1.7 → 0.3 µs). The bound (above) ends that: the
// calls make at most keyedFullMax rings a shard, and then reuse those the
// collector empties, whose pages are warm; the backlog's fresh memory is
// the batches', which the collector allocates. In the real-job benchmark
// (1M records, 256 producers, 16 alternated runs on a busy machine) some
// 600 rings were made (calls and collector) rather than about 4,000, one
// call in about a thousand parked, and the calls' CPU per item fell from
// 114 to 77 ns (32 producers: 109 to 65), p99 of a call 496 to 340 ns.
//
// The collector moves what the rings have published (absorb), oldest
// first, into the shard's queue (items, keys), which only it touches,
// under the lock: the full rings in order, then the current one, stopping
// at the first slot not yet published, or, for Flush, Stop and the
// checkpoint, waiting for it (a pinned call finishes without the
// scheduler). A slot's seq is its index+1 once published. A ring is never
// freed slot by slot, and replaced only when full, so a call reserves
// index t in the ring it holds only if t is in that ring's run: a ring
// replaced (or reused for a later run) meanwhile has moved the tail past
// t, and the compare-and-swap fails.
//
// The sync tier makes each item durable before it enters its shard, with
// its span: that intake (gated) appends to the queue under the lock, spans
// and all, and never makes a ring. The periodic tier's checkpoint moves
// what the rings hold into the shards' queues and writes it there
// (persistShard) without cutting it; a keyed batch cut from the rings
// instead goes to Send unwritten, and is written only if a checkpoint or
// a Stop out of time finds it undelivered (registerKeyed; the write ticket
// in durable.go). A Stop that can run out of time does the checkpoint's
// writing of the shards as it begins (writeKeyed), so that the items
// waiting behind a batch in flight, which it cannot cut before that batch
// is finished, are not left to write past its deadline. A key's items
// must reach the WAL in its order, since a
// replay goes in record order: a checkpoint writes the batches handed on
// in cut order and settles each shard's (settleFlight) before it writes
// what the shard holds after them, and a shard's next batch is cut only
// once the last one is finished (delivered, or written).
type keyedShards[T any] struct {
	shards [nKeyedShards]keyedShard[T]
	// gated: the tier writes a keyed item before it enters its shard (the
	// sync tier's log), so EnqueueKey holds the intake gate from before
	// that write until the item is queued, and admits each item on its
	// own, before the write. Otherwise the shard's sealed tail and closed
	// flag are the gate and admission is taken in chunks (credit). Set in
	// New.
	gated bool
	// chunk is the most credit a shard takes from the governor at once
	// (see credit); 0 admits every item on its own. Set in New.
	chunk int64
	// used is set by the first EnqueueKey: until then the collector does
	// not look at the shards.
	used atomic.Bool
	// kick asks the collector's next full cut (cutFull) to look at the
	// shards: set when a shard gathers a stride of items or fills a ring,
	// a keyed batch is finished (its shards are free) or the replay ends.
	// Between kicks the collector does not read the shards' lines, which
	// the producers are writing.
	kick atomic.Bool
	// wantSpare has bit i set when shard i asks the collector for spare
	// rings (supplySpares): its current ring is half used and it has no
	// spare, a call had to make a ring itself, or the shard holds as many
	// full rings as it may (keyedFullMax) and a call needs another, or
	// waits for room (waitRoom).
	wantSpare atomic.Uint64
	next      int // collector-owned: the shard the next gathering starts at (fairness)
	// releasing counts the credit releases under way (releaseIdle,
	// shedCredit) and released those done: a release takes the shards'
	// credit, then gives it back to bytesHeld, and Stats, which counts the
	// items' bytes as bytesHeld less the credit, reads both between two
	// looks that find no release under way and none done meanwhile
	// (heldBytes); otherwise it could count a shard's credit as items, or
	// count it out twice.
	releasing atomic.Int32
	released  atomic.Uint64
}

// One bit per shard in wantSpare.
var _ [64 - nKeyedShards]struct{}

// ringSealed, in a shard's tail, says that it takes no reservation: Stop
// closed the shard.
const ringSealed = 1 << 63

type keyedShard[T any] struct {
	// What the lock-free EnqueueKey reads and writes, on one cache line.

	// tail is the number of ring indexes reserved so far (the next one
	// to reserve), with ringSealed once Stop closed the shard.
	tail atomic.Uint64
	// credit is admitted memory not yet used by an item: an ungated
	// EnqueueKey takes what its item weighs from here (compare-and-swap,
	// never below 0), and only when it runs short passes admission, for a
	// chunk at once. Charged to the governor and bytesHeld like the
	// items; at most chunk after every call (admit.go, the memory bound).
	credit atomic.Int64
	ring   atomic.Pointer[keyedRing[T]] // the current ring (stored under mu)
	// inflight is set by the collector when the shard's items go into a
	// batch for a sender, and cleared when that batch is finished.
	inflight atomic.Bool
	closed   atomic.Bool // Stop closed the shard (ungated intake refuses); set under mu
	// gatedIn counts the items the gated intake accepted (with the ring's
	// reservations, what the shard accepted: Stats, releaseIdle).
	gatedIn atomic.Uint64
	_       [cacheLine - 8*6]byte

	mu sync.Mutex
	// full are the rings filled and replaced, oldest first, and spares
	// the empty ones kept for reuse (guarded by mu).
	full   []*keyedRing[T]
	spares []*keyedRing[T]
	// nspares is len(spares) and nfull len(full), stored under mu, so
	// that a call sees without the lock whether the shard needs a spare
	// and whether it may make one (keyedFullMax).
	nspares atomic.Int32
	nfull   atomic.Int32
	// room is what the calls parked for room wait on (waitRoom): closed,
	// and set back to nil, when the collector has cut the shard's
	// backlog (supplySpares), by Stop and by the stall's and the tick's
	// pokes (wakeRoom). Nil while nobody waits; parked says whether it is
	// set, for the pokes, without the lock. Guarded by mu.
	room   chan struct{}
	parked atomic.Bool
	// made counts the rings the shard's calls had to make themselves
	// (no spare when a ring filled), since the collector last looked.
	made atomic.Uint32
	// spareTarget is how many spares the collector keeps for the shard
	// while it is busy (collector-owned): it doubles, up to
	// keyedSparesMax, each time calls had to make rings since the last
	// top-up, and is back to 1 once the shard idles a tick.
	spareTarget int
	// taken is the next ring index to absorb (guarded by mu; atomic so
	// that the collector sees without the lock whether there is any).
	taken atomic.Uint64
	// items (guarded by mu) are accepted and absorbed, not yet cut:
	// buf[head:head+n], buf being the backing array from its start
	// (length 0). take moves head on rather than copying what is left,
	// and push slides the items down when the array is full at the back
	// with as much room at the front, so a shard reuses one array however
	// its items are taken, and each item is copied a bounded number of
	// times on average.
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
	// queued is len(items), stored under mu, so that the collector counts
	// a shard's items without its lock.
	queued atomic.Int64

	spans     []span // guarded by mu: where items[:persisted] are in the WAL
	persisted int    // guarded by mu: items[:persisted] are on disk (sync tier: all)

	// Owned by the collector.
	cutq fifo[*pending[T]]
	// flight is the batch last dispatched with the shard's items (in
	// flight while inflight is set; once that is clear it may be
	// recycled, so only its atomics are read), and flightTicket its
	// write ticket: nonzero if it was cut unwritten (the periodic tier;
	// see settleFlight).
	flight       *pending[T]
	flightTicket uint64
	// seenIn is what the shard had accepted at the collector's last tick:
	// a shard that accepted nothing since gives its credit back
	// (releaseIdle).
	seenIn uint64
	// cut counts the items that have left the shard in batches (take,
	// takeRings), and waitMark is cut plus the backlog at the collector's
	// last tick if the shard was free to go into a batch then (cut
	// otherwise): while cut is below it, an item the shard held, free, at
	// that tick is still waiting (cutKeyed's partial cut). Items that
	// leave otherwise (none do today) would only make one tick cut early.
	cut      uint64
	waitMark uint64
	_        [cacheLine]byte
}

// keyedRing is one run of a shard's indexes: base and the len(slots) after
// it. Index i has slot i&mask, whose seq is i+1 once its item is
// published there (older values come from earlier runs, all below base).
type keyedRing[T any] struct {
	base  atomic.Uint64 // stored under the shard's lock as the ring is installed
	mask  uint64
	slots []keyedSlot[T]
}

type keyedSlot[T any] struct {
	seq  atomic.Uint64
	key  uint64
	size int64
	v    T
}

// keyedRingBytes bounds a ring (at most 256 slots): a call that fills one
// takes the shard's lock and installs a spare (or, with none, makes the
// next ring), so the larger the ring, the rarer that slower call (1 in 256
// of a shard's calls for 48-byte items; it sets the calls' p99 when it is
// more often than 1 in 100). An idle queue keeps one ring per shard its
// EnqueueKey used: for 48-byte items 18 KiB each, 1.2 MiB for the 64
// shards.
const keyedRingBytes = 32 << 10

func newKeyedRing[T any]() *keyedRing[T] {
	n := 256
	for n > 16 && uintptr(n)*unsafe.Sizeof(keyedSlot[T]{}) > keyedRingBytes {
		n /= 2
	}
	r := &keyedRing[T]{mask: uint64(n - 1), slots: make([]keyedSlot[T], n)}
	r.touch()
	return r
}

// pageBytes is the smallest page size of the platforms Go runs on.
const pageBytes = 4 << 10

// touch stores to every page of the ring's slots. A backlog takes fresh
// memory from the system: the first store to each of its pages faults
// (the kernel maps and zeroes the page: 1.3 µs on the benchmark VM, more
// than a call's whole work for the 40-odd items a page holds). Touched
// here, by whoever makes the ring (the collector, or a call unpinned), the
// pages fault one after the other, rather than in the calls' slot stores,
// pinned, where both cores could fault on the same page at once, each
// waiting for the other. On memory the allocator reused (zeroed already)
// the stores cost next to nothing.
func (r *keyedRing[T]) touch() {
	size := unsafe.Sizeof(r.slots[0])
	step := max(int(pageBytes/size), 1) // every page holds a touched slot
	for i := 0; i < len(r.slots); i += step {
		r.slots[i].size = 0
	}
	r.slots[len(r.slots)-1].size = 0 // and the last page
}

// end is the index after the ring's run.
func (r *keyedRing[T]) end() uint64 { return r.base.Load() + r.mask + 1 }

// backlog is how many items the shard holds, published or being
// published, not yet cut. Collector only.
func (s *keyedShard[T]) backlog() int {
	return int(s.queued.Load()) + int(s.tail.Load()&^ringSealed-s.taken.Load())
}

// accepted is how many items the shard has accepted: its rings'
// reservations and its gated pushes.
func (s *keyedShard[T]) accepted() uint64 {
	return s.tail.Load()&^ringSealed + s.gatedIn.Load()
}

// ShardOf is the keyed shard that holds key's items: the order of a key's
// items is kept within it.
func ShardOf(key uint64) int {
	// Fibonacci hashing: consecutive keys land on different shards.
	return int((key * 0x9E3779B97F4A7C15) >> (64 - 6))
}

// EnqueueKey accepts v like Enqueue, and delivers the items of one key in the
// order they were accepted: FIFO per key, with any number of Workers, across
// retries, spills and crashes. Use KeyOf for a string key.
//
// Per call it takes no lock and writes only its shard's lines: admission
// comes from the shard's credit, taken from the governor in chunks
// (admit.go); the item goes into the shard's ring (pinned, see above; a
// call that finds the ring full replaces it under the shard's lock), and
// the collector is woken once per stride of a shard's items, not per call.
// A call may park, unpinned, while the collector catches up with its
// shard (it holds a bounded number of full rings: see waitRoom), as
// Enqueue's calls park for a spare ring.
// Only the sync tier, which writes the item to the WAL first, passes the
// intake gate, admits each item and takes the shard's lock.
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
	s := &ks.shards[ShardOf(key)]
	if size == 0 {
		// An item that weighs nothing needs no credit, but still meets
		// the Policy at the hard level.
		if err := q.admit(1, 0, false); err != nil {
			return err
		}
	} else if !s.takeCredit(size) {
		if err := q.refillCredit(s, size); err != nil {
			return err
		}
	}
	pin.Pin()
	n, ok := s.tryPush(key, v, size)
	pin.Unpin()
	if !ok {
		var err error
		if n, err = q.pushSlow(s, key, v, size); err != nil {
			q.unadmit(size) // closed: the credit it took goes back
			return err
		}
	} else if due, mid := s.spareDue(n); due {
		q.prepareSpare(s, mid)
	}
	q.wakeForKeyed(s, n)
	return nil
}

// spareDue reports whether the n'th index (n counting from 1) is the
// middle (mid) or three quarters of the run of the shard's current ring:
// where prepareSpare looks for the next ring.
func (s *keyedShard[T]) spareDue(n uint64) (due, mid bool) {
	r := s.ring.Load()
	off, run := n-1-r.base.Load(), r.mask+1
	return off == run/2 || off == run/4*3, off == run/2
}

// takeCredit takes size from the shard's credit if it holds that much.
func (s *keyedShard[T]) takeCredit(size int64) bool {
	for {
		c := s.credit.Load()
		if c < size {
			return false
		}
		if s.credit.CompareAndSwap(c, c-size) {
			return true
		}
	}
}

// refillCredit passes admission for a chunk (or the item, if larger), keeps
// size of it for the caller's item and leaves the rest in the shard's
// credit, which it trims back to one chunk if concurrent refills brought
// more.
func (q *Queue[T]) refillCredit(s *keyedShard[T], size int64) error {
	chunk := q.keyed.chunk
	get := max(chunk, size)
	if err := q.admit(1, get, false); err != nil {
		return err
	}
	if get == size {
		return nil
	}
	s.credit.Add(get - size)
	for {
		c := s.credit.Load()
		if c <= chunk {
			break
		}
		if s.credit.CompareAndSwap(c, chunk) {
			q.unadmit(c - chunk)
			break
		}
	}
	if s.closed.Load() {
		// Stop shed the shard's credit before this came: give it back.
		q.unadmit(s.credit.Swap(0))
	}
	return nil
}

// tryPush appends v to the shard's ring and returns how many indexes the
// shard has reserved now; false if the ring is full (or one that has been
// replaced), the shard sealed, or no ring made yet. Pinned: nothing here
// waits.
func (s *keyedShard[T]) tryPush(key uint64, v T, size int64) (uint64, bool) {
	r := s.ring.Load()
	if r == nil {
		return 0, false
	}
	return s.tryPushRing(r, key, v, size)
}

// tryPushRing is tryPush into r, which the caller loaded as the shard's
// ring at some point (it may have been replaced since).
func (s *keyedShard[T]) tryPushRing(r *keyedRing[T], key uint64, v T, size int64) (uint64, bool) {
	for {
		t := s.tail.Load()
		if t&ringSealed != 0 || t-r.base.Load() > r.mask {
			return 0, false // sealed, or t not in r's run: r is full or replaced
		}
		if s.tail.CompareAndSwap(t, t+1) {
			sl := &r.slots[t&r.mask]
			sl.key, sl.size, sl.v = key, size, v
			publishSlot(&sl.seq, t+1)
			if t-r.base.Load() < r.mask {
				// The shard's next call stores to the next slot,
				// whose lines the collector read or cleared, often
				// on the other core: ask for them now, so that the
				// transfer is under way before that call comes. When
				// that call runs on the other core, the prefetch has
				// moved the lines for nothing; still, without it a
				// lone producer's call (BenchmarkEnqueueKey) took up
				// to 1.7× as long in half the runs, and the real job
				// with 32 producers showed no difference.
				prefetch.ForWrite(unsafe.Pointer(&r.slots[(t+1)&r.mask]), unsafe.Sizeof(*sl))
			}
			return t + 1, true
		}
		// Another call reserved t first: try the next index.
	}
}

// pushSlow is the path of a call whose ring was full, replaced or not made:
// under the shard's lock it installs an empty ring for the next run if the
// current one is still full (moving that one to the full list), then
// pushes again. With no spare it makes a ring, without the lock, unless
// the shard holds as many full rings as it may: then it waits for the
// collector (waitRoom) and looks again. It does not park on the
// lock either: a call that finds it taken yields and tries its push again,
// since the holder is most likely installing the ring it needs; parked
// callers queued behind a preempted holder, and each handed the lock on
// in turn, as when every call took the lock.
func (q *Queue[T]) pushSlow(s *keyedShard[T], key uint64, v T, size int64) (uint64, error) {
	for {
		if !s.mu.TryLock() {
			runtime.Gosched()
			if s.closed.Load() {
				return 0, ErrClosed
			}
			pin.Pin()
			n, ok := s.tryPush(key, v, size)
			pin.Unpin()
			if ok {
				return n, nil
			}
			continue
		}
		if s.closed.Load() {
			s.mu.Unlock()
			return 0, ErrClosed
		}
		cur, t := s.ring.Load(), s.tail.Load()&^ringSealed
		if cur == nil || t == cur.end() {
			n := len(s.spares)
			if n == 0 && cur != nil && len(s.full) >= q.keyedFullMax(cur) {
				// As many full rings as the shard may hold: no new
				// one; the collector cuts them (waitRoom).
				room := s.parkRoom()
				s.mu.Unlock()
				q.waitRoom(s, room)
				continue
			}
			if n == 0 {
				s.mu.Unlock()
				q.addSpare(s)
				continue
			}
			r := s.spares[n-1]
			s.spares[n-1] = nil
			s.spares = s.spares[:n-1]
			s.nspares.Store(int32(n - 1))
			if cur != nil {
				s.full = append(s.full, cur)
				s.nfull.Store(int32(len(s.full)))
			}
			// A call still holding r from its last run (or cur) sees
			// t in its run only from here: r is then the ring for t.
			r.base.Store(t)
			s.ring.Store(r)
		}
		s.mu.Unlock()
		if cur != nil && t == cur.end() {
			q.kickKeyed() // a full ring to absorb
		}
		pin.Pin()
		n, ok := s.tryPush(key, v, size)
		pin.Unpin()
		if ok {
			return n, nil
		}
		runtime.Gosched() // the new run filled meanwhile, or a reservation is under way
	}
}

// keyedFullMin is the fewest full rings a shard may hold before a call
// that needs another ring, finding no spare, waits for the collector
// (waitRoom) rather than make one.
const keyedFullMin = 4

// keyedFullMax is how many full rings (of r's run) a shard may hold before
// a call that needs another, finding no spare, parks until the collector
// has cut them (waitRoom): keyedFullMin, or more when a batch takes more
// rings than that, so that rings held at the bound always make up a whole
// batch and one ring over, which the collector cuts whether or not the
// shard has a batch in flight. So the shard's full rings fall below the
// bound again once it has cut its full batches, and a call waits for the
// collector only, never for a sender.
func (q *Queue[T]) keyedFullMax(r *keyedRing[T]) int {
	run := r.mask + 1
	size := uint64(max(q.batchSize.Load(), 1))
	return max(keyedFullMin, int((size+run-1)/run)+1)
}

// parkRoom is the channel a call waits on for room in the shard (waitRoom).
// Caller holds s.mu.
func (s *keyedShard[T]) parkRoom() <-chan struct{} {
	if s.room == nil {
		s.room = make(chan struct{})
		s.parked.Store(true)
	}
	return s.room
}

// wakeRoom wakes every call parked for room in the shard: each looks again
// (it may find room, the shard closed, or park again). Caller holds s.mu.
func (s *keyedShard[T]) wakeRoom() {
	if s.room != nil {
		close(s.room)
		s.room = nil
		s.parked.Store(false)
	}
}

// waitRoom parks a call that needs a ring in a shard holding as many full
// rings as it may (keyedFullMax) and no spare, until the collector has cut
// them and so made spares of them (supplySpares), or Stop closed the
// shard, or a poke (the memory stall, the tick) has it look again.
// Unpinned, without the shard's lock: the caller took room from parkRoom
// under it, so that whatever wakes the shard's calls after that (also
// under the lock) closes room, and a wake between the two is not lost.
//
// This is Enqueue's backpressure for keyed calls: without it, while the
// producers kept both cores busy, the collector was seldom scheduled, the
// whole backlog went into rings the calls made (fresh memory, whose page
// faults were most of what a call cost), and delivery began only once the
// producers were done. Parked, they give the collector the CPU; the
// backlog moves into batches the collector makes, and the calls keep
// reusing a few warm rings.
func (q *Queue[T]) waitRoom(s *keyedShard[T], room <-chan struct{}) {
	q.keyed.askSpare(s)
	q.kickKeyed()
	if f := q.cfg.KeyedParking; f != nil {
		f()
	}
	<-room
}

// wakeParked wakes the calls parked for room in every shard (waitRoom):
// Stop, the memory stall and the tick, with Enqueue's waiters (pokeAll).
// Unpinned.
func (ks *keyedShards[T]) wakeParked() {
	for i := range ks.shards {
		s := &ks.shards[i]
		if s.parked.Load() {
			s.mu.Lock()
			s.wakeRoom()
			s.mu.Unlock()
		}
	}
}

// prepareSpare sees to it that the shard has a spare ring before its
// current one fills, so that the call that fills the run, which others of
// the shard's calls may be waiting on, finds a spare rather than making
// one (spareDue says when). The call that reserved the middle index of a
// run (mid), finding no spare, asks the collector for one; the one that
// reserved the index at three quarters, finding none still, makes it
// itself, unless the shard holds as many full rings as it may
// (keyedFullMax): then it asks the collector again, which cuts them.
// Unpinned.
func (q *Queue[T]) prepareSpare(s *keyedShard[T], mid bool) {
	if s.nspares.Load() > 0 {
		return
	}
	if mid || int(s.nfull.Load()) >= q.keyedFullMax(s.ring.Load()) {
		// At the bound the collector cuts the full rings and so
		// recycles them; the call makes none (waitRoom).
		q.keyed.askSpare(s)
		q.wakeCollector()
		return
	}
	q.addSpare(s)
}

// addSpare gives the shard an empty ring, made by the call itself without
// the shard's lock: the shard's first ring, or the fallback when the
// collector has not supplied one in time. The latter it counts (made), so
// that the collector keeps more spares for the shard.
func (q *Queue[T]) addSpare(s *keyedShard[T]) {
	r := newKeyedRing[T]()
	if s.ring.Load() != nil {
		s.made.Add(1)
		q.keyed.askSpare(s)
	}
	s.putSpare(r)
}

// putSpare adds r to the shard's spares.
func (s *keyedShard[T]) putSpare(r *keyedRing[T]) {
	s.mu.Lock()
	s.spares = append(s.spares, r)
	s.nspares.Store(int32(len(s.spares)))
	s.mu.Unlock()
}

// askSpare sets the shard's bit in wantSpare, unless it is set already.
func (ks *keyedShards[T]) askSpare(s *keyedShard[T]) {
	bit := uint64(1) << ks.index(s)
	if ks.wantSpare.Load()&bit == 0 {
		ks.wantSpare.Or(bit)
	}
}

// index is s's place in ks.shards.
func (ks *keyedShards[T]) index(s *keyedShard[T]) int {
	return int((uintptr(unsafe.Pointer(s)) - uintptr(unsafe.Pointer(&ks.shards[0]))) / unsafe.Sizeof(*s))
}

// keyedSparesMax bounds the spares the collector keeps for a busy shard:
// with 32 KiB rings, 8 MiB over the 64 shards at most, and only while
// they are busy (releaseIdle lets an idle shard's spares go).
const keyedSparesMax = 4

// supplySpares gives the shards that asked (wantSpare) spare rings: first
// it cuts each one's full batches into its cut queue (in flight or not),
// which empties rings into its spares, then it makes more on the
// collector, up to the shard's spareTarget, while the shard is below its
// bound of full rings, and last wakes the shard's calls parked for room
// (waitRoom). A ring is memory the
// call would otherwise take from the allocator itself, while a backlog
// builds up: fresh pages, whose first touch (a page fault, about a
// microsecond each) cost the calls more than the rest of their work
// together. newKeyedRing touches them, so a supplied ring costs a call
// nothing but its stores. A shard whose calls still had to make rings
// since the last top-up gets a larger target. Collector only.
func (c *collector[T]) supplySpares() {
	q := c.q
	ks := &q.keyed
	size := int(q.batchSize.Load())
	for want := ks.wantSpare.Swap(0); want != 0; want &= want - 1 {
		s := &ks.shards[bits.TrailingZeros64(want)]
		if s.closed.Load() {
			continue // Stop: no more calls to serve (it woke them)
		}
		// Full batches first, into the shard's cut queue, whether or
		// not it has a batch in flight: the rings they empty become
		// spares, warm, and the backlog moves into batches.
		cut := false
		for size > 0 && s.backlog() >= size && s.cutOne(c, size) {
			cut = true
		}
		if cut {
			ks.kick.Store(true) // dispatch them
			s.mu.Lock()
			// A cut that ended at a full ring's end left it in full.
			for len(s.full) > 0 && s.taken.Load() == s.full[0].end() {
				s.dropFull()
			}
			s.mu.Unlock()
		}
		if s.made.Swap(0) > 0 {
			s.spareTarget = min(2*max(s.spareTarget, 1), keyedSparesMax)
		}
		if r := s.ring.Load(); r != nil && int(s.nfull.Load()) < q.keyedFullMax(r) {
			for range max(s.spareTarget, 1) - int(s.nspares.Load()) {
				s.putSpare(newKeyedRing[T]())
			}
		}
		if s.parked.Load() {
			s.mu.Lock()
			s.wakeRoom()
			s.mu.Unlock()
		}
	}
}

// serveKeyed does, between the writes of a long pass (a checkpoint's, or
// Stop's as it begins), what the collector does for the shards that asked
// for room or a spare (supplySpares), so that calls parked for room wait
// for one write, not the whole pass. Safe there: the batches it cuts go to
// their shard's cut queue, registered unwritten as any cut, and the pass
// settles a cut queue (settleFlight) before it writes what its shard holds
// after it; one cut from a shard the pass has written already holds only
// items accepted after the pass read that shard's tail. Collector only.
func (c *collector[T]) serveKeyed() {
	if c.q.keyed.wantSpare.Load() != 0 {
		c.supplySpares()
	}
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
	s.push(v, key, q.keepKeys, size)
	n := int64(len(s.items))
	s.queued.Store(n)
	s.gatedIn.Add(1)
	s.mu.Unlock()
	q.wakeForKeyed(s, uint64(n))
	return nil
}

// push appends v, admitted for size bytes, and with keep its key, to the
// shard's queue. Caller holds s.mu, and stores queued when done.
func (s *keyedShard[T]) push(v T, key uint64, keep bool, size int64) {
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
}

// absorb moves what the shard's rings have published, oldest first, into
// its queue (absorbLocked). Collector only; it skips a shard with nothing
// to absorb without taking its lock.
func (c *collector[T]) absorb(s *keyedShard[T], all bool) {
	if s.taken.Load() == s.tail.Load()&^ringSealed {
		return
	}
	s.mu.Lock()
	s.absorbLocked(c.q.keepKeys, all)
	s.mu.Unlock()
}

// absorbLocked moves what the shard's rings have published, oldest first,
// into its queue: the full rings (each goes to the spares once absorbed),
// then the current one. With all it also waits for the reservations under
// way up to the tail it reads first (each is a pinned call between its
// compare-and-swap and its publication: it finishes without the
// scheduler), so that every item accepted before the call is absorbed:
// Flush, Stop and the checkpoint. Otherwise it stops at the first slot not
// yet published. Caller holds s.mu (released while it waits).
func (s *keyedShard[T]) absorbLocked(keep, all bool) {
	end := s.tail.Load() &^ ringSealed
	i := s.taken.Load()
	for {
		sl := s.published(i, end, all)
		if sl == nil {
			break
		}
		s.push(sl.v, sl.key, keep, sl.size)
		var zero T
		sl.v = zero // retention rule
		i++
	}
	s.taken.Store(i)
	s.queued.Store(int64(len(s.items)))
}

// takeRings moves up to n items the rings have published, oldest first,
// straight into b (the shard's queue being empty), and returns how many;
// with all it waits for the reservations under way, as absorbLocked does.
// Caller holds s.mu (released while it waits).
func (s *keyedShard[T]) takeRings(b *pending[T], n int, keep, all bool) int {
	end := s.tail.Load() &^ ringSealed
	i := s.taken.Load()
	got := 0
	for got < n {
		sl := s.published(i, end, all)
		if sl == nil {
			break
		}
		b.items = append(b.items, sl.v)
		if keep {
			b.keys = append(b.keys, sl.key)
		}
		b.bytes += sl.size // charged when admitted
		var zero T
		sl.v = zero // retention rule
		i++
		got++
	}
	s.taken.Store(i)
	s.cut += uint64(got)
	return got
}

// published is index i's slot once its item is published there, or nil if
// i is end or, without all, the item is not published yet; with all it
// waits for the reservation under way (a pinned call between its
// compare-and-swap and its publication, which finishes without the
// scheduler). Caller holds s.mu (released while it waits).
func (s *keyedShard[T]) published(i, end uint64, all bool) *keyedSlot[T] {
	for {
		sl := s.slot(i, end)
		if sl == nil || sl.seq.Load() == i+1 {
			return sl
		}
		if !all {
			return nil
		}
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
	}
}

// slot is index i's slot, or nil if i is end; the full rings that end at
// or before i go to the spares on the way. Caller holds s.mu.
func (s *keyedShard[T]) slot(i, end uint64) *keyedSlot[T] {
	for len(s.full) > 0 && i == s.full[0].end() {
		s.dropFull()
	}
	if i == end {
		return nil
	}
	r := s.ring.Load()
	if len(s.full) > 0 {
		r = s.full[0]
	}
	return &r.slots[i&r.mask]
}

// dropFull moves the oldest full ring, absorbed, to the spares: a busy
// shard reuses its rings (releaseIdle lets an idle shard's spares go).
// Caller holds s.mu.
func (s *keyedShard[T]) dropFull() {
	r := s.full[0]
	s.full[0] = nil
	s.full = s.full[1:]
	s.spares = append(s.spares, r)
	s.nspares.Store(int32(len(s.spares)))
	s.nfull.Store(int32(len(s.full)))
}

// kickKeyed has the collector look at the shards.
func (q *Queue[T]) kickKeyed() {
	if !q.keyed.kick.Load() {
		q.keyed.kick.Store(true)
	}
	q.wakeCollector()
}

// wakeForKeyed wakes the collector when a shard with no batch in flight
// has gathered another stride of items (BatchSize spread over the shards):
// often enough that it cuts a full batch soon after the shards hold one,
// without a wake per call. n counts the shard's ring reservations (or, the
// gated intake, its queue). The interval tick cuts what is partial.
func (q *Queue[T]) wakeForKeyed(s *keyedShard[T], n uint64) {
	stride := uint64(max(q.batchSize.Load()/nKeyedShards, 1))
	if n%stride == 0 && !s.inflight.Load() {
		q.kickKeyed()
	}
}

// take moves up to n leading items of the shard's queue (and their spans)
// into b. Caller holds s.mu and has had the tier persist them
// (persistShard).
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
	s.cut += uint64(n)
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
	cutAll                     // every item, the free shards' gathered, the rest into cut queues: Flush, Stop out of time
	// cutStop is cutAll a batch at a time (Stop, which calls again on
	// every event until nothing is left): a shard with a batch in flight
	// keeps one full batch cut and waiting behind it, and what is less
	// than a batch is gathered with the free shards' once its shard is
	// free. Cutting a backlog all at once (a million items: a tenth of a
	// second of copying) left the senders idle until the last shard was
	// cut. A partial batch is cut only once no shard holds items behind
	// a batch in flight (so that the last items of every shard leave
	// together, rather than a partial batch of each shard's as its last
	// full one is finished), or when a sender would otherwise be idle
	// (so that one shard's stuck Send holds up no other key's items).
	cutStop
)

// cutKeyed makes keyed batches, as Enqueue's rings do: full batches as soon
// as the shards that have no batch in flight hold BatchSize items between
// them, a partial one only on an interval tick, and everything for Flush
// (cutAll: the free shards' items gathered, the rest into the shards' cut
// queues) and Stop (cutStop: the same, a batch per shard at a time, the
// last items gathered; see the type's comment).
// Each shard with no batch in flight first dispatches its next queued
// batch. While a replay is pending nothing is dispatched (per key, replayed
// items go first); cutAll cuts items that then wait, cutStop nothing.
//
// A tick cuts a partial batch only if a shard free to go into one still
// holds an item it held, free, at the tick before (waitedTick, markTick):
// so an item free to go waits at most two ticks (FlushInterval) for a
// partial cut, and while full batches keep taking the items as they come
// no partial one is cut at all. Cutting on every tick made the batches of
// a steady keyed flow about 0.6–0.8 × BatchSize; cutting whenever some
// item, however new, was left at the tick before still cut one partial
// batch every tick or two (Sync mode in the real-job benchmark, 240k items
// a second with 32 producers: 776–831 items per Send for BatchSize 1000);
// counting an item's tick while its shard had a batch in flight cut one
// as soon as that batch was finished, before the full batch that the
// shards, all free again, were about to make.
func (c *collector[T]) cutKeyed(how keyedCut) {
	q := c.q
	ks := &q.keyed
	if !ks.used.Load() {
		return
	}
	if ks.wantSpare.Load() != 0 {
		c.supplySpares()
	}
	partial := how == cutAll || how == cutStop
	if how == cutPartial {
		c.releaseIdle()
		partial = ks.waitedTick()
		defer ks.markTick()
	}
	if how == cutFull && !ks.kick.CompareAndSwap(true, false) {
		return // nothing new since the last look
	}
	if how != cutAll && !ks.hasWork() {
		return
	}
	size := int(q.batchSize.Load())
	all := how == cutAll || how == cutStop // every item, waiting for reservations under way
	if q.replaying.Load() {
		if how == cutAll {
			c.cutRest(size)
		}
		return
	}
	for i := range ks.shards {
		s := &ks.shards[i]
		if s.cutq.len() > 0 && !s.inflight.Load() {
			b := s.cutq.pop()
			s.fly(b)
			c.ready.push(b)
		}
	}
	for {
		if how == cutStop {
			partial = !ks.heldBehind() || c.senderIdle()
		}
		free := ks.free(size)
		if free == 0 || (free < size && !partial) || !c.gather(size, all) {
			break
		}
	}
	switch how {
	case cutAll:
		c.cutRest(size)
	case cutStop:
		// A full batch waits cut behind each batch in flight, so that it
		// goes as that one leaves; what is less than a batch waits in its
		// shard, for a gathering with others once the shard is free.
		for i := range ks.shards {
			s := &ks.shards[i]
			if s.cutq.len() == 0 && s.backlog() >= size {
				s.cutOne(c, size)
			}
		}
	}
}

// cutRest cuts what the shards still hold, behind a batch in flight or
// queued, into their cut queues: Flush, whose every item must be in a batch
// by now, and Stop out of time, which gives them up.
func (c *collector[T]) cutRest(size int) {
	for i := range c.q.keyed.shards {
		s := &c.q.keyed.shards[i]
		for s.cutOne(c, size) {
		}
	}
}

// heldBehind reports whether a shard with a batch in flight, or one cut and
// waiting, holds items still to go, which the free shards' last items may
// join once it is free (Stop). Collector only.
func (ks *keyedShards[T]) heldBehind() bool {
	for i := range ks.shards {
		s := &ks.shards[i]
		if (s.inflight.Load() || s.cutq.len() > 0) && (s.backlog() > 0 || s.cutq.len() > 0) {
			return true
		}
	}
	return false
}

// senderIdle reports whether more senders are between batches than there
// are batches ready for them: a partial batch cut now would not wait.
// Collector only.
func (c *collector[T]) senderIdle() bool {
	idle := 0
	for i := range c.q.senders {
		if c.q.senders[i].b.Load() == nil {
			idle++
		}
	}
	return idle > c.ready.len()
}

// waitedTick reports whether a shard free to go into a batch (none in
// flight, none queued) still holds an item it held at the last tick.
// Collector only.
func (ks *keyedShards[T]) waitedTick() bool {
	for i := range ks.shards {
		s := &ks.shards[i]
		if s.cut < s.waitMark && !s.inflight.Load() && s.cutq.len() == 0 {
			return true
		}
	}
	return false
}

// markTick notes, for the next tick's waitedTick, which items each shard
// free to go into a batch holds now. A shard with a batch in flight (or
// one cut and waiting) is not free: its items wait for that batch, and
// their tick starts at the first tick that finds the shard free, as an
// item's does that came to a free shard. Collector only.
func (ks *keyedShards[T]) markTick() {
	for i := range ks.shards {
		s := &ks.shards[i]
		s.waitMark = s.cut
		if !s.inflight.Load() && s.cutq.len() == 0 {
			s.waitMark += uint64(s.backlog())
		}
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
		n += int(s.queued.Load() + int64(s.tail.Load()&^ringSealed-s.taken.Load()))
	}
	return n
}

// gather cuts one batch from the leading items of the shards that have no
// batch in flight and none queued, up to size items, and readies it; it
// reports whether there was anything to cut. With all (Flush, Stop) it
// waits for the reservations under way in the rings it takes from, as
// absorbLocked does.
//
// A shard's leading items are its queue's, then its rings'; the rings'
// go straight into the batch, each item copied once on the collector.
// A batch takes items from queues or from rings, not both: a queue's
// items are on disk already when the tier writes (the periodic
// checkpoint wrote them where they were), the rings' are not, and a batch
// is either on disk as a whole or gets a write ticket (registerKeyed).
//
// The shards holding an item that has waited a tick go first: a full
// batch then takes the oldest items, and leaves, when the shards hold
// more than it takes, the newest (taken in turn from next, it often left
// a shard whose items had waited a tick, and the next tick cut them as a
// batch of their own).
func (c *collector[T]) gather(size int, all bool) bool {
	q := c.q
	ks := &q.keyed
	var b *pending[T]
	fromQueues := false // what b's items come from, once it has some
	// Two passes, each from next: the shards holding an item that has
	// waited a tick (waitMark), then the others.
	for k := range 2 * nKeyedShards {
		i := (ks.next + k) % nKeyedShards
		s := &ks.shards[i]
		if s.inflight.Load() || s.cutq.len() > 0 || (k < nKeyedShards) != (s.cut < s.waitMark) {
			continue
		}
		queued := s.queued.Load() > 0 // only the collector takes from the queue
		if !queued && s.taken.Load() == s.tail.Load()&^ringSealed {
			continue
		}
		if b == nil {
			b = q.getBatch()
		}
		if len(b.items) == 0 {
			fromQueues = queued
		} else if queued != fromQueues {
			continue // for the next batch
		}
		want := size - len(b.items)
		s.mu.Lock()
		var n int
		if queued {
			n = min(len(s.items), want)
			q.tier.persistShard(c, s) // nothing to write (see registerKeyed)
			s.take(q, b, n)
		} else {
			n = s.takeRings(b, want, q.keepKeys, all)
		}
		s.mu.Unlock()
		if n == 0 {
			continue // only reservations under way
		}
		s.inflight.Store(true) // flight is set once b is complete
		b.shards = append(b.shards, s)
		if len(b.items) == size {
			ks.next = (i + 1) % nKeyedShards
			break
		}
	}
	if b == nil {
		return false
	}
	if len(b.items) == 0 {
		q.putBatch(b)
		return false
	}
	c.number(b)
	c.registerKeyed(b)
	for _, s := range b.shards {
		s.fly(b)
	}
	c.ready.push(b)
	return true
}

// fly marks the shard in flight with b, b being ready for a sender.
// Collector only.
func (s *keyedShard[T]) fly(b *pending[T]) {
	s.flight, s.flightTicket = b, b.ticket
	s.inflight.Store(true)
}

// registerKeyed registers a keyed batch just cut as unwritten (durable.go)
// if the tier writes what a checkpoint finds undelivered (periodic) and
// its items are not on disk yet (they came from the rings): it gets a
// write ticket, and is written only if a checkpoint or a Stop out of time
// finds it undelivered (by the collector: writeUnwritten, settleFlight),
// or if its Send fails for good (by its sender). The collector used to
// write those items itself, which made encoding, compressing and writing
// every keyed item its work, on one goroutine; then each sender wrote its
// batch before Send, which a batch delivered before the next checkpoint
// does not need (a delivered item is not lost by a crash).
//
// A batch cut from a shard's queue is on disk already (a checkpoint wrote
// it there), except items whose write failed (span id 0: the codec refused
// one, or the WAL was full): such a batch holds the mark until it is
// finished, as unkeyed ones do (unwrittenSince), or a checkpoint after the
// failed one would claim items neither delivered nor on disk.
func (c *collector[T]) registerKeyed(b *pending[T]) {
	q := c.q
	if _, ok := q.tier.(periodicTier[T]); !ok {
		return
	}
	if since := unwrittenSince(b, c.since); since != 0 {
		q.registerUnwritten(b, since)
	}
}

// settleFlight makes sure that the items the shard has handed on are
// delivered or on disk, or their write is over, before the collector
// writes what the shard holds after them (the periodic checkpoint, or a
// Stop out of time): a replay goes in record order, so a key's items must
// reach the WAL in the key's order. That is the batch in flight, if it was
// cut unwritten (claimed and written here unless its sender took it,
// delivered, first; if another writer claimed it first, its write is
// waited for), then the batches cut for Flush or Stop and waiting in the
// shard's cut queue, in order. A checkpoint's writeUnwritten has written
// them already, in cut order, as has a Stop that could run out of time, as
// it began (the batches it cut since come from the shard's queue, on disk
// already). Collector only.
func (c *collector[T]) settleFlight(s *keyedShard[T]) {
	if t := s.flightTicket; t != 0 && s.inflight.Load() {
		// While inflight is set, flight is not finished, so not recycled
		// (only the collector sets inflight again).
		b := s.flight
		w := &c.q.durable.waits
		if b.claimToWrite(t, w) {
			c.q.writeClaimed(b, t, &c.enc)
		} else if b.claim.Load() == 0 {
			// Another writer's (its sender's, failed for good): over
			// once wrote says so, or b is finished (retire waits for
			// the write) and may be recycled. Each change is signalled:
			// wrote by writeClaimed, inflight by finish (a look may read
			// inflight before the finish and wrote after the recycle).
			w.wait(func() bool { return !s.inflight.Load() || b.wrote.Load() == t })
		}
	}
	for _, b := range s.cutq.items() {
		c.q.persistOwned(b, &c.enc)
	}
}

// settleKeyed settles every shard (settleFlight): Stop out of time, so
// that what was cut and not sent stays in the WAL rather than being lost.
// It finds nothing to write when Stop's first pass (writeKeyed) ran.
func (c *collector[T]) settleKeyed() {
	if _, ok := c.q.tier.(periodicTier[T]); !ok {
		return
	}
	for i := range c.q.keyed.shards {
		c.settleFlight(&c.q.keyed.shards[i])
	}
}

// cutOne moves up to size items into a new batch at the end of the shard's
// cut queue (Flush and Stop): its queue's or, the queue being empty, its
// rings', waiting for the reservations under way (see absorbLocked); not
// both (see gather).
func (s *keyedShard[T]) cutOne(c *collector[T], size int) bool {
	q := c.q
	b := q.getBatch()
	s.mu.Lock()
	n := min(len(s.items), size)
	if n > 0 {
		q.tier.persistShard(c, s) // nothing to write (see registerKeyed)
		s.take(q, b, n)
	} else {
		n = s.takeRings(b, size, q.keepKeys, true)
	}
	s.mu.Unlock()
	if n == 0 {
		q.putBatch(b)
		return false
	}
	b.shards = append(b.shards, s)
	c.number(b)
	c.registerKeyed(b)
	s.cutq.push(b)
	return true
}

// hasWork reports whether any item is accepted and not yet dispatched (in
// a shard, or in a cut queue). Collector only.
func (ks *keyedShards[T]) hasWork() bool {
	for i := range ks.shards {
		s := &ks.shards[i]
		if s.queued.Load() > 0 || s.cutq.len() > 0 || s.taken.Load() != s.tail.Load()&^ringSealed {
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
	defer ks.releaseCredit()()
	var freed int64
	for i := range ks.shards {
		s := &ks.shards[i]
		in := s.accepted()
		idle := in == s.seenIn
		s.seenIn = in
		if !idle {
			continue
		}
		freed += s.credit.Swap(0)
		s.mu.Lock()
		if len(s.items) == 0 && cap(s.buf)*int(unsafe.Sizeof(*new(T)))+cap(s.kbuf)*8 > keyedKeepBytes {
			s.items, s.buf, s.keys, s.kbuf, s.head = nil, nil, nil, nil, 0
		}
		clear(s.spares)
		s.spares = s.spares[:0]
		s.nspares.Store(0)
		s.mu.Unlock()
		s.spareTarget = 1
	}
	c.q.unadmit(freed)
}

// shedCredit gives the governor back every shard's unused credit: at the
// hard level (memory can fall by what nobody uses) and at Stop, where
// close also closes the shards: it seals their rings for good, and
// EnqueueKey refuses from then on. A call that reserved a ring index
// before the seal is pinned until it has published it, so Stop's wait for
// pinned calls (runtime.ReadMemStats) covers it.
func (ks *keyedShards[T]) shedCredit(q *Queue[T], close bool) {
	defer ks.releaseCredit()()
	var freed int64
	for i := range ks.shards {
		s := &ks.shards[i]
		if close {
			s.mu.Lock()
			s.closed.Store(true)
			s.tail.Or(ringSealed)
			s.wakeRoom() // parked calls: ErrClosed
			s.mu.Unlock()
		}
		freed += s.credit.Swap(0)
	}
	q.unadmit(freed)
}

// releaseCredit marks a credit release under way until the function it
// returns is called (see releasing).
func (ks *keyedShards[T]) releaseCredit() (done func()) {
	ks.releasing.Add(1)
	return func() {
		ks.released.Add(1)
		ks.releasing.Add(-1)
	}
}

// heldBytes is what the items admitted and not yet finished weigh: held
// (bytesHeld) less the credit the shards hold, read while no credit
// release is under way (see releasing). A refill's charge and credit can
// still be seen half done, by a Stats that runs beside the call.
func (ks *keyedShards[T]) heldBytes(held *atomic.Int64) int64 {
	for {
		done := ks.released.Load()
		if ks.releasing.Load() == 0 {
			var credit int64
			for i := range ks.shards {
				credit += ks.shards[i].credit.Load()
			}
			b := held.Load() - credit
			if ks.releasing.Load() == 0 && ks.released.Load() == done {
				return b
			}
		}
		runtime.Gosched()
	}
}

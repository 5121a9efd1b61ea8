package ring

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"unsafe"

	"github.com/vineroute/vinequeue/internal/prefetch"
)

// cacheLine is the padding unit; see the package documentation.
const cacheLine = 128

// maxPrefetch bounds what Prefetch asks for, in bytes: well within a core's
// first-level data cache (32 or 48 KiB on current amd64 and arm64 cores).
const maxPrefetch = 16 << 10

// Status is the outcome of a push.
type Status uint8

const (
	// Pushed: the item is in the ring.
	Pushed Status = iota
	// PushedWatermark: the item is in the ring, and the ring just reached its
	// watermark (or passed another watermark's worth of items since the last
	// one): wake the consumer.
	PushedWatermark
	// Full: the ring is full; the item was not stored.
	Full
	// Sealed: the ring is sealed; the item was not stored.
	Sealed
)

// ErrSize is returned by NewSPSC for a size that is not a power of two >= 2.
var ErrSize = errors.New("ring: size must be a power of two >= 2")

// SPSC is a bounded single-producer single-consumer ring. Create it with
// NewSPSC; the zero value is not usable.
type SPSC[T any] struct {
	_ [cacheLine]byte

	// Producer's line. tail is written only by the producer (published with
	// a release store) and loaded by the consumer. headCache and limit are
	// producer-private; limit is the tail at which the next push must look at
	// head (the ring may be full) or report a watermark. Invariant: limit >= tail.
	// sealed is written by Seal, read by the producer on
	// every push; it is written once in the ring's life, so it costs the
	// producer one cache miss in total.
	tail      atomic.Uint64
	headCache uint64 // last head the producer saw; <= head
	limit     uint64 // the producer takes the slow path when tail == limit
	sealed    atomic.Uint32
	psync     producerSync // empty unless -race
	_         [cacheLine - 8*3 - 4 - unsafe.Sizeof(producerSync{})]byte

	// Consumer's line. head is written only by the consumer, loaded by the
	// producer when its cache says full. tailCache is consumer-private.
	head      atomic.Uint64
	tailCache uint64
	_         [cacheLine - 16]byte

	// Read-only after NewSPSC.
	mask      uint64
	watermark uint64
	buf       []T
	// pointers: T holds pointers, so drained slots must be zeroed (the
	// retention rule). Zeroing pointer-free slots would only pull their
	// cache lines into the consumer's cache in the modified state, from
	// where the producer's next write must fetch them back.
	pointers bool
	// link chains the ring into a list while it is handed off between
	// owners (see Link); written rarely, so it may share this line.
	link atomic.Pointer[SPSC[T]]
	_    [cacheLine - 8*2 - 24 - 8 - 8]byte
}

// Byte offsets of the fields a push reads and writes, for assembly that
// pushes pointer-free items without calling Go (vinequeue's pinned push).
// They are the same for every T: T appears only as buf's element type, and a
// slice header's layout does not depend on it. Such a push must do exactly
// what TryPush does: return without storing when tail == limit or the ring is
// sealed; else store the item at buf[tail&mask], then publish tail+1.
const (
	OffsetTail   = unsafe.Offsetof(SPSC[byte]{}.tail)
	OffsetLimit  = unsafe.Offsetof(SPSC[byte]{}.limit)
	OffsetSealed = unsafe.Offsetof(SPSC[byte]{}.sealed)
	OffsetMask   = unsafe.Offsetof(SPSC[byte]{}.mask)
	OffsetBuf    = unsafe.Offsetof(SPSC[byte]{}.buf) // the slice's data pointer
)

// Link returns the ring's list link, for an intrusive list such as
// shard.Stack that hands whole rings from producers to the consumer. The
// ring's contents are unaffected; only the list's owner touches the link.
func (r *SPSC[T]) Link() *atomic.Pointer[SPSC[T]] { return &r.link }

// NewSPSC returns a ring of size slots (a power of two >= 2). The producer's
// push reports PushedWatermark each time the ring holds watermark items more
// than at the last report, counted from the consumer's position; watermark <= 0
// or > size means size (report only when the push fills the ring).
func NewSPSC[T any](size, watermark int) (*SPSC[T], error) {
	if size < 2 || size&(size-1) != 0 {
		return nil, fmt.Errorf("%w: got %d", ErrSize, size)
	}
	if watermark <= 0 || watermark > size {
		watermark = size
	}
	r := &SPSC[T]{
		mask:      uint64(size - 1),
		watermark: uint64(watermark),
		buf:       make([]T, size),
		pointers:  hasPointers(reflect.TypeFor[T]()),
	}
	r.limit = uint64(watermark) - 1
	return r, nil
}

// Cap returns the number of slots.
func (r *SPSC[T]) Cap() int { return len(r.buf) }

// Push appends v. Producer only. Its common case (neither full, nor at the
// watermark, nor sealed) is small enough to inline into the caller.
func (r *SPSC[T]) Push(v T) Status {
	if r.TryPush(v) {
		return Pushed
	}
	return r.pushSlow(v)
}

// TryPush is Push's common case alone: it stores v and returns true when the
// ring is below its limit (neither full nor at a watermark) and not sealed;
// otherwise it stores nothing and the caller must call Push. Producer only.
// It makes no call, so it stays within the compiler's inlining budget, and a
// caller's fast path pays for no function call at all.
func (r *SPSC[T]) TryPush(v T) bool {
	if raceEnabled { // every race-build push takes producerSync (pushSlow)
		return false
	}
	t := r.tail.Load() // producer-owned: a plain load on every GOARCH that matters
	if t == r.limit || r.sealed.Load() != 0 {
		return false
	}
	r.buf[t&r.mask] = v
	publish(&r.tail, t+1)
	return true
}

// pushSlow handles the push at the limit (full or watermark), the sealed
// ring, and every push of a race build (which must take producerSync).
func (r *SPSC[T]) pushSlow(v T) Status {
	r.psync.lock()
	defer r.psync.unlock()
	if r.sealed.Load() != 0 {
		return Sealed
	}
	t := r.tail.Load()
	if t != r.limit { // a race build's ordinary push
		r.buf[t&r.mask] = v
		publish(&r.tail, t+1)
		return Pushed
	}
	size := r.mask + 1
	h := r.head.Load()
	r.headCache = h
	if t-h >= size {
		r.limit = t // stay on the slow path until the consumer makes room
		return Full
	}
	r.buf[t&r.mask] = v
	t++
	publish(&r.tail, t)
	st := Pushed
	next := h + r.watermark // the next watermark counted from the consumer
	if t-h >= r.watermark {
		st = PushedWatermark
		next = t + r.watermark // rate-limit: at most one report per watermark items
	}
	r.limit = min(h+size, next-1) // >= t: equal when full or one short of the next mark
	return st
}

// Prefetch asks the CPU to fetch, for writing, the slots of the next n
// pushes (at most the free slots the producer knows of), without waiting
// for them. Producer only. A ring's slots were last read by its consumer,
// on another core: each line a push stores to must first be taken back from
// that core's cache, and a store waits for it (about 100 to 400 ns per line
// between two cores of a VM, for 64/unsafe.Sizeof(T) pushes). Prefetching a
// batch's lines when the ring is installed lets those transfers overlap
// each other and the pushes. It asks for at most maxPrefetch bytes. Without
// assembly (purego, or a GOARCH other than amd64 and arm64) it does nothing.
func (r *SPSC[T]) Prefetch(n int) { r.prefetch(n, false) }

// PrefetchDrained is Prefetch for a ring whose consumer drained it while
// its producer was away (a producer that waited for room): it first reads
// the consumer's head, which Prefetch does not (its cached copy would say
// the ring is still full, and nothing would be fetched). Producer only.
func (r *SPSC[T]) PrefetchDrained(n int) { r.prefetch(n, true) }

func (r *SPSC[T]) prefetch(n int, fresh bool) {
	var zero T
	size := unsafe.Sizeof(zero)
	if n <= 0 || size == 0 {
		return
	}
	// A producer-side read: under -race it orders with the pushes as they
	// do with each other (producerSync; a no-op otherwise).
	r.psync.lock()
	if fresh {
		r.headCache = r.head.Load() // still <= head: the consumer only moves it on
	}
	t := r.tail.Load()
	free := r.headCache + (r.mask + 1) - t // the slots below headCache+size are the producer's
	r.psync.unlock()
	// No more than a first-level cache can keep: lines prefetched beyond it
	// would evict the first ones before the pushes reach them.
	k := min(uint64(n), free, maxPrefetch/uint64(size))
	if k == 0 {
		return
	}
	i := t & r.mask
	first := min(k, r.mask+1-i)
	prefetch.ForWrite(unsafe.Pointer(&r.buf[i]), uintptr(first)*size)
	if rest := k - first; rest > 0 {
		prefetch.ForWrite(unsafe.Pointer(&r.buf[0]), uintptr(rest)*size)
	}
}

// PushBatch appends as many of vs as fit and returns how many it stored, and
// whether the ring reached a watermark (as for PushedWatermark). Fewer than
// len(vs) means the ring is full or sealed (see IsSealed). Producer only.
func (r *SPSC[T]) PushBatch(vs []T) (n int, mark bool) {
	r.psync.lock()
	defer r.psync.unlock()
	if r.sealed.Load() != 0 {
		return 0, false
	}
	t := r.tail.Load()
	size := r.mask + 1
	h := r.head.Load()
	r.headCache = h
	k := min(uint64(len(vs)), size-(t-h))
	for i := uint64(0); i < k; i++ {
		r.buf[(t+i)&r.mask] = vs[i]
	}
	t += k
	publish(&r.tail, t)
	next := h + r.watermark
	if t-h >= r.watermark {
		if k > 0 {
			mark = true
			next = t + r.watermark
		} else {
			next = t + 1 // nothing stored, nothing reported: recheck on the next push
		}
	}
	r.limit = min(h+size, next-1)
	return int(k), mark
}

// Drain moves up to max items (all if max <= 0) into dst, oldest first, zeroes
// the slots it emptied, and returns the extended dst. Consumer only.
func (r *SPSC[T]) Drain(dst []T, max int) []T {
	h := r.head.Load()
	t := r.tail.Load() // acquire: the slots below t are written
	r.tailCache = t
	n := t - h
	if n == 0 {
		return dst
	}
	if max > 0 && uint64(max) < n {
		n = uint64(max)
	}
	// Copy in at most two runs (the ring may wrap), then zero them.
	i := h & r.mask
	first := min(n, uint64(len(r.buf))-i)
	dst = append(dst, r.buf[i:i+first]...)
	if r.pointers {
		clear(r.buf[i : i+first])
	}
	if rest := n - first; rest > 0 {
		dst = append(dst, r.buf[:rest]...)
		if r.pointers {
			clear(r.buf[:rest])
		}
	}
	r.head.Store(h + n)
	return dst
}

// Len returns the number of items in the ring. Exact for the consumer; a
// snapshot for anyone else.
func (r *SPSC[T]) Len() int {
	h := r.head.Load()
	t := r.tail.Load()
	if t < h { // loaded head after a newer tail: only possible for third parties
		return 0
	}
	return int(t - h)
}

// Pushed returns how many items were ever pushed (the tail index).
func (r *SPSC[T]) Pushed() uint64 { return r.tail.Load() }

// Seal makes every later push fail with Sealed.
func (r *SPSC[T]) Seal() { r.sealed.Store(1) }

// IsSealed reports whether Seal was called.
func (r *SPSC[T]) IsSealed() bool { return r.sealed.Load() != 0 }

// PointerFree reports whether values of T hold no pointers the garbage
// collector follows: only then may code that the compiler does not see
// (assembly, which has no write barrier) store a T into a ring.
func PointerFree[T any]() bool { return !hasPointers(reflect.TypeFor[T]()) }

// hasPointers reports whether values of t contain pointers the garbage
// collector follows.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	}
	return true // pointers, slices, strings, maps, chans, funcs, interfaces
}

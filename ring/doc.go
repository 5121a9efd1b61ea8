// Package ring provides SPSC, a bounded single-producer single-consumer ring
// of T: the per-P buffer behind vinequeue's Enqueue fast path.
//
// # What it owns
//
// A power-of-two array of slots and two monotonically increasing uint64
// indices: tail (the next slot the producer fills) and head (the next slot the
// consumer reads). Slots in [head, tail) hold items owned by the consumer; all
// others are owned by the producer. Indices never wrap in practice (2^64 pushes).
//
// # Layout
//
// The producer's fields (tail, its cached copy of head, its push limit) and the
// consumer's fields (head, its cached copy of tail) sit on separate cache lines,
// each padded to 128 bytes: the size of the false-sharing unit on arm64
// (Neoverse, Apple) and of the adjacent-line prefetch pair on amd64. In the
// common case a push touches only the producer's line and its slot; it reads the
// consumer's line only when its cached head says the ring may be full.
//
// # Memory ordering
//
// The producer writes a slot and then publishes tail; the consumer loads tail
// and then reads the slots below it. The publish is a release store: on arm64
// and with -race it is sync/atomic's Store (STLR, or instrumented); on amd64 it
// is a plain MOV, because x86-TSO already orders a store after earlier stores
// and LOCK XCHG (what atomic.Store compiles to) costs ~2 ns, more than the rest
// of a push. The Go compiler threads every store through one memory chain and
// never reorders two stores, which is what the plain publish relies on;
// TestSPSCConcurrentModel would see a reordered publish as a bad value.
// The consumer publishes head with atomic.Store (once per bulk drain).
//
// # Cache lines between cores
//
// The consumer copies the items out on its own core, so the slots it read are
// then shared with that core's cache; the producer's next store to each of
// those lines must first take it back, and waits for the transfer (one per
// 64/sizeof(T) pushes, from about 50 ns between near cores to over 200 ns
// between far ones on a VM). Prefetch lets a producer that has just been
// given a ring ask for a batch's lines at once (PREFETCHW on amd64, PRFM
// PSTL1KEEP on arm64; internal/prefetch), so the transfers overlap.
// PrefetchDrained does the same for a producer that comes back to a ring its
// consumer drained meanwhile: it re-reads head first, since the producer's
// cached copy still says the ring is full.
//
// # Assembly producers
//
// OffsetTail, OffsetLimit, OffsetSealed, OffsetMask and OffsetBuf let
// assembly do TryPush's common case for pointer-free items (vinequeue's
// pinned push stub), with the same rule: at tail == limit, or sealed, store
// nothing and leave the rest to Push.
//
// # Retention
//
// Drain zeroes every slot it copies out, as sync/poolqueue.go does, so a ring
// never keeps alive memory the caller no longer accounts for.
//
// # Concurrency contract
//
// Push and its friends: one producer at a time (vinequeue guarantees it by
// pinning the goroutine to its P for the whole push). Drain, Len: one consumer
// at a time. Seal may be called by anyone; after it returns, pushes that start
// later fail with Sealed. A push that had already passed the check completes;
// the caller must wait for such pushes (vinequeue does, with a stop-the-world
// barrier) before its final Drain.
package ring

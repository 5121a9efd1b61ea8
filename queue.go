package vinequeue

import (
	"context"
	"unsafe"

	"github.com/vineroute/vinequeue/internal/engine"
)

// cacheLine is the padding unit (arm64's false-sharing size; amd64's
// adjacent-line prefetch pair).
const cacheLine = 128

// Queue hands items off from many goroutines and delivers them in batches to
// Config.Send. Create it with New; all methods are safe for concurrent use.
//
// Queue is the API over the engine (internal/engine): Enqueue's fast path
// runs here, beside the assembly it calls, and everything else forwards.
type Queue[T any] struct {
	_ [cacheLine]byte
	// fast is the engine's slot table for Enqueue's fast path
	// (engine.Queue.Fast), copied here so that the hot path reads one
	// cache line of this struct and no engine field. Set once in New.
	fast []engine.ProcSlot[T]
	// rawPush: Enqueue's fast path is one assembly call (pinPush8); see
	// rawPushable. Set once in New.
	rawPush bool
	// itemLimit is engine.Queue.ItemLimit: when set, Enqueue refuses an
	// item too large for the WAL before it pushes. Set once in New.
	itemLimit int
	e         *engine.Queue[T]
	_         [cacheLine - 24 - 8 - 8 - 8]byte
}

// New validates cfg, fills in defaults and starts the queue's goroutines:
// one collector per central shard (Config.Collectors) and cfg.Workers
// senders (and, with a WAL, a replayer).
func New[T any](cfg Config[T]) (*Queue[T], error) {
	ec, err := cfg.engine()
	if err != nil {
		return nil, err
	}
	e, err := engine.New(ec)
	if err != nil {
		return nil, err
	}
	q := &Queue[T]{fast: e.Fast(), itemLimit: e.ItemLimit(), e: e}
	q.rawPush = rawPushable[T]() && len(q.fast) > 0
	return q, nil
}

// Enqueue accepts v for delivery. nil means accepted: v will be delivered (or,
// if delivery fails for good, handed to OnDrop and counted). ErrClosed once
// Stop has begun (always once Health().Closed is true: see Stop); at the hard memory level, ErrFull under Policy Reject, and
// under Spill an error matching ErrWALFull while the WAL cannot take more.
//
// The common case touches only the calling P's ring: no lock, no shared
// write, no allocation, no clock. For 8-byte pointer-free items it is one
// assembly call (pinPush8), small enough for Enqueue to inline into its
// caller; anything else, and every push that meets the ring's limit, takes
// enqueuePinned.
func (q *Queue[T]) Enqueue(v T) error {
	if q.itemLimit != 0 {
		if err := q.e.CheckItem(v); err != nil {
			return err
		}
	}
	if pinAssembly && !raceBuild && unsafe.Sizeof(v) == 8 && q.rawPush &&
		pinPush8(unsafe.Pointer(unsafe.SliceData(q.fast)), len(q.fast), *(*uint64)(unsafe.Pointer(&v))) {
		return nil
	}
	return q.enqueuePinned(v)
}

// EnqueueBatch accepts vs in order and returns how many it accepted: all of
// them unless the error is non-nil (ErrClosed, ErrFull, ErrWALFull), in which
// case vs[n:] were not accepted. It is cheaper per item than Enqueue. It
// passes admission once per ring's worth of items.
func (q *Queue[T]) EnqueueBatch(vs []T) (int, error) { return q.e.EnqueueBatch(vs) }

// EnqueueKey accepts v like Enqueue, and delivers the items of one key in the
// order they were accepted: FIFO per key, with any number of Workers, across
// retries, spills and crashes. Use KeyOf for a string key. Outside Sync mode
// a call takes no lock: it appends to a ring of its key's shard (one of 64).
// A shard holds at most a few rings' worth of items (a little over a batch)
// that the collector has not yet cut into batches; a call that finds it that
// far behind parks briefly while the collector catches up, as Enqueue's calls
// do for a spare ring. It waits for the collector only, never for Send: the
// backlog then grows in batches, bounded by Memory.
//
// v is charged to the memory governor when admitted (keyed items wait in
// their shard, outside any ring), and the Policy applies at the hard level
// as for Enqueue. Outside Sync mode admission is taken in chunks: each of
// the 64 shards takes credit from the governor for many items at once (at
// most Hard/2048, and 16 KiB) and its calls spend it, so the governor may
// count up to 64 such chunks that no item uses yet: the Policy can act that
// much early, and a call spending credit is not delayed at the soft level.
// The credit is given back at the hard level, by a shard idle for half a
// FlushInterval, and at Stop; Stats.BytesHeld leaves it out. With a small
// Limit a chunk is below one item and every call is admitted on its own.
// Under Spill keyed items are not spilled (their key's order would have to
// survive the round trip through the WAL): they wait for memory to fall, as
// under Block, unless spilling fails (an error matching ErrWALFull).
func (q *Queue[T]) EnqueueKey(key uint64, v T) error { return q.e.EnqueueKey(key, v) }

// Flush returns once every item accepted before the call has been delivered
// or given up on (OnDrop; or kept in the WAL when its dead letter could not
// be written; or parked behind its key's dead letter, Config.ParkKeys), or
// ctx is done. That includes items the governor spilled to the WAL: they are
// read back once memory is below the soft level, so at the hard level Flush
// waits for memory to fall (or ctx). It includes the backlog New found in the
// WAL (items an earlier process accepted): Flush waits for its replay to end,
// so a Flush right after New can take as long as delivering that backlog
// (bounded by ctx). It returns ctx's error if ctx ends first, ErrClosed once
// Stop has returned.
func (q *Queue[T]) Flush(ctx context.Context) error { return q.e.Flush(ctx) }

// Stop stops accepting items and delivers everything accepted. Its first
// step seals intake: from then on, which Health().Closed reports, Enqueue
// and every other intake call return ErrClosed; a call that overlaps that
// step may still be accepted, and is then delivered like any other. When
// ctx ends first, Stop gives up what is undelivered and returns an error
// matching ctx's (errors.Is): what is in the WAL stays there for the next New
// (Stats.LeftOnDisk; Periodic and Sync modes), and what is only in memory
// (no WAL, or Overflow mode's unspilled items) goes to OnDrop, counted in
// Stats.Dropped. Either way every item is counted before Stop returns
// (Stats.Buffered 0). In Periodic mode, where an item is on disk only once
// a checkpoint found it undelivered, a Stop whose ctx can end first writes,
// as it begins, every accepted item not delivered or on disk yet, as a
// checkpoint would: the batches in Send or waiting for a sender, and the
// keyed items waiting behind their key's batch in Send; later batches are
// written before their Send. So at its deadline nothing is left to write,
// and it never writes past it. Close, which cannot run out of time, writes
// only what a checkpoint does. Stop waits for the queue's goroutines to exit, except
// a sender whose Send ignores its cancelled ctx (its batch is given up all
// the same and its late result ignored), and for OnDrop calls only while
// each returns within 50 ms (see Config.OnDrop). Calling it again returns
// the first call's result; a call made while the first is still under way
// (a Close included) waits for it only until its own ctx ends, and then
// has it run out of time, so that it too returns by its deadline (a Close
// so cut short writes what it leaves in the WAL then, past the deadline,
// as it had not begun with a deadline to keep).
func (q *Queue[T]) Stop(ctx context.Context) error { return q.e.Stop(ctx) }

// Close is Stop(context.Background()).
func (q *Queue[T]) Close() error { return q.e.Close() }

package vinequeue

import (
	"context"
	"fmt"

	"github.com/vineroute/vinequeue/internal/engine"
)

// AckLevel is how far EnqueueAck waits for its item to go.
type AckLevel int

const (
	// AckDurable returns once the item is on disk and fsynced. With a WAL,
	// in every mode, the item is written with the log's group commit
	// (concurrent calls share a record and an fdatasync) before the call
	// returns, as a Sync-mode Enqueue is, and delivered as usual after;
	// a SIGKILL from then on does not lose it. Without a WAL there is no
	// disk: the call waits as AckDelivered does, since the sink is the only
	// durability a memory queue has (code written for a queue with a WAL
	// keeps its promise, at the cost of the wait, rather than being refused).
	AckDurable AckLevel = 1 + iota
	// AckDelivered returns once Send has returned nil for the batch holding
	// the item (a gateway can then answer 200: the sink has the event).
	AckDelivered
)

func (l AckLevel) String() string {
	switch l {
	case AckDurable:
		return "durable"
	case AckDelivered:
		return "delivered"
	}
	return fmt.Sprintf("AckLevel(%d)", int(l))
}

// MarshalText returns the level's name.
func (l AckLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses a name MarshalText returns.
func (l *AckLevel) UnmarshalText(b []byte) (err error) {
	*l, err = parseEnum(b, AckDurable, AckDelivered)
	return err
}

// ErrDropped is matched (errors.Is) by EnqueueAck's error when its item was
// accepted and then given up on: Send failed for good (Config.Retry's
// attempts, or a Permanent error) for the batch that held it, or Stop ran
// out of time with it not in the WAL (no WAL, or Overflow mode). The item
// went to OnDrop (and, for a failed Send with a WAL, to the dead-letter
// log); the error also wraps the cause (Send's error, or ErrClosed for
// Stop). Callers whose items went out together are woken together, but
// each is told how its own item's batch ended.
var ErrDropped = engine.ErrDropped

// EnqueueAck accepts v like Enqueue, then waits until v has reached level:
// on disk and fsynced (AckDurable), or in a batch for which Send returned
// nil (AckDelivered). It is for callers that must answer someone only once
// the item is safe, such as a gateway answering 200 once Kafka has the
// event; it costs a wait of up to FlushInterval, since v is delivered in
// an ordinary batch: batches fill (BatchSize items, or FlushInterval's
// worth) whatever the number of callers waiting on them, and all the
// callers whose items go out together are woken together.
//
// What it returns:
//
//   - nil: v reached level.
//   - ErrClosed, ErrFull, ErrWALFull, ErrTooLarge (or a codec error), at once:
//     v was refused, as Enqueue refuses, and is never delivered. An unknown
//     level is refused with ErrInvalidConfig.
//   - an error matching ErrDropped (AckDelivered): v was accepted and given
//     up on (see ErrDropped).
//   - an error matching ErrClosed that says "not delivered before Stop; kept
//     in the WAL" (AckDelivered): Stop ran out of time before v was
//     delivered, and the next New on the WAL directory replays it. Any
//     other error after acceptance likewise means v is kept in the WAL (its
//     dead letter could not be written).
//   - ctx's error, wrapped, when ctx ended first: ctx bounds the wait only.
//     v stays accepted and is delivered (or given up on) as usual. (AckDurable
//     with a WAL waits for the group commit's fsync alone, and does not
//     look at ctx.)
//
// Check ErrDropped before ErrClosed and ctx's errors: a drop at Stop's
// deadline wraps Stop's ctx error too.
//
// Admission is Enqueue's: at the hard memory level the Policy applies, and
// its wait under Block is not bounded by ctx. Under Policy Spill,
// AckDelivered items are not spilled (their callers wait on the batch
// holding them): at the hard level AckDelivered waits for memory to fall,
// as EnqueueKey does. AckDurable with a WAL is spillable like a Sync-mode
// Enqueue.
//
// v counts in Stats.Enqueued like any accepted item. No order is kept
// between calls, as for Enqueue. AckDelivered allocates nothing per call
// beyond its share of one wake per group of callers (one channel for all
// of them); AckDurable costs what a Sync-mode Enqueue does (the group
// commit's allocations, shared by the calls of one commit).
func (q *Queue[T]) EnqueueAck(ctx context.Context, v T, level AckLevel) error {
	return q.e.EnqueueAck(ctx, v, engine.AckLevel(level))
}

package vinequeue

import (
	"slices"
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/wal"
)

// Dead letters. With a WAL, a batch that fails for good (Config.Retry's
// attempts exhausted, or a Permanent error) is written to the dead-letter
// log in the WAL directory (same record format and checksums, fsynced), and
// only then acknowledged in the main log, handed to OnDrop and counted in
// Stats.DeadLettered. Its items are kept, not lost: DeadLetters lists them,
// RequeueDeadLetters delivers them again, PurgeDeadLetters deletes them;
// `vinewal dlq` does the same on a directory not in use. Without a WAL a
// failed batch goes to OnDrop and Stats.Dropped only.
//
// Requeued items are written back to the main log and synced before their
// dead letters are purged, so a crash in between duplicates them, never
// loses them. They are delivered as new, unkeyed items: a key's order is
// not restored for them, unless Config.ParkKeys is set. Then a dead letter
// of EnqueueKey items keeps each item's key, and the later items of those
// keys are parked behind it (see ParkKeys); requeuing or purging it
// releases them. A keyed dead letter requeued is delivered straight from
// the dead-letter log, in its keys' order, and deleted once its Send
// returned nil (a crash before that leaves it where it was).

// ErrNoDeadLetter is returned for a dead-letter id that does not exist (or
// no longer does).
var ErrNoDeadLetter = engine.ErrNoDeadLetter

// DeadLetter describes one dead letter: a batch given up on.
type DeadLetter struct {
	ID     uint64
	Time   time.Time // when it was given up on
	Reason string    // the last error
	Items  int       // items it holds
	Bytes  int       // their encoded size
	// Damaged is set for a dead letter whose file is damaged: its items
	// cannot be read (RequeueDeadLetters skips it; purge it).
	Damaged bool
	// Keys is how many distinct keys its items have (EnqueueKey items
	// with Config.ParkKeys; 0 otherwise), and Parked is set for items
	// parked behind an earlier dead letter of their key rather than
	// failed themselves.
	Keys   int
	Parked bool
}

// DeadLetters lists the dead letters in the WAL directory, oldest first.
// Without a WAL there are none.
func (q *Queue[T]) DeadLetters() ([]DeadLetter, error) {
	ds, err := q.e.DeadLetters()
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	if ds != nil {
		out = make([]DeadLetter, len(ds))
	}
	for i, d := range ds {
		out[i] = deadLetterOf(d)
	}
	return out, nil
}

func deadLetterOf(d wal.DeadLetter) DeadLetter {
	return DeadLetter{ID: d.ID, Time: d.Time, Reason: d.Reason, Items: d.Items, Bytes: d.Bytes, Damaged: d.Damage != nil,
		Keys: len(slices.Compact(slices.Sorted(slices.Values(d.Keys)))), Parked: d.Parked}
}

// RequeueDeadLetters delivers the dead letters ids again (all of them when
// none are named) and deletes them once their items are back in the WAL;
// it returns how many it requeued. Their items go through the queue as new
// unkeyed items (the memory governor and Policy apply as to EnqueueBatch;
// a refusal stops the requeue with that error, and the dead letters not
// requeued stay). ErrNoDeadLetter names ids that do not exist; the others
// are requeued. Without a WAL it returns 0, nil.
//
// With Config.ParkKeys, a keyed dead letter is instead released: it is
// delivered from the dead-letter log, then the items parked behind it, in
// their keys' order, one batch at a time; each is deleted once delivered
// (Flush waits for them). One that fails again stays, and holds its keys.
func (q *Queue[T]) RequeueDeadLetters(ids ...uint64) (int, error) {
	return q.e.RequeueDeadLetters(ids...)
}

// PurgeDeadLetters deletes the dead letters ids (all of them when none are
// named) and returns how many it deleted. Their items are gone for good.
// With Config.ParkKeys it releases their keys: the items parked behind
// them are delivered (Flush waits for them).
func (q *Queue[T]) PurgeDeadLetters(ids ...uint64) (int, error) {
	return q.e.PurgeDeadLetters(ids...)
}

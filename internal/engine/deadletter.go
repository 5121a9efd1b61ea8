package engine

import (
	"errors"
	"fmt"
	"time"

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
// not restored for them. With parking (park.go) a keyed dead letter is
// released instead: delivered from the dead-letter log in its keys' order.

// deadLetter writes b's items to the dead-letter log (records of at most
// MaxRecord bytes, written as one group: all or none); kept is true when
// they are there, and then err is nil. With parking, a
// keyed batch's dead letters name each item's key, and those keys park from
// the moment each is written (park.go); without parking they name no keys
// (a dead letter that names keys parks them in a queue that parks). Sender
// goroutine.
func (w *walTier[T]) deadLetter(b *pending[T], reason error) (kept bool, err error) {
	meta := wal.DeadMeta{Time: time.Now(), Reason: reason.Error(), Records: recordIDs(b.spans)}
	var onLetter func(id uint64, keys []uint64, n int)
	var keys []uint64 // named only where keys park: a dead letter that names keys parks them
	if p := w.q.park; p != nil && len(b.keys) > 0 {
		onLetter, keys = p.addLetter, b.keys
	}
	if _, err := w.writeDeadLetter(b.items, keys, meta, onLetter); err != nil {
		return false, err
	}
	return true, nil
}

// recordIDs lists the main-log records spans name, each once.
func recordIDs(spans []span) []uint64 {
	var ids []uint64
	for _, s := range spans {
		if s.id != 0 && (len(ids) == 0 || ids[len(ids)-1] != s.id) {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// maxLetterKeys is the most keys (one per item) a dead letter holds.
const maxLetterKeys = 1 << 16

// writeDeadLetter writes items as dead letters with meta, each of at most
// MaxRecord bytes (and, with keys, one per item, at most maxLetterKeys
// items); onLetter, if set, is told each one written, with its items' keys.
// It returns how many items are in dead letters: all of them, or none
// with the error. The dead letters of one call are written as one group
// (wal.Log.DeadLetterGroup), never in part: a full disk part way through
// would otherwise leave some items dead-lettered that the caller, told of
// the failure, keeps for the main log's replay or hands to OnDrop, and
// they would then be delivered (or given up on) twice.
func (w *walTier[T]) writeDeadLetter(items []T, keys []uint64, meta wal.DeadMeta, onLetter func(id uint64, keys []uint64, n int)) (int, error) {
	limit := w.log.MaxRecord()
	var parts []wal.DeadPart
	var counts []int // items in each part
	var payload, item []byte
	written, count := 0, 0 // items in finished parts; items in payload
	cut := func() {
		if count == 0 {
			return
		}
		m := meta
		if len(keys) > 0 {
			m.Keys = keys[written : written+count]
		}
		parts = append(parts, wal.DeadPart{Payload: payload, Meta: m})
		counts = append(counts, count)
		written += count
		payload, count = nil, 0 // the part keeps its payload
	}
	for _, v := range items {
		var err error
		if item, err = w.appendItem(item[:0], v); err != nil {
			return 0, fmt.Errorf("vinequeue: wal codec: %w", err)
		}
		if count > 0 && (len(payload)+wal.FrameSize(len(item)) > limit || count == maxLetterKeys) {
			cut()
		}
		payload = wal.AppendFrame(payload, item)
		count++
	}
	cut()
	if onLetter != nil {
		// Written and recorded as one step for RequeueDeadLetters and
		// PurgeDeadLetters (parking.recording).
		w.q.park.recording.RLock()
		defer w.q.park.recording.RUnlock()
	}
	ids, err := w.log.DeadLetterGroup(parts)
	if err != nil {
		return 0, walErr(err)
	}
	if onLetter != nil {
		for i, id := range ids {
			onLetter(id, parts[i].Meta.Keys, counts[i])
		}
	}
	return written, nil
}

// DeadLetters lists the dead letters in the WAL directory, oldest first.
// Without a WAL there are none.
func (q *Queue[T]) DeadLetters() ([]wal.DeadLetter, error) {
	if q.wal == nil {
		return nil, nil
	}
	ds, err := q.wal.log.DeadLetters()
	return ds, walErr(err)
}

// RequeueDeadLetters delivers the dead letters ids again (all of them when
// none are named) and deletes them once their items are back in the WAL;
// it returns how many it requeued. Their items go through the queue as new
// unkeyed items (the memory governor and Policy apply as to EnqueueBatch;
// a refusal stops the requeue with that error, and the dead letters not
// requeued stay). ErrNoDeadLetter names ids that do not exist; the others
// are requeued. Without a WAL it returns 0, nil. With parking, the keyed
// dead letters among ids are released (park.go) and count as requeued.
func (q *Queue[T]) RequeueDeadLetters(ids ...uint64) (int, error) {
	if q.wal == nil {
		return 0, nil
	}
	q.requeueMu.Lock() // one at a time: each dead letter requeued once
	defer q.requeueMu.Unlock()
	if p := q.park; p != nil {
		// Keyed dead letters are released (park.go); the others are
		// requeued as below.
		if q.closing.Load() {
			return 0, ErrClosed
		}
		n, rest, err := p.requeue(ids)
		if err != nil || len(rest) == 0 {
			return n, err
		}
		m, err := q.requeueUnkeyed(rest)
		if len(ids) == 0 && errors.Is(err, ErrNoDeadLetter) {
			// Every dead letter, as listed: those gone since were
			// purged meanwhile, not named by the caller.
			err = nil
		}
		return n + m, err
	}
	return q.requeueUnkeyed(ids)
}

// requeueUnkeyed is RequeueDeadLetters' requeue through the main log.
// Caller holds requeueMu.
func (q *Queue[T]) requeueUnkeyed(ids []uint64) (int, error) {
	if !q.intake.enter() {
		return 0, ErrClosed
	}
	defer q.intake.leave()
	w := q.wal
	var items []T
	n, err := w.log.RequeueDeadLetters(ids, func(_ wal.DeadLetter, payload []byte) error {
		var err error
		if items, err = w.decode(items[:0], payload); err != nil {
			return fmt.Errorf("vinequeue: dead letter does not decode: %w", err)
		}
		_, err = w.appendDurable(items)
		return err
	})
	if errors.Is(err, wal.ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrNoDeadLetter, err)
	}
	return n, walErr(err)
}

// PurgeDeadLetters deletes the dead letters ids (all of them when none are
// named) and returns how many it deleted. Their items are gone for good.
// With parking, their keys are released (park.go).
func (q *Queue[T]) PurgeDeadLetters(ids ...uint64) (int, error) {
	if q.wal == nil {
		return 0, nil
	}
	p := q.park
	if p != nil {
		// No keyed letter is between its write and its recording
		// meanwhile (parking.recording): each one purged is forgotten.
		p.recording.Lock()
		defer p.recording.Unlock()
	}
	if p != nil && len(ids) == 0 {
		// Name them, so that what is forgotten is what was purged.
		ds, err := q.wal.log.DeadLetters()
		if err != nil {
			return 0, walErr(err)
		}
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		if len(ids) == 0 {
			return 0, nil
		}
	}
	n, err := q.wal.log.PurgeDeadLetters(ids...)
	if p != nil && (err == nil || errors.Is(err, wal.ErrNotFound)) {
		p.purged(ids) // their keys are released
	}
	if errors.Is(err, wal.ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrNoDeadLetter, err)
	}
	return n, walErr(err)
}

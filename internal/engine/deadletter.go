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
// not restored for them.

// deadLetter writes b's items to the dead-letter log (records of at most
// MaxRecord bytes); kept is true when they are all there. Sender goroutine.
func (w *walTier[T]) deadLetter(b *pending[T], reason error) (kept bool, err error) {
	if err := w.writeDeadLetter(b, reason); err != nil {
		return false, err
	}
	return true, nil
}

func (w *walTier[T]) writeDeadLetter(b *pending[T], reason error) error {
	limit := w.log.MaxRecord()
	var ids []uint64
	for _, s := range b.spans {
		if s.id != 0 && (len(ids) == 0 || ids[len(ids)-1] != s.id) {
			ids = append(ids, s.id)
		}
	}
	meta := wal.DeadMeta{Time: time.Now(), Reason: reason.Error(), Records: ids}
	var payload, item []byte
	flush := func() error {
		if len(payload) == 0 {
			return nil
		}
		_, err := w.log.DeadLetter(payload, meta)
		payload = payload[:0]
		return walErr(err)
	}
	for _, v := range b.items {
		var err error
		if item, err = w.appendItem(item[:0], v); err != nil {
			return fmt.Errorf("vinequeue: wal codec: %w", err)
		}
		if len(payload) > 0 && len(payload)+wal.FrameSize(len(item)) > limit {
			if err := flush(); err != nil {
				return err
			}
		}
		payload = wal.AppendFrame(payload, item)
	}
	return flush()
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
// are requeued. Without a WAL it returns 0, nil.
func (q *Queue[T]) RequeueDeadLetters(ids ...uint64) (int, error) {
	if q.wal == nil {
		return 0, nil
	}
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
func (q *Queue[T]) PurgeDeadLetters(ids ...uint64) (int, error) {
	if q.wal == nil {
		return 0, nil
	}
	n, err := q.wal.log.PurgeDeadLetters(ids...)
	if errors.Is(err, wal.ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrNoDeadLetter, err)
	}
	return n, walErr(err)
}

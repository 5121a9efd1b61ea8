package vinequeue

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackFirstWriteOfAnEmptyWALWithMaxBytes: MaxBytes equal to
// SegmentSize is a valid Config (at least SegmentSize, says WALConfig), and
// an empty WAL has room for a 10-byte item. The first Sync-mode Enqueue
// after New must not be refused with ErrWALFull.
//
// On main it is, whenever the log's preparer has reserved the spare segment
// (counted against MaxBytes) and not finished it when the first write
// rolls to a segment: the roll finds no spare and no room for one of its
// own, and fails. A Periodic queue then holds the item in memory only.
func TestAttackFirstWriteOfAnEmptyWALWithMaxBytes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const seg = 4 << 20
	refused := 0
	for range 20 {
		q, err := New(Config[[]byte]{
			Send: func(context.Context, [][]byte) error { return nil },
			WAL:  WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: seg, MaxBytes: seg},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Enqueue([]byte("ten bytes!")); errors.Is(err, ErrWALFull) {
			refused++
			t.Logf("refused: %v", err)
		} else if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = q.Stop(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if refused > 0 {
		t.Fatalf("%d of 20 first writes to an empty WAL refused with ErrWALFull", refused)
	}
}

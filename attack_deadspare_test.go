package vinequeue

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackDeadLetterBesideTheSpareSegment: WAL.MaxBytes of two segments
// is documented as letting "the next one be prepared while the current one
// fills". A batch that fails for good is then to be kept in the dead-letter
// log ("Nothing retries forever unless asked: a batch that fails for good
// goes, with a WAL, to the dead-letter log"). The log holds one small
// record: there is room on disk for its dead letter, but the prepared spare
// segment is counted as used, so the dead letter is refused with
// ErrWALFull; the batch is not lost (it stays unacknowledged, LeftOnDisk,
// for the next New), but DeadLetters does not list it, and the next New
// delivers a poison batch again instead of parking it aside.
func TestAttackDeadLetterBesideTheSpareSegment(t *testing.T) {
	t.Skip("bug (wal/dead.go reserveDeadBytes): the prepared spare segment's reservation refuses a dead letter with ErrFull though the WAL has room; run without this Skip to see it")
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const seg = 64 << 10
	poison := errors.New("poison")
	q, err := New(Config[[]byte]{
		Send:          func(context.Context, [][]byte) error { return Permanent(poison) },
		FlushInterval: 10 * time.Millisecond,
		WAL:           WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: seg, MaxBytes: 2 * seg},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Enqueue([]byte("a poison item")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ds, err := q.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if len(ds) != 1 || st.DeadLettered != 1 {
		t.Fatalf("dead letters %d, Stats.DeadLettered %d, LeftOnDisk %d, WALBytes %d: want the failed batch in the dead-letter log",
			len(ds), st.DeadLettered, st.LeftOnDisk, st.WALBytes)
	}
}

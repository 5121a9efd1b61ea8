package vinequeue

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackDeadLetterBesideTheSpareSegment: WAL.MaxBytes of two segments
// lets the next segment be prepared while the current one fills. A batch
// that fails for good must still reach the dead-letter log: the log holds
// one small record and there is room on disk for its dead letter, but the
// prepared spare segment counted as used, so the dead letter was refused
// with ErrWALFull and the poison batch came back at every New. The spare
// is now given up for the dead letter.
func TestAttackDeadLetterBesideTheSpareSegment(t *testing.T) {
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

package vinequeue

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDeadLetters: with a WAL, a batch that fails for good is kept in the
// dead-letter log (and OnDrop still sees it), is not replayed by the next
// New, and can be requeued. It used to be retried until Stop, holding a
// sender and, for EnqueueKey, its key's shard.
func TestDeadLetters(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			var onDrop atomic.Int64
			var poisoned sync.Map
			var delivered atomic.Int64
			cfg := Config[[]byte]{
				Send: func(_ context.Context, b [][]byte) error {
					for _, v := range b {
						if _, bad := poisoned.Load(string(v)); bad {
							return Permanent(errors.New("poison"))
						}
					}
					delivered.Add(int64(len(b)))
					return nil
				},
				BatchSize: 1, Workers: 2, FlushInterval: 5 * time.Millisecond,
				Retry:  RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
				OnDrop: func(b [][]byte, _ error) { onDrop.Add(int64(len(b))) },
				WAL:    WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			poisoned.Store("bad", true)
			if err := q.EnqueueKey(7, []byte("bad")); err != nil {
				t.Fatal(err)
			}
			// Later items of the same key are not held behind the
			// poison forever.
			for i := range 20 {
				if err := q.EnqueueKey(7, []byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if delivered.Load() != 20 || onDrop.Load() != 1 {
				t.Fatalf("delivered %d, OnDrop %d; want 20 and 1", delivered.Load(), onDrop.Load())
			}
			st := q.Stats()
			if st.DeadLettered != 1 || st.Dropped != 1 {
				t.Fatalf("DeadLettered %d, Dropped %d; want 1 and 1", st.DeadLettered, st.Dropped)
			}
			ds, err := q.DeadLetters()
			if err != nil || len(ds) != 1 || ds[0].Items != 1 || ds[0].Reason == "" {
				t.Fatalf("DeadLetters = %+v, %v", ds, err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}

			// The next New replays nothing (the batch was acknowledged
			// when it was dead-lettered) and still lists it.
			poisoned.Delete("bad")
			delivered.Store(0)
			q2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := q2.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st := q2.Stats(); st.Replayed != 0 || delivered.Load() != 0 {
				t.Fatalf("after restart: replayed %d, delivered %d", st.Replayed, delivered.Load())
			}
			if _, err := q2.RequeueDeadLetters(ds[0].ID + 100); !errors.Is(err, ErrNoDeadLetter) {
				t.Fatalf("requeue of an unknown id: %v", err)
			}
			n, err := q2.RequeueDeadLetters()
			if err != nil || n != 1 {
				t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
			}
			if err := q2.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if delivered.Load() != 1 {
				t.Fatalf("the requeued item was delivered %d times", delivered.Load())
			}
			if ds, err := q2.DeadLetters(); err != nil || len(ds) != 0 {
				t.Fatalf("after requeue: %+v, %v", ds, err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

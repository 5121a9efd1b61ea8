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

// flakyCodec decodes only while good is set, and panics on Append of
// "boom".
type flakyCodec struct{ good *atomic.Bool }

func (c flakyCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if string(v) == "boom" {
		panic("codec bug")
	}
	return append(dst, v...), nil
}

func (c flakyCodec) Decode(src []byte) ([]byte, error) {
	if !c.good.Load() {
		return nil, errors.New("unknown encoding version")
	}
	return append([]byte(nil), src...), nil
}

// TestReplayDecodeFailureKeepsRecords: a record that is intact on disk but
// does not decode at replay (a Codec changed between runs) goes to the
// dead-letter log, not away: it was acknowledged and lost for good. A
// panicking Codec is an error, not a crash.
func TestReplayDecodeFailureKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	var good atomic.Bool
	good.Store(true)
	cfg := sinkDownConfig(dir, Sync)
	cfg.Codec = flakyCodec{&good}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue([]byte("boom")); err == nil {
		t.Fatal("an item whose encoding panics was accepted")
	}
	for i := range 100 {
		if err := q.Enqueue([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v", err)
	}

	good.Store(false) // the next run cannot read them
	var delivered atomic.Int64
	cfg.Send = func(_ context.Context, b [][]byte) error { delivered.Add(int64(len(b))); return nil }
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	st := q2.Stats()
	if st.DeadLettered != 100 || delivered.Load() != 0 {
		t.Fatalf("DeadLettered %d, delivered %d; want 100 and 0", st.DeadLettered, delivered.Load())
	}
	checkIdentity(t, st)

	good.Store(true) // fixed: requeue them
	q3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := q3.RequeueDeadLetters()
	if err != nil || n == 0 {
		t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
	}
	if err := q3.Close(); err != nil {
		t.Fatal(err)
	}
	if delivered.Load() != 100 {
		t.Fatalf("delivered %d after the requeue, want 100", delivered.Load())
	}
}

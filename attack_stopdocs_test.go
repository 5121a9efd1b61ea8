package vinequeue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackStopOutOfTimeByMode pins what Stop's, OnDrop's and Stats' docs
// say of a Stop that runs out of time, mode by mode (the docs once said
// OnDrop has what Stop leaves "without a WAL" only, and Stop that the
// undelivered items all go to OnDrop): items only in memory (no WAL, or
// Overflow, which writes only what it spills) go to OnDrop and count as
// Dropped; items in the WAL (Periodic, Sync) stay there, LeftOnDisk, and
// OnDrop does not see them. Either way Stop returns an error matching its
// ctx's, and the counters add up.
func TestAttackStopOutOfTimeByMode(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 100
	for _, mode := range []WALMode{WALModeDefault, Overflow, Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			var onDrop atomic.Int64
			cfg := Config[[]byte]{
				Send:          func(ctx context.Context, _ [][]byte) error { <-ctx.Done(); return ctx.Err() },
				Retry:         RetryPolicy{MaxAttempts: RetryForever},
				OnDrop:        func(b [][]byte, _ error) { onDrop.Add(int64(len(b))) },
				BatchSize:     10,
				FlushInterval: 2 * time.Millisecond,
			}
			memoryOnly := mode == WALModeDefault || mode == Overflow
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: mode}
			} else {
				cfg.WAL = WALConfig{}
			}
			if mode == Periodic {
				cfg.WAL.SyncInterval = 10 * time.Millisecond // the batches reach the WAL before Stop
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for range n {
				if err := q.Enqueue([]byte("item")); err != nil {
					t.Fatal(err)
				}
			}
			if mode == Periodic {
				start := time.Now()
				for q.Stats().DurableThrough.Before(start) {
					time.Sleep(time.Millisecond) // polling a condition, with the deadline below
					if time.Since(start) > 10*time.Second {
						t.Fatal("no checkpoint")
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v; want an error matching its ctx's", err)
			}
			st := q.Stats()
			if st.Enqueued != n || st.Buffered != 0 || st.Delivered+st.Dropped+st.LeftOnDisk != n {
				t.Fatalf("Enqueued %d, Delivered %d, Dropped %d, LeftOnDisk %d, Buffered %d", st.Enqueued, st.Delivered, st.Dropped, st.LeftOnDisk, st.Buffered)
			}
			if memoryOnly && (st.Dropped != n || onDrop.Load() != n) {
				t.Errorf("memory only: Dropped %d, OnDrop had %d; want %d each", st.Dropped, onDrop.Load(), n)
			}
			if !memoryOnly && (st.LeftOnDisk != n || onDrop.Load() != 0) {
				t.Errorf("in the WAL: LeftOnDisk %d, OnDrop had %d; want %d and 0", st.LeftOnDisk, onDrop.Load(), n)
			}
		})
	}
}

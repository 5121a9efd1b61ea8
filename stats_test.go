package vinequeue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// checkIdentity asserts the Stats identity at quiescence.
func checkIdentity(t *testing.T, st Stats) {
	t.Helper()
	if st.Enqueued+st.Replayed != st.Delivered+st.Dropped+st.LeftOnDisk+st.Parked+st.Buffered {
		t.Fatalf("Enqueued %d + Replayed %d != Delivered %d + Dropped %d + LeftOnDisk %d + Parked %d + Buffered %d",
			st.Enqueued, st.Replayed, st.Delivered, st.Dropped, st.LeftOnDisk, st.Parked, st.Buffered)
	}
}

// TestStatsIdentityAcrossRestart: a Stop out of time leaves items on disk;
// the next New replays them. The identity holds in both processes (it
// failed after a restart: replayed items were counted on one side only).
func TestStatsIdentityAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	q, err := New(sinkDownConfig(dir, Sync))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := q.Enqueue([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v", err)
	}
	st := q.Stats()
	checkIdentity(t, st)
	if st.LeftOnDisk != 100 || st.Buffered != 0 {
		t.Fatalf("LeftOnDisk %d, Buffered %d; want 100 and 0", st.LeftOnDisk, st.Buffered)
	}

	release := make(chan struct{})
	cfg := sinkDownConfig(dir, Sync)
	cfg.Send = func(ctx context.Context, b [][]byte) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay to be pending in Stats", func() bool {
		st := q2.Stats()
		return st.Replayed > 0 && st.Backlog.Replaying && st.Backlog.Bytes > 0
	})
	if err := q2.Enqueue([]byte("new")); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	st = q2.Stats()
	checkIdentity(t, st)
	if st.Replayed != 100 || st.Delivered != 101 || st.Buffered != 0 || st.Backlog.Replaying {
		t.Fatalf("after the replay: %+v", st)
	}
}

// TestHealth: the readiness a /readyz handler serves.
func TestHealth(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	q, err := New(Config[int]{
		Send: func(context.Context, []int) error {
			if fail.Load() {
				return errors.New("broker down")
			}
			return nil
		},
		BatchSize: 1, FlushInterval: 5 * time.Millisecond,
		Retry: RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if h := q.Health(); !h.Ready || !h.SinkFailingSince.IsZero() {
		t.Fatalf("fresh queue: %+v", h)
	}
	if err := q.Enqueue(1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failure to show", func() bool { return !q.Health().SinkFailingSince.IsZero() })
	since := q.Health().SinkFailingSince
	waitFor(t, "readiness to drop while the sink keeps failing", func() bool { return !q.Health().Ready })
	fail.Store(false)
	if err := q.Enqueue(2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sink to recover", func() bool { return q.Health().SinkFailingSince.IsZero() })
	if h := q.Health(); !h.Ready || since.IsZero() {
		t.Fatalf("recovered: %+v", h)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if h := q.Health(); h.Ready || !h.Closed {
		t.Fatalf("after Close: %+v", h)
	}
}

// TestDurableThroughByMode: what DurableThrough promises in each mode.
// Without a WAL and in Overflow nothing: zero. In Sync everything accepted
// before the Stats call. In Periodic it follows the checkpoints: an item
// accepted now is covered once a checkpoint that started after it has
// finished (the engine tests pin that it is the checkpoint's start).
func TestDurableThroughByMode(t *testing.T) {
	ok := func(context.Context, [][]byte) error { return nil }
	for _, tc := range []struct {
		name string
		wal  WALConfig
	}{
		{"memory", WALConfig{}},
		{"overflow", WALConfig{Mode: Overflow}},
		{"sync", WALConfig{Mode: Sync}},
		{"periodic", WALConfig{Mode: Periodic, SyncInterval: 5 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config[[]byte]{Send: ok, WAL: tc.wal}
			if tc.wal.Mode != 0 {
				cfg.WAL.Dir, cfg.WAL.SegmentSize = t.TempDir(), 1<<20
			}
			if tc.wal.Mode == Overflow {
				cfg.Memory.Policy = Spill
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := q.Stop(context.Background()); err != nil {
					t.Error(err)
				}
			}()
			if err := q.Enqueue([]byte("x")); err != nil {
				t.Fatal(err)
			}
			accepted := time.Now()
			switch tc.wal.Mode {
			case 0, Overflow:
				if d := q.Stats().DurableThrough; !d.IsZero() {
					t.Fatalf("DurableThrough %v, want zero: nothing is promised", d)
				}
			case Sync:
				if d := q.Stats().DurableThrough; d.Before(accepted) {
					t.Fatalf("DurableThrough %v before the item accepted at %v, though it was fsynced at return", d, accepted)
				}
			case Periodic:
				deadline := time.Now().Add(10 * time.Second)
				for !q.Stats().DurableThrough.After(accepted) {
					if time.Now().After(deadline) {
						t.Fatalf("DurableThrough %v never passed the item accepted at %v", q.Stats().DurableThrough, accepted)
					}
					time.Sleep(time.Millisecond) // polling a condition, with a deadline
				}
			}
		})
	}
}

package engine

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestDefaultCollectors(t *testing.T) {
	for _, c := range []struct{ procs, want int }{{1, 1}, {2, 1}, {4, 1}, {5, 2}, {8, 2}, {20, 5}, {64, 16}} {
		if got := DefaultCollectors(c.procs); got != c.want {
			t.Errorf("DefaultCollectors(%d) = %d, want %d", c.procs, got, c.want)
		}
	}
}

// TestCentralShardOfEveryP: every P id, including those GOMAXPROCS growth
// adds after New, hands off to an existing shard (its id modulo the count).
func TestCentralShardOfEveryP(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, []int) error { return nil })
	cfg.Collectors = 3
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if len(q.centrals) != 3 {
		t.Fatalf("%d central shards, want 3", len(q.centrals))
	}
	q.growProcs(40) // as if GOMAXPROCS had grown to 41
	for pid, s := range q.procs.Load().procs {
		if s.central != q.centrals[pid%3] {
			t.Fatalf("P %d hands off to shard %d, want %d", pid, s.central.index, pid%3)
		}
	}
}

// TestFlushDrainsSecondaryShards: items sitting in the ring of a P whose
// shard is not the primary's are delivered by Flush (nothing else cuts
// here: BatchSize above what is enqueued, no tick within the test).
func TestFlushDrainsSecondaryShards(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	var delivered atomic.Int64
	cfg := testConfig(func(_ context.Context, b []int) error { delivered.Add(int64(len(b))); return nil })
	cfg.Collectors = 3
	cfg.BatchSize, cfg.RingSize, cfg.FlushInterval = 100000, 1<<17, time.Hour
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	accepted := fillSecondary(t, q, 1, "no item landed on a P of a secondary shard (the scheduler kept the producers elsewhere)")
	if got := delivered.Load(); got != 0 {
		t.Fatalf("%d items delivered before Flush: the test cannot tell what Flush does", got)
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := delivered.Load(), accepted; got != want {
		t.Fatalf("Flush returned with %d of %d items delivered", got, want)
	}
}

// TestCheckpointCoversEveryShard: in the periodic tier the checkpoint
// writes what every shard's rings hold, not only the primary's: items left
// in the ring of a P whose shard is a secondary reach the WAL with no batch
// cut by size or tick and no Send returning.
func TestCheckpointCoversEveryShard(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	release := make(chan struct{})
	cfg := testConfig(func(context.Context, [][]byte) error { <-release; return nil })
	cfg.Collectors = 3
	cfg.BatchSize, cfg.MaxBatchSize, cfg.RingSize, cfg.FlushInterval = 100000, 100000, 1<<17, time.Hour
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: 20 * time.Millisecond}
	cfg.Codec = bytesCodec{}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	}()
	accepted := fillSecondary(t, q, []byte("x"), "no item seen on a P of a secondary shard before a checkpoint took it")
	want := uint64(accepted)
	deadline := time.Now().Add(10 * time.Second)
	for q.wal.log.Stats().ItemsPending != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items in the WAL after checkpoints: a shard's rings were not written", q.wal.log.Stats().ItemsPending, want)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

// fillSecondary enqueues v from 8 goroutines, 20 each, until a P of a
// secondary central shard holds an item in its current ring, and returns
// how many were accepted; it skips the test (with why) when the scheduler
// keeps the producers off those Ps for 10 s.
func fillSecondary[T any](t *testing.T, q *Queue[T], v T, why string) int64 {
	t.Helper()
	secondaryHolds := func() bool {
		for _, s := range q.procs.Load().procs {
			if s.central.index != 0 && s.Cur.Load().Len() > 0 {
				return true
			}
		}
		return false
	}
	var accepted atomic.Int64
	deadline := time.Now().Add(10 * time.Second)
	for !secondaryHolds() {
		if time.Now().After(deadline) {
			t.Skip(why)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					if err := q.EnqueueSlow(v); err != nil {
						t.Error(err)
						return
					}
					accepted.Add(1)
					runtime.Gosched()
				}
			}()
		}
		wg.Wait()
	}
	return accepted.Load()
}

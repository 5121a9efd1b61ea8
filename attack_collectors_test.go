package vinequeue

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackCollectorsEdges: Collectors far above GOMAXPROCS (64 shards, 1
// to 8 Ps, moving) with a Periodic WAL, keyed and ack items: everything is
// delivered once, Flush covers every shard, DurableThrough moves, Stop
// leaves no goroutine; a negative Collectors is refused naming the field.
func TestAttackCollectorsEdges(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	if _, err := New(Config[uint64]{Send: func(context.Context, []uint64) error { return nil }, Collectors: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Collectors -1: %v", err)
	}
	var mu sync.Mutex
	seen := map[uint64]int{}
	q, err := New(Config[uint64]{
		Send: func(_ context.Context, b []uint64) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range b {
				seen[v]++
			}
			return nil
		},
		Codec:     uint64Codec{},
		BatchSize: 100, Workers: 2, Collectors: 64, FlushInterval: time.Hour,
		WAL: WALConfig{Dir: t.TempDir(), Mode: Periodic, SyncInterval: 5 * time.Millisecond, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Uint64
	for round, procs := range []int{8, 1, 3, 8, 2} {
		runtime.GOMAXPROCS(procs)
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range 50 {
					id := next.Add(1)
					var err error
					switch (g + i) % 3 {
					case 0:
						err = q.Enqueue(id)
					case 1:
						err = q.EnqueueKey(uint64(g), id)
					default:
						ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
						err = q.EnqueueAck(ctx, id, AckDelivered)
						cancel()
						if errors.Is(err, context.DeadlineExceeded) {
							err = nil
						}
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := q.Flush(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: Flush: %v", round, err)
		}
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n != int(next.Load()) {
			t.Fatalf("round %d (GOMAXPROCS %d): Flush returned with %d of %d items delivered", round, procs, n, next.Load())
		}
	}
	waitFor(t, "DurableThrough", func() bool { return !q.Stats().DurableThrough.IsZero() })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for v, c := range seen {
		if c != 1 {
			t.Fatalf("item %d delivered %d times", v, c)
		}
	}
	checkIdentity(t, q.Stats())
}

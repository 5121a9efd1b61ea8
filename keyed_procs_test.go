package vinequeue

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestKeyedGOMAXPROCSChangesCollectors: EnqueueKey from 12 goroutines (one
// key each, sequence numbers in order) in Periodic mode with three
// collectors, Flush from another goroutine, while GOMAXPROCS moves: every
// key's items arrive once each, in order, and the identity holds.
func TestKeyedGOMAXPROCSChangesCollectors(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const producers = 12
	var mu sync.Mutex
	last := make([]int64, producers) // last sequence delivered per key (-1: none)
	for i := range last {
		last[i] = -1
	}
	var bad atomic.Value
	send := func(_ context.Context, b []uint64) error {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range b {
			k, seq := v>>32, int64(v&0xffffffff)
			if seq != last[k]+1 {
				bad.CompareAndSwap(nil, [3]int64{int64(k), last[k], seq})
			}
			last[k] = seq
		}
		return nil
	}
	q, err := New(Config[uint64]{Send: send, BatchSize: 64, Workers: 4, Collectors: 3, FlushInterval: 2 * time.Millisecond,
		WAL: WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 4 << 20}, Codec: uint64Codec{}})
	if err != nil {
		t.Fatal(err)
	}
	var next [producers]atomic.Int64
	var total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := range producers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				seq := next[k].Load()
				if err := q.EnqueueKey(uint64(k), uint64(k)<<32|uint64(seq)); err != nil {
					t.Error(err)
					return
				}
				next[k].Add(1)
				total.Add(1)
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := q.Flush(t.Context()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for _, p := range []int{2, 4, 8, 3, 16, 1, 5} {
		runtime.GOMAXPROCS(p)
		mark := total.Load()
		waitFor(t, "progress", func() bool { return total.Load() > mark+3000 })
	}
	close(stop)
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if b := bad.Load(); b != nil {
		t.Fatalf("key %d: after seq %d came %d", b.([3]int64)[0], b.([3]int64)[1], b.([3]int64)[2])
	}
	mu.Lock()
	defer mu.Unlock()
	for k := range producers {
		if last[k]+1 != next[k].Load() {
			t.Errorf("key %d: delivered up to %d, enqueued %d", k, last[k], next[k].Load())
		}
	}
	st := q.Stats()
	checkIdentity(t, st)
	if st.Delivered != uint64(total.Load()) {
		t.Errorf("Delivered %d, enqueued %d", st.Delivered, total.Load())
	}
}

package vinequeue

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyedBatchesFill: at steady load EnqueueKey's batches are full, while
// each key keeps its order. One shard per batch made them as small as a
// shard's arrivals per round trip (1 to 10 records with 64 shards).
func TestKeyedBatchesFill(t *testing.T) {
	const batchSize, producers, each, keys = 256, 8, 8000, 1250 // keys per producer
	var batches, items atomic.Int64
	var mu sync.Mutex
	last := map[uint64]int{} // key → last sequence delivered
	var disorder atomic.Int64
	q, err := New(Config[uint64]{
		Send: func(_ context.Context, b []uint64) error {
			batches.Add(1)
			items.Add(int64(len(b)))
			mu.Lock()
			for _, v := range b {
				key, seq := v>>32, int(v&0xffffffff)
				if prev, ok := last[key]; ok && seq <= prev {
					disorder.Add(1)
				}
				last[key] = seq
			}
			mu.Unlock()
			time.Sleep(200 * time.Microsecond) // a sink's round trip, not a wait for an event
			return nil
		},
		BatchSize: batchSize, Workers: 4, FlushInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := uint64(p)<<16 | uint64(i%keys) // each key is one producer's
				seq := i
				if err := q.EnqueueKey(key, key<<32|uint64(seq)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	before := batches.Load()
	beforeItems := items.Load()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if items.Load() != producers*each {
		t.Fatalf("delivered %d of %d", items.Load(), producers*each)
	}
	if disorder.Load() != 0 {
		t.Fatalf("%d items out of their key's order", disorder.Load())
	}
	if mean := float64(beforeItems) / float64(before); mean < 0.8*batchSize {
		t.Fatalf("mean keyed batch %.1f items under load, want at least %.0f (%d batches)", mean, 0.8*batchSize, before)
	}
}

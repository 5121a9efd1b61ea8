package vinequeue

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// item100 is a 100-byte pointer-free item.
type item100 struct {
	id uint64
	//lint:ignore U1000 the item's size is the point: 100 bytes to copy
	pad [92]byte
}

// BenchmarkCollectorCeiling measures what the central stage delivers when
// the producers are never the limit, with 1, 2 and 4 central shards
// (Config.Collectors): 2×GOMAXPROCS goroutines call EnqueueBatch (the
// cheapest intake per item) in a loop, Send does nothing but count, and the
// benchmark times b.N items arriving at Send. ns/op is per delivered item;
// items/s is the ceiling. Whether the collectors, not the producers, bound
// it is for a CPU profile to show (collect's share of the cores); on a
// machine with few cores the producers and senders share the cores with
// them, and a shard whose Ps do not exist (Collectors above GOMAXPROCS)
// gets no rings.
func BenchmarkCollectorCeiling(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("8B/collectors=%d", n), func(b *testing.B) { benchCeiling(b, n, func(i uint64) uint64 { return i }) })
		b.Run(fmt.Sprintf("100B/collectors=%d", n), func(b *testing.B) { benchCeiling(b, n, func(i uint64) item100 { return item100{id: i} }) })
	}
}

func benchCeiling[T any](b *testing.B, collectors int, mk func(uint64) T) {
	var delivered atomic.Int64
	target := int64(b.N)
	reached := make(chan struct{})
	var once sync.Once
	q, err := New(Config[T]{
		BatchSize:  1000,
		RingSize:   8192,
		Workers:    2,
		Collectors: collectors,
		Memory:     MemoryConfig{Limit: 1 << 30},
		Send: func(_ context.Context, items []T) error {
			if delivered.Add(int64(len(items))) >= target {
				once.Do(func() { close(reached) })
			}
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	batch := make([]T, 1000)
	for i := range batch {
		batch[i] = mk(uint64(i))
	}
	b.ResetTimer()
	start := time.Now()
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := q.EnqueueBatch(batch); err != nil {
					return
				}
			}
		}()
	}
	<-reached
	elapsed := time.Since(start)
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(delivered.Load())/elapsed.Seconds(), "items/s")
}

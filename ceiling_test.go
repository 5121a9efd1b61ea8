package vinequeue

import (
	"context"
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

// BenchmarkCollectorCeiling measures what one collector delivers when the
// producers are never the limit: 2×GOMAXPROCS goroutines call EnqueueBatch
// (the cheapest intake per item) in a loop, Send does nothing but count, and
// the benchmark times b.N items arriving at Send. ns/op is per delivered item;
// items/s is the ceiling. Whether the collector, not the producers, bounds it
// is for a CPU profile to show (collect's share of one core); on a machine
// with few cores the producers and senders share the cores with it.
func BenchmarkCollectorCeiling(b *testing.B) {
	b.Run("8B", func(b *testing.B) { benchCeiling(b, func(i uint64) uint64 { return i }) })
	b.Run("100B", func(b *testing.B) { benchCeiling(b, func(i uint64) item100 { return item100{id: i} }) })
}

func benchCeiling[T any](b *testing.B, mk func(uint64) T) {
	var delivered atomic.Int64
	target := int64(b.N)
	reached := make(chan struct{})
	var once sync.Once
	q, err := New(Config[T]{
		BatchSize: 1000,
		RingSize:  8192,
		Workers:   2,
		Memory:    MemoryConfig{Limit: 1 << 30},
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

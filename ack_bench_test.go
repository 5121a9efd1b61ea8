package vinequeue

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// BenchmarkEnqueueAck: what waiting for delivery costs per item, beside
// Enqueue, with 256 goroutines (RunParallel, parallelism 256/GOMAXPROCS),
// memory mode and a Send that returns at once. ns/op is per item (wall
// time over all goroutines). The calls:
//
//	enqueue    Enqueue (returns once the item is in its P's ring)
//	delivered  EnqueueAck(AckDelivered): returns once Send returned nil
//	           for the batch holding the item
//
// BatchSize is 64, below the number of callers: each EnqueueAck caller
// has one item in flight, so a batch fills only from 64 callers; with
// fewer, batches wait for the tick. FlushInterval is short (20 ms) so
// that the last partial batch of a run costs little, and each goroutine
// flushes once it is done. items/batch is what Send received on average.
func BenchmarkEnqueueAck(b *testing.B) {
	for _, call := range []string{"enqueue", "delivered"} {
		b.Run("call="+call, func(b *testing.B) {
			var items, batches int64
			q, err := New(Config[uint64]{
				Send: func(_ context.Context, batch []uint64) error {
					items += int64(len(batch)) // Workers 1: one Send at a time
					batches++
					return nil
				},
				BatchSize: 64, FlushInterval: 20 * time.Millisecond, RingSize: 8192,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(max(256/runtime.GOMAXPROCS(0), 1))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for i := uint64(0); pb.Next(); i++ {
					var err error
					if call == "enqueue" {
						err = q.Enqueue(i)
					} else {
						err = q.EnqueueAck(ctx, i, AckDelivered)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
				if err := q.Flush(ctx); err != nil {
					b.Error(err)
				}
			})
			b.StopTimer()
			if err := q.Close(); err != nil {
				b.Fatal(err)
			}
			if batches > 0 {
				b.ReportMetric(float64(items)/float64(batches), "items/batch")
			}
		})
	}
}

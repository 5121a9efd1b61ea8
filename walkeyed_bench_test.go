package vinequeue

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkSyncModeKeyed: WAL Sync mode, EnqueueKey of 100-byte items from
// G goroutines, each with keys of its own, each call durable on return
// (in a keyed record, with its key). ns/item and items/s over all items:
// the figure to compare with the same benchmark before keyed records.
func BenchmarkSyncModeKeyed(b *testing.B) {
	for _, G := range []int{64, 1024} {
		b.Run(fmt.Sprintf("goroutines=%d", G), func(b *testing.B) {
			q, err := New(Config[[]byte]{
				Send:    func(context.Context, [][]byte) error { return nil },
				Workers: 4,
				WAL:     WALConfig{Dir: b.TempDir(), Mode: Sync},
			})
			if err != nil {
				b.Fatal(err)
			}
			calls := max(b.N, G)
			item := make([]byte, 100)
			b.ResetTimer()
			var wg sync.WaitGroup
			for g := 0; g < G; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g; i < calls; i += G {
						if err := q.EnqueueKey(uint64(g*8+i%8), item); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls), "ns/item")
			b.ReportMetric(float64(calls)/b.Elapsed().Seconds(), "items/s")
			if err := q.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

package vinequeue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkSyncMode: WAL Sync mode, 100-byte items, 64 goroutines, each call
// durable on return. per=1 is Enqueue; per>1 is EnqueueBatch of that many
// items (one group per call). ns/op is per item; p99-µs is per call.
func BenchmarkSyncMode(b *testing.B) {
	for _, per := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("items-per-call=%d", per), func(b *testing.B) {
			q, err := New(Config[[]byte]{
				Send: func(context.Context, [][]byte) error { return nil },
				WAL:  WALConfig{Dir: b.TempDir(), Mode: Sync},
			})
			if err != nil {
				b.Fatal(err)
			}
			const G = 64
			calls := max(b.N/per, G)
			item := make([]byte, 100)
			lat := make([][]time.Duration, G)
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := 0; g < G; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := make([][]byte, per)
					for i := range batch {
						batch[i] = item
					}
					for i := g; i < calls; i += G {
						t0 := time.Now()
						var err error
						if per == 1 {
							err = q.Enqueue(item)
						} else {
							_, err = q.EnqueueBatch(batch)
						}
						if err != nil {
							b.Error(err)
							return
						}
						lat[g] = append(lat[g], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			items := calls * per
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(items), "ns/item")
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
			if err := q.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

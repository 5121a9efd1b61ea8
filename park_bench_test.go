package vinequeue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkParkedHotKey: Periodic, BatchSize 1000, 4 Workers; half the
// items are on a parked key (its first item failed for good), the other
// half spread over 1023 keys. other-items/s is the rate of the other keys'
// items, Enqueue to delivered (Flush): while a sender writes the parked
// key's dead letters, the others should keep sending.
func BenchmarkParkedHotKey(b *testing.B) {
	var other atomic.Int64
	send := func(_ context.Context, batch []uint64) error {
		n := 0
		for _, v := range batch {
			if v == 0 { // key 0's first item: poison
				return Permanent(errors.New("poison"))
			}
			if v&1 == 1 {
				n++
			}
		}
		other.Add(int64(n))
		return nil
	}
	q, err := New(Config[uint64]{Send: send, BatchSize: 1000, Workers: 4,
		Retry:    RetryPolicy{MaxAttempts: 1},
		WAL:      WALConfig{Dir: b.TempDir(), Mode: Periodic},
		Codec:    uint64Codec{},
		ParkKeys: true})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	if err := q.EnqueueKey(0, 0); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if q.Stats().ParkedKeys != 1 {
		b.Fatal("key 0 not parked")
	}
	other.Store(0)
	b.ResetTimer()
	start := time.Now()
	for i := 1; i <= b.N; i++ {
		v := uint64(i)
		key := uint64(0) // even items: the parked key
		if v&1 == 1 {
			key = 1 + v%1023
		}
		if err := q.EnqueueKey(key, v<<1|v&1); err != nil {
			b.Fatal(err)
		}
	}
	if err := q.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(other.Load())/time.Since(start).Seconds(), "other-items/s")
}

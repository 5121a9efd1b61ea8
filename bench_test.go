package vinequeue

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
)

// The benchmarks here are the ones issue 2 names; benchmarks/ (its own
// module) puts the queue beside peer libraries.

func noopSend(context.Context, []uint64) error { return nil }

func newBenchQueue(b *testing.B) *Queue[uint64] {
	q, err := New(Config[uint64]{Send: noopSend, BatchSize: 1000, RingSize: 8192})
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// BenchmarkEnqueue: one goroutine, the consumer running.
func BenchmarkEnqueue(b *testing.B) {
	q := newBenchQueue(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.Enqueue(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

// BenchmarkEnqueueParallel: 64 goroutines (RunParallel with parallelism
// 64/GOMAXPROCS), ns/op is per item.
func BenchmarkEnqueueParallel(b *testing.B) {
	q := newBenchQueue(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := uint64(0); pb.Next(); i++ {
			if err := q.Enqueue(i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEnqueueBatch100: EnqueueBatch of 100 items; ns/op is per item.
func BenchmarkEnqueueBatch100(b *testing.B) {
	q := newBenchQueue(b)
	vs := make([]uint64, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(vs) {
		n := min(len(vs), b.N-i)
		if _, err := q.EnqueueBatch(vs[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
}

// chanPipeline is the baseline: a buffered channel and a consumer goroutine
// that batches like the queue does.
func chanPipeline(b *testing.B) (chan uint64, func()) {
	ch := make(chan uint64, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch := make([]uint64, 0, 1000)
		for v := range ch {
			batch = append(batch, v)
			if len(batch) == cap(batch) {
				noopSend(context.Background(), batch)
				batch = batch[:0]
			}
		}
		noopSend(context.Background(), batch)
	}()
	return ch, func() { close(ch); <-done }
}

// BenchmarkChannel: the same work as BenchmarkEnqueue on a buffered channel.
func BenchmarkChannel(b *testing.B) {
	ch, stop := chanPipeline(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ch <- uint64(i)
	}
	stop()
}

// BenchmarkChannelParallel: the same work as BenchmarkEnqueueParallel.
func BenchmarkChannelParallel(b *testing.B) {
	ch, stop := chanPipeline(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := uint64(0); pb.Next(); i++ {
			ch <- i
		}
	})
	stop()
}

// BenchmarkEnqueueKey: one goroutine over 10k keys, the consumer running.
func BenchmarkEnqueueKey(b *testing.B) {
	q := newBenchQueue(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.EnqueueKey(uint64(i%10000), uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

// BenchmarkEnqueueKeyParallel: 64 goroutines over 10k keys, as
// BenchmarkEnqueueParallel; ns/op is per item.
func BenchmarkEnqueueKeyParallel(b *testing.B) {
	q := newBenchQueue(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := next.Add(7919)
		for i := uint64(0); pb.Next(); i++ {
			if err := q.EnqueueKey((key+i)%10000, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

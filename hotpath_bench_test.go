package vinequeue

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkEnqueueCPU is BenchmarkEnqueue at several BatchSizes (the ring is
// handed off every BatchSize items), measured in the producer's own CPU time
// as well: cpu-ns/op (the benchmark goroutine is locked to its thread, whose
// CPU clock is read before and after). On a shared machine ns/op also counts
// the time other processes held the CPU; cpu-ns/op does not, but it does
// count the producer's waits for memory (cache lines taken back from the
// collector's core), which are what the hot path can change. A cost that
// falls as BatchSize grows is paid per hand-off; one that stays, per item.
func BenchmarkEnqueueCPU(b *testing.B) {
	for _, bs := range []int{250, 1000, 4000} {
		b.Run(fmt.Sprintf("batch=%d", bs), func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			q, err := New(Config[uint64]{Send: noopSend, BatchSize: bs, RingSize: 8192})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			t0 := threadCPU(b)
			for i := 0; i < b.N; i++ {
				if err := q.Enqueue(uint64(i)); err != nil {
					b.Fatal(err)
				}
			}
			t1 := threadCPU(b)
			b.StopTimer()
			b.ReportMetric(float64(t1-t0)/float64(b.N), "cpu-ns/op")
			if err := q.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// threadCPU is the calling thread's CPU time in nanoseconds.
func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Skip("no thread CPU clock:", err)
	}
	return ts.Nano()
}

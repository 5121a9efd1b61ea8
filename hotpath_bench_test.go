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
// collector's core), which are what the hot path can change. blocked and
// preempted count the producer thread's context switches in the timed loop.
// A cost that
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
			r0, t0 := threadUsage(b), threadCPU(b)
			for i := 0; i < b.N; i++ {
				if err := q.Enqueue(uint64(i)); err != nil {
					b.Fatal(err)
				}
			}
			t1, r1 := threadCPU(b), threadUsage(b)
			b.StopTimer()
			b.ReportMetric(float64(t1-t0)/float64(b.N), "cpu-ns/op")
			// Why the thread was off its CPU: it blocked (voluntary: a
			// futex sleep, such as waiting for a spare ring) or the OS
			// gave the CPU to another thread (involuntary).
			b.ReportMetric(float64(r1.Nvcsw-r0.Nvcsw), "blocked")
			b.ReportMetric(float64(r1.Nivcsw-r0.Nivcsw), "preempted")
			if err := q.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// threadUsage is the calling thread's resource usage.
func threadUsage(b *testing.B) unix.Rusage {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Skip("no thread rusage:", err)
	}
	return ru
}

// threadCPU is the calling thread's CPU time in nanoseconds.
func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Skip("no thread CPU clock:", err)
	}
	return ts.Nano()
}

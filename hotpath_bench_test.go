package vinequeue

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/ring"
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

// BenchmarkFloor measures what Enqueue's fast path cannot go below on this
// machine, with no consumer anywhere (nothing else touches the memory), in
// wall and thread CPU time (cpu-ns/op, as BenchmarkEnqueueCPU):
//   - store: a bare store loop into a ring-sized array, the index in a
//     register: the cost of the item's store alone;
//   - gopush: ring.SPSC.TryPush through a call the compiler may not inline:
//     the tail read from memory and written back, the store, a call;
//   - stub: pinPush8, Enqueue's assembly push (find the P, its slot and
//     ring, check, store, publish), the ring drained in place when it
//     refuses (once per 4096 pushes). Skipped without the assembly.
//
// BenchmarkEnqueue minus stub is what the rest of the queue adds per item
// (the Enqueue wrapper, the hand-offs, the collector on the other core).
func BenchmarkFloor(b *testing.B) {
	const size = 1 << 12
	b.Run("store", func(b *testing.B) {
		buf := make([]uint64, size)
		cpuTimed(b, func(n int) {
			for i := 0; i < n; i++ {
				buf[i&(size-1)] = uint64(i)
			}
		})
		floorSink = buf[1]
	})
	b.Run("gopush", func(b *testing.B) {
		r, err := ring.NewSPSC[uint64](size, 0)
		if err != nil {
			b.Fatal(err)
		}
		var out []uint64
		cpuTimed(b, func(n int) {
			for i := 0; i < n; i++ {
				if !tryPushCall(r, uint64(i)) {
					out = r.Drain(out[:0], 0)
					r.Push(uint64(i))
				}
			}
		})
	})
	b.Run("stub", func(b *testing.B) {
		if !pinAssembly || raceBuild {
			b.Skip("no assembly push in this build")
		}
		slots := make([]engine.ProcSlot[uint64], runtime.GOMAXPROCS(0))
		for i := range slots {
			r, err := ring.NewSPSC[uint64](size, 0)
			if err != nil {
				b.Fatal(err)
			}
			slots[i].Cur.Store(r)
		}
		p := unsafe.Pointer(unsafe.SliceData(slots))
		var out []uint64
		cpuTimed(b, func(n int) {
			for i := 0; i < n; i++ {
				if !pinPush8(p, len(slots), uint64(i)) {
					pid, tok := procPin()
					r := slots[pid].Cur.Load()
					out = r.Drain(out[:0], 0)
					r.Push(uint64(i))
					procUnpin(tok)
				}
			}
		})
	})
}

// floorSink keeps BenchmarkFloor's stores from being optimised away.
var floorSink uint64

// tryPushCall is TryPush behind a call, as a Go Enqueue would pay for it.
//
//go:noinline
func tryPushCall(r *ring.SPSC[uint64], v uint64) bool { return r.TryPush(v) }

// cpuTimed runs loop(b.N) on a locked thread and reports the thread's CPU
// time per op beside ns/op: on a shared machine ns/op also counts the time
// other processes held the CPU, cpu-ns/op does not.
func cpuTimed(b *testing.B, loop func(n int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := threadCPU(b)
	loop(b.N)
	t1 := threadCPU(b)
	b.StopTimer()
	b.ReportMetric(float64(t1-t0)/float64(b.N), "cpu-ns/op")
}

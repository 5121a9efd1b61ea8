package vinequeue

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/pin"
)

// These tests run on both pinning paths: the generated-offset assembly
// (default build) and the runtime.procPin fallback (-tags purego, other Go
// versions or GOARCHes). pinAssembly tells which one is under test.

func pinPath() string {
	if pinAssembly {
		return "assembly"
	}
	return "runtime.procPin fallback"
}

// pinDeadline bounds how long a test waits for the scheduler to spread
// goroutines over every P. It is generous because the CI box is shared and
// arm64 runs under qemu; passing tests finish in milliseconds.
const pinDeadline = 60 * time.Second

// pinPhase is one GOMAXPROCS setting. A worker that loads it while pinned
// knows its P id belongs to that setting: changing GOMAXPROCS needs a
// stop-the-world, which cannot complete while any goroutine is pinned; the
// phase is withdrawn (nil) before runtime.GOMAXPROCS is called and published
// only after it has returned.
type pinPhase struct {
	procs int
	seen  []atomic.Bool // seen[pid]: some worker was pinned on P pid
}

// TestPinMatchesRuntimeOnEveryP checks, with many goroutines, that procPin's P
// id equals runtime.procPin's on every P, that it stays below GOMAXPROCS, and
// that this holds while GOMAXPROCS shrinks and grows at run time.
func TestPinMatchesRuntimeOnEveryP(t *testing.T) {
	t.Logf("pinning path: %s", pinPath())
	steps := []int{1, 2, 4, 3, 8, 2, 16}
	if testing.Short() {
		steps = []int{1, 4, 2, 8}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	var (
		current  atomic.Pointer[pinPhase]
		stop     atomic.Bool
		failures atomic.Int64
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
	)
	fail := func(msg string) {
		failures.Add(1)
		firstErr.CompareAndSwap(nil, &msg)
	}
	runtime.GOMAXPROCS(steps[0])
	current.Store(newPinPhase(steps[0]))

	workers := 4 * steps[len(steps)-1]
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				pid, tok := procPin()
				ref := pin.Pin() // nested: the runtime's own answer for this M
				pin.Unpin()
				ph := current.Load()
				procUnpin(tok)

				switch {
				case pid != ref:
					fail("procPin returned P " + strconv.Itoa(pid) + ", runtime.procPin " + strconv.Itoa(ref))
				case ph == nil:
					// GOMAXPROCS is changing: the bound is unknown.
				case pid < 0 || pid >= ph.procs:
					fail("P id " + strconv.Itoa(pid) + " outside [0, GOMAXPROCS=" + strconv.Itoa(ph.procs) + ")")
				default:
					ph.seen[pid].Store(true)
				}
				runtime.Gosched()
			}
		}()
	}

	for i, procs := range steps {
		if i > 0 {
			current.Store(nil)
			runtime.GOMAXPROCS(procs)
			current.Store(newPinPhase(procs))
		}
		ph := current.Load()
		deadline := time.Now().Add(pinDeadline)
		for !ph.allSeen() && failures.Load() == 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		if failures.Load() != 0 {
			break
		}
		if !ph.allSeen() {
			t.Errorf("GOMAXPROCS=%d: not every P was observed within %v: %v", procs, pinDeadline, ph.seenList())
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d mismatches, first: %s", n, *firstErr.Load())
	}
}

func newPinPhase(procs int) *pinPhase {
	return &pinPhase{procs: procs, seen: make([]atomic.Bool, procs)}
}

func (ph *pinPhase) allSeen() bool {
	for i := range ph.seen {
		if !ph.seen[i].Load() {
			return false
		}
	}
	return true
}

func (ph *pinPhase) seenList() []bool {
	out := make([]bool, len(ph.seen))
	for i := range ph.seen {
		out[i] = ph.seen[i].Load()
	}
	return out
}

// TestPinDisablesPreemption checks that a pinned goroutine keeps its P: with
// one P, a goroutine made runnable before the pin can only run if the pinned
// one is preempted. The pinned goroutine spins well past sysmon's 10 ms
// preemption deadline; the other goroutine must run only after the unpin.
func TestPinDisablesPreemption(t *testing.T) {
	t.Logf("pinning path: %s", pinPath())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	var ran atomic.Bool
	started := make(chan struct{})
	go func() {
		<-started
		ran.Store(true)
	}()

	pid, tok := procPin()
	close(started) // makes the goroutine runnable on our P; never blocks
	spinUntil := time.Now().Add(50 * time.Millisecond)
	ranWhilePinned := false
	for time.Now().Before(spinUntil) {
		if ran.Load() {
			ranWhilePinned = true
			break
		}
	}
	procUnpin(tok)

	if ranWhilePinned {
		t.Fatalf("another goroutine ran on the only P (%d) while this one was pinned: preemption was not disabled", pid)
	}
	deadline := time.Now().Add(pinDeadline)
	for !ran.Load() && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if !ran.Load() {
		t.Fatal("the other goroutine never ran after unpin")
	}
}

var pinSink int

// BenchmarkPin puts the two pinning paths side by side: a pin+unpin pair as
// Enqueue does it (procPin/procUnpin, one assembly call and an inlined
// decrement) against runtime.procPin/procUnpin (two calls).
func BenchmarkPin(b *testing.B) {
	b.Run("asm", func(b *testing.B) {
		if !pinAssembly {
			b.Skip("this build uses the runtime.procPin fallback (-tags purego, or no offsets for this Go version/GOARCH)")
		}
		s := 0
		for i := 0; i < b.N; i++ {
			pid, tok := procPin()
			s += pid
			procUnpin(tok)
		}
		pinSink = s
	})
	b.Run("runtime", func(b *testing.B) {
		s := 0
		for i := 0; i < b.N; i++ {
			s += pin.Pin()
			pin.Unpin()
		}
		pinSink = s
	})
}

// BenchmarkPinInterleaved measures the same two pairs in alternating windows
// of a few microseconds and reports the median window of each, so that load
// from other processes on a shared machine hits both alike: the ratio
// (runtime/asm) is the figure to trust on a noisy box. ns/op covers both.
func BenchmarkPinInterleaved(b *testing.B) {
	if !pinAssembly {
		b.Skip("this build uses the runtime.procPin fallback: nothing to compare")
	}
	const window = 1 << 12
	var asmNs, rtNs []float64
	s := 0
	for n := 0; n < b.N; n += 2 * window {
		t0 := time.Now()
		for i := 0; i < window; i++ {
			pid, tok := procPin()
			s += pid
			procUnpin(tok)
		}
		t1 := time.Now()
		for i := 0; i < window; i++ {
			s += pin.Pin()
			pin.Unpin()
		}
		t2 := time.Now()
		asmNs = append(asmNs, float64(t1.Sub(t0))/window)
		rtNs = append(rtNs, float64(t2.Sub(t1))/window)
	}
	pinSink = s
	asm, rt := median(asmNs), median(rtNs)
	b.ReportMetric(asm, "asm-ns/pair")
	b.ReportMetric(rt, "runtime-ns/pair")
	b.ReportMetric(rt/asm, "runtime/asm")
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

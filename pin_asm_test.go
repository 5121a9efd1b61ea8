//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

package vinequeue

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/pin"
	"github.com/vineroute/vinequeue/ring"
)

// The build line above is maintained by pin/internal/genoffsets (same as
// pin_asm.go): these tests exist only where the assembly does. The offsets
// themselves are checked against DWARF by pin.TestGeneratedOffsetsMatchDWARF
// (the DWARF reader is internal to pin/).

// TestPinTokenIsRuntimeLocks checks that procPin really increments the
// runtime's m.locks and that procUnpin really decrements it: tok must alias
// the very counter runtime.procPin changes, and pins must balance.
func TestPinTokenIsRuntimeLocks(t *testing.T) {
	if err := checkPinToken(); err != nil {
		t.Fatal(err)
	}

	// Many goroutines, many pairs each, then the check again on whatever M
	// each goroutine ended on: any imbalance would leave that M's m.locks
	// above 0 and the next check would see it.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var (
		wg   sync.WaitGroup
		errs = make(chan error, 32)
	)
	for g := 0; g < cap(errs); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				_, tok := procPin()
				procUnpin(tok)
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
			errs <- checkPinToken()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := checkPinToken(); err != nil {
		t.Fatal(err)
	}
}

// checkPinToken pins once and checks, on the M it lands on, that the token is
// that M's m.locks: the runtime's own procPin/procUnpin move it by one, a
// nested procPin returns the same token and P, and everything balances.
func checkPinToken() error {
	pid, tok := procPin()
	base := *tok
	ref := pin.Pin()
	afterRuntimePin := *tok
	pin.Unpin()
	afterRuntimeUnpin := *tok

	pid2, tok2 := procPin()
	nested := *tok
	procUnpin(tok2)
	afterNested := *tok
	procUnpin(tok)

	switch {
	case base != 1:
		// Go code runs with m.locks == 0 (else it could not be preempted),
		// so our own pin must be the only one.
		return fmt.Errorf("m.locks = %d right after procPin, want 1", base)
	case ref != pid || pid2 != pid:
		return fmt.Errorf("P ids: procPin %d, runtime.procPin %d, nested procPin %d", pid, ref, pid2)
	case tok2 != tok:
		return fmt.Errorf("nested procPin token %p differs from %p on the same M", tok2, tok)
	case afterRuntimePin != base+1 || afterRuntimeUnpin != base:
		return fmt.Errorf("runtime.procPin moved *tok %d → %d → %d, want %d → %d → %d: tok is not m.locks",
			base, afterRuntimePin, afterRuntimeUnpin, base, base+1, base)
	case nested != base+1 || afterNested != base:
		return fmt.Errorf("nested procPin moved m.locks %d → %d → %d, want %d → %d → %d",
			base, nested, afterNested, base, base+1, base)
	}
	return nil
}

// pushSlots makes one slot per P, each with its own ring of size slots that
// reports (stops the fast path) at watermark.
func pushSlots(t testing.TB, size, watermark int) []engine.ProcSlot[uint64] {
	slots := make([]engine.ProcSlot[uint64], runtime.GOMAXPROCS(0))
	for i := range slots {
		r, err := ring.NewSPSC[uint64](size, watermark)
		require.NoError(t, err)
		slots[i].Cur.Store(r)
	}
	return slots
}

func push8(slots []engine.ProcSlot[uint64], v uint64) bool {
	return pinPush8(unsafe.Pointer(unsafe.SliceData(slots)), len(slots), v)
}

// TestPinPush8IsTryPush checks the assembly push against ring.TryPush, the Go
// code it replaces: the item lands in the ring of the caller's P, at the
// ring's tail, and the stub refuses (storing nothing) exactly where TryPush
// does: at the watermark, when full, when sealed; and also when the P has no
// slot or the slot no ring.
func TestPinPush8IsTryPush(t *testing.T) {
	slots := pushSlots(t, 8, 5)
	pid, tok := procPin() // the stub needs no pin; this one lets the test know the P
	var pushed []uint64
	for v := uint64(100); ; v++ {
		ok := push8(slots, v)
		if !ok {
			break
		}
		pushed = append(pushed, v)
	}
	r := slots[pid].Cur.Load()
	// The watermark stops the fast path one short (limit = watermark-1): the
	// push that reaches it must report, which only the Go path does.
	require.Equal(t, []uint64{100, 101, 102, 103}, pushed)
	require.Equal(t, 4, r.Len())
	require.Equal(t, uint64(4), r.Pushed(), "the stub must publish tail")
	require.Equal(t, ring.PushedWatermark, r.Push(104), "Go path after the stub's refusal")
	for i := range slots {
		if i != pid {
			require.Zero(t, slots[i].Cur.Load().Len(), "P %d's ring got items pushed on P %d", i, pid)
		}
	}
	// Up to full: the stub takes what the ring's limit allows, then refuses.
	for v := uint64(200); push8(slots, v); v++ {
	}
	for r.Len() < r.Cap() {
		st := r.Push(999)
		require.NotEqual(t, ring.Full, st)
	}
	require.False(t, push8(slots, 1), "full ring")
	require.Equal(t, r.Cap(), r.Len())
	got := r.Drain(nil, 0)
	require.Equal(t, []uint64{100, 101, 102, 103, 104}, got[:5])

	// Empty again: the stub pushes; sealed: it refuses and stores nothing.
	require.Equal(t, ring.Pushed, r.Push(1)) // the Go path moves the limit past the drained slots
	require.True(t, push8(slots, 2))
	r.Seal()
	require.False(t, push8(slots, 3), "sealed ring")
	require.Equal(t, []uint64{1, 2}, r.Drain(nil, 0))

	// No ring in the slot, or no slot for the P: refused.
	r2, err := ring.NewSPSC[uint64](8, 0)
	require.NoError(t, err)
	slots[pid].Cur.Store(nil)
	require.False(t, push8(slots, 4), "slot without a ring")
	slots[pid].Cur.Store(r2)
	require.False(t, pinPush8(unsafe.Pointer(unsafe.SliceData(slots)), pid, 5), "P id beyond the slots")
	require.True(t, push8(slots, 6))
	procUnpin(tok)
	require.Equal(t, []uint64{6}, r2.Drain(nil, 0))
}

// TestPinPush8Concurrent: many goroutines push through the stub, which does
// not pin, while one consumer per ring drains. Were the stub preemptible
// between reading the P id and publishing tail, two goroutines could push into
// one ring at once, losing or duplicating items: every item must arrive
// exactly once, and each goroutine's items on one ring in its order.
func TestPinPush8Concurrent(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	const producers = 32
	per := 50000
	if testing.Short() {
		per = 5000
	}
	slots := pushSlots(t, 1024, 1024)
	var stop atomic.Bool
	seen := make([][]int, producers) // seen[p][k]: how often item k of producer p arrived
	for p := range seen {
		seen[p] = make([]int, per)
	}
	var consumers sync.WaitGroup
	var mu sync.Mutex
	last := make([]map[int]int, len(slots)) // per ring: producer → last k
	for i := range slots {
		last[i] = map[int]int{}
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			r := slots[i].Cur.Load()
			var buf []uint64
			for {
				done := stop.Load()
				buf = r.Drain(buf[:0], 0)
				mu.Lock()
				for _, v := range buf {
					p, k := int(v>>32), int(v&0xffffffff)
					seen[p][k]++
					if prev, ok := last[i][p]; ok && k <= prev {
						t.Errorf("ring %d: producer %d item %d after %d", i, p, k, prev)
					}
					last[i][p] = k
				}
				mu.Unlock()
				if done && r.Len() == 0 {
					return
				}
				runtime.Gosched()
			}
		}()
	}
	var producersWG sync.WaitGroup
	for p := range producers {
		producersWG.Add(1)
		go func() {
			defer producersWG.Done()
			for k := 0; k < per; k++ {
				v := uint64(p)<<32 | uint64(k)
				for !push8(slots, v) {
					// At the limit (the consumer is behind): the Go path
					// moves the limit once there is room. Pinned, as
					// Enqueue's Go path is.
					pid, tok := procPin()
					st := slots[pid].Cur.Load().Push(v)
					procUnpin(tok)
					if st == ring.Pushed || st == ring.PushedWatermark {
						break
					}
					runtime.Gosched()
				}
			}
		}()
	}
	producersWG.Wait()
	stop.Store(true)
	consumers.Wait()
	for p := range seen {
		for k, n := range seen[p] {
			if n != 1 {
				t.Fatalf("producer %d item %d arrived %d times", p, k, n)
			}
		}
	}
}

// BenchmarkPinPush8 is the stub alone, on one goroutine, with no consumer on
// another core: the floor of Enqueue's fast path. The ring is drained in place
// when the stub refuses.
func BenchmarkPinPush8(b *testing.B) {
	slots := pushSlots(b, 1<<12, 0)
	var buf []uint64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !push8(slots, uint64(i)) {
			pid, tok := procPin()
			r := slots[pid].Cur.Load()
			buf = r.Drain(buf[:0], 0)
			r.Push(uint64(i))
			procUnpin(tok)
		}
	}
}

// BenchmarkPinGoPush is BenchmarkPinPush8 through the Go path (procPin,
// TryPush, procUnpin), for comparison.
func BenchmarkPinGoPush(b *testing.B) {
	slots := pushSlots(b, 1<<12, 0)
	var buf []uint64
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		pid, tok := procPin()
		r := slots[pid].Cur.Load()
		if !r.TryPush(uint64(i)) {
			buf = r.Drain(buf[:0], 0)
			r.Push(uint64(i))
		}
		procUnpin(tok)
	}
}

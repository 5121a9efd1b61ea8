package ring

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestPrefetchWChangesNothing: prefetchW is assembly that must only hint.
// Over a buffer of known bytes, for lengths that are not multiples of a line,
// zero, and ranges at both ends of the buffer, no byte may change (a store
// instead of a prefetch, or a wrong bound, would show here or fault).
func TestPrefetchWChangesNothing(t *testing.T) {
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	want := append([]byte(nil), buf...)
	for _, c := range []struct{ off, n int }{{0, 0}, {0, 1}, {0, 63}, {0, 64}, {0, 65}, {1, 4095}, {4000, 96}, {0, 4096}, {4095, 1}} {
		prefetchW(unsafe.Pointer(&buf[c.off]), uintptr(c.n))
		require.Equal(t, want, buf, "prefetchW(%d, %d) changed memory", c.off, c.n)
	}
}

// TestPrefetchKeepsRing: Prefetch between pushes and drains, at every
// position of a small ring (wrapping, full, empty, more than is free),
// leaves what the ring holds and what it accepts unchanged.
func TestPrefetchKeepsRing(t *testing.T) {
	r, err := NewSPSC[uint64](16, 0)
	require.NoError(t, err)
	var next, want uint64
	for round := range 64 {
		for range round % 17 {
			if r.Push(next) == Full {
				break
			}
			next++
		}
		for _, n := range []int{-1, 0, 1, 7, 16, 100} {
			r.Prefetch(n)
		}
		got := r.Drain(nil, round%5)
		for _, v := range got {
			require.Equal(t, want, v)
			want++
		}
	}
	for _, v := range r.Drain(nil, 0) {
		require.Equal(t, want, v)
		want++
	}
	require.Equal(t, next, want)
}

package ring

import (
	"testing"

	"github.com/stretchr/testify/require"
)

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

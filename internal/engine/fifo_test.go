package engine

import (
	"math/rand/v2"
	"testing"
)

// TestFIFOModel checks fifo against a plain slice queue under random pushes
// and pops, and that a steady push/pop cycle stops allocating.
func TestFIFOModel(t *testing.T) {
	var f fifo[int]
	var model []int
	rng := rand.New(rand.NewPCG(1, 2))
	next := 0
	for step := 0; step < 100_000; step++ {
		if rng.IntN(3) > 0 || len(model) == 0 {
			f.push(next)
			model = append(model, next)
			next++
		} else {
			if got, want := f.pop(), model[0]; got != want {
				t.Fatalf("step %d: pop %d, want %d", step, got, want)
			}
			model = model[1:]
		}
		if f.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, f.len(), len(model))
		}
		if len(model) > 0 && f.peek() != model[0] {
			t.Fatalf("step %d: peek %d, want %d", step, f.peek(), model[0])
		}
		if step%1000 == 0 {
			for i, v := range f.items() {
				if v != model[i] {
					t.Fatalf("step %d: items[%d] = %d, want %d", step, i, v, model[i])
				}
			}
		}
	}
	f.reset()
	if f.len() != 0 {
		t.Fatalf("len after reset = %d", f.len())
	}
	// A backlog of up to 8 that is never fully drained: the backing array
	// slides instead of growing, so the cycle allocates nothing.
	for range 8 {
		f.push(0)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		f.push(1)
		f.pop()
	})
	if allocs != 0 {
		t.Fatalf("steady push/pop allocates %v per cycle", allocs)
	}
}

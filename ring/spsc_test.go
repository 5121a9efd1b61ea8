package ring

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"unsafe"
)

func TestNewSPSCSize(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 3, 1000} {
		if _, err := NewSPSC[int](n, 0); !errors.Is(err, ErrSize) {
			t.Errorf("NewSPSC(%d): err = %v, want ErrSize", n, err)
		}
	}
	r, err := NewSPSC[int](8, 0)
	if err != nil || r.Cap() != 8 {
		t.Fatalf("NewSPSC(8) = %v, %v", r, err)
	}
}

// TestLayout checks that the producer's and the consumer's fields sit on
// different cache lines, so a push never writes the consumer's line.
func TestLayout(t *testing.T) {
	var r SPSC[uint64]
	prod := []uintptr{unsafe.Offsetof(r.tail), unsafe.Offsetof(r.headCache), unsafe.Offsetof(r.limit), unsafe.Offsetof(r.sealed)}
	cons := []uintptr{unsafe.Offsetof(r.head), unsafe.Offsetof(r.tailCache)}
	ro := []uintptr{unsafe.Offsetof(r.mask), unsafe.Offsetof(r.watermark), unsafe.Offsetof(r.buf)}
	line := func(o uintptr) uintptr { return o / cacheLine }
	for _, p := range prod {
		if line(p) != line(prod[0]) {
			t.Errorf("producer field at %d not on the producer's line", p)
		}
		for _, c := range append(cons, ro...) {
			if line(p) == line(c) {
				t.Errorf("producer field at %d shares a line with field at %d", p, c)
			}
		}
	}
	for _, c := range cons {
		for _, o := range ro {
			if line(c) == line(o) {
				t.Errorf("consumer field at %d shares a line with read-only field at %d", c, o)
			}
		}
	}
	if line(prod[0]) == 0 {
		t.Errorf("producer line is the struct's first line: a neighbour allocation could share it")
	}
	if unsafe.Sizeof(r)%cacheLine != 0 {
		t.Errorf("size %d is not a multiple of %d", unsafe.Sizeof(r), cacheLine)
	}
}

// TestSPSCModel drives a ring and a plain slice queue with the same random
// operations on one goroutine and checks they agree after every step.
func TestSPSCModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{2, 4, 16, 64} {
		for _, wm := range []int{0, 1, size / 2, size} {
			r, err := NewSPSC[int](size, wm)
			if err != nil {
				t.Fatal(err)
			}
			var model []int
			next := 0
			effWM := wm
			if wm <= 0 || wm > size {
				effWM = size
			}
			sinceMark := 0 // pushes since the ring last reported a watermark
			var out []int
			for step := 0; step < 20000; step++ {
				switch op := rng.IntN(10); {
				case op < 6:
					st := r.Push(next)
					switch {
					case len(model) == size:
						if st != Full {
							t.Fatalf("size %d: push on full ring = %v", size, st)
						}
						continue
					case st == Full || st == Sealed:
						t.Fatalf("size %d: push with %d/%d = %v", size, len(model), size, st)
					}
					model = append(model, next)
					next++
					sinceMark++
					// A push that leaves >= wm items reports, unless it
					// reported fewer than wm pushes ago.
					if st == PushedWatermark {
						sinceMark = 0
					} else if len(model) >= effWM && sinceMark >= effWM {
						t.Fatalf("size %d wm %d: %d items, %d pushes since the last report, no report", size, wm, len(model), sinceMark)
					}
				case op < 7:
					k := rng.IntN(size + 1)
					vs := make([]int, k)
					for i := range vs {
						vs[i] = next + i
					}
					n, mark := r.PushBatch(vs)
					want := min(k, size-len(model))
					if n != want {
						t.Fatalf("PushBatch(%d) with %d/%d stored %d, want %d", k, len(model), size, n, want)
					}
					model = append(model, vs[:n]...)
					next += n
					sinceMark += n
					if mark {
						sinceMark = 0
					} else if n > 0 && len(model) >= effWM && sinceMark >= effWM {
						t.Fatalf("PushBatch: %d items, %d pushes since the last report, no report", len(model), sinceMark)
					}
				default:
					max := rng.IntN(size+1) - 1
					out = r.Drain(out[:0], max)
					want := len(model)
					if max > 0 && max < want {
						want = max
					}
					if len(out) != want {
						t.Fatalf("Drain(max %d) got %d items, want %d", max, len(out), want)
					}
					for i, v := range out {
						if v != model[i] {
							t.Fatalf("Drain item %d = %d, want %d", i, v, model[i])
						}
					}
					model = model[len(out):]
				}
				if r.Len() != len(model) {
					t.Fatalf("Len = %d, model %d", r.Len(), len(model))
				}
			}
		}
	}
}

func TestWatermark(t *testing.T) {
	r, _ := NewSPSC[int](16, 4)
	var marks []int
	for i := 1; i <= 16; i++ {
		if r.Push(i) == PushedWatermark {
			marks = append(marks, i)
		}
	}
	if want := []int{4, 8, 12, 16}; !equal(marks, want) {
		t.Fatalf("watermark reports at %v, want %v", marks, want)
	}
	if st := r.Push(17); st != Full {
		t.Fatalf("push on full = %v", st)
	}
	r.Drain(nil, 10) // 6 left
	// The consumer freed room: the next push sees 7 >= 4 items and reports.
	if st := r.Push(17); st != PushedWatermark {
		t.Fatalf("push after drain = %v, want PushedWatermark", st)
	}
}

func TestSeal(t *testing.T) {
	r, _ := NewSPSC[int](8, 0)
	r.Push(1)
	r.Seal()
	if !r.IsSealed() {
		t.Fatal("IsSealed false after Seal")
	}
	if st := r.Push(2); st != Sealed {
		t.Fatalf("push after seal = %v", st)
	}
	if n, mark := r.PushBatch([]int{3}); n != 0 || mark {
		t.Fatalf("PushBatch after seal = %d, %v", n, mark)
	}
	if got := r.Drain(nil, 0); !equal(got, []int{1}) {
		t.Fatalf("drain after seal = %v", got)
	}
}

// TestDrainZeroes checks the retention rule: a drained slot holds no pointer.
func TestDrainZeroes(t *testing.T) {
	r, _ := NewSPSC[*int](4, 0)
	for i := 0; i < 3; i++ {
		v := i
		r.Push(&v)
	}
	r.Drain(nil, 2)
	r.Push(new(int))
	r.Push(new(int)) // wraps
	r.Drain(nil, 0)
	for i, p := range r.buf {
		if p != nil {
			t.Errorf("slot %d still holds a pointer after drain", i)
		}
	}
}

// TestSPSCConcurrent runs one producer and one consumer on separate
// goroutines; the consumer checks it sees 0, 1, 2, ... with no gap. With
// GOMAXPROCS >= 2 they run in parallel, so a publish reordered before its
// slot write would show up as a stale value.
func TestSPSCConcurrent(t *testing.T) {
	n := uint64(2_000_000)
	if testing.Short() || raceEnabled {
		n = 200_000
	}
	for _, size := range []int{2, 64, 1024} {
		r, _ := NewSPSC[uint64](size, size/4)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(0); i < n; {
				if i%7 == 0 {
					vs := []uint64{i, i + 1, i + 2}
					if i+3 > n {
						vs = vs[:n-i]
					}
					k, _ := r.PushBatch(vs)
					i += uint64(k)
					if k == 0 {
						runtime.Gosched()
					}
					continue
				}
				switch r.Push(i) {
				case Pushed, PushedWatermark:
					i++
				default:
					runtime.Gosched()
				}
			}
		}()
		buf := make([]uint64, 0, size)
		for want := uint64(0); want < n; {
			buf = r.Drain(buf[:0], 0)
			if len(buf) == 0 {
				runtime.Gosched()
			}
			for _, v := range buf {
				if v != want {
					t.Fatalf("size %d: got %d, want %d", size, v, want)
				}
				want++
			}
		}
		wg.Wait()
		if r.Len() != 0 {
			t.Fatalf("Len %d after all drained", r.Len())
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func BenchmarkPush(b *testing.B) {
	r, _ := NewSPSC[uint64](1024, 256)
	buf := make([]uint64, 0, 1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r.Push(uint64(i)) != Pushed {
			buf = r.Drain(buf[:0], 0)
		}
	}
}

func TestHasPointers(t *testing.T) {
	type flat struct {
		A int64
		B [4]float32
	}
	type deep struct {
		A int
		B [2]struct{ S string }
	}
	for _, c := range []struct {
		typ  reflect.Type
		want bool
	}{
		{reflect.TypeFor[uint64](), false},
		{reflect.TypeFor[flat](), false},
		{reflect.TypeFor[[0]*int](), false},
		{reflect.TypeFor[*int](), true},
		{reflect.TypeFor[string](), true},
		{reflect.TypeFor[[]byte](), true},
		{reflect.TypeFor[any](), true},
		{reflect.TypeFor[deep](), true},
		{reflect.TypeFor[map[int]int](), true},
	} {
		if got := hasPointers(c.typ); got != c.want {
			t.Errorf("hasPointers(%v) = %v, want %v", c.typ, got, c.want)
		}
	}
}

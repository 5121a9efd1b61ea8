package batch

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/sinkmodel"
)

func checkBounds(t *testing.T, s *Sizer, lo, hi int) {
	t.Helper()
	if n := s.Size(); n < lo || n > hi || n < 1 {
		t.Fatalf("size %d outside [%d, %d]", n, lo, hi)
	}
}

func TestNewSizerClamps(t *testing.T) {
	for _, c := range []struct{ start, min, max, wantMin, wantMax, wantStart int }{
		{1000, 1, 10000, 1, 10000, 1000},
		{0, 0, 0, 1, 10000, 1000},
		{-5, -5, -5, 1, 10000, 1000},
		{50000, 0, 0, 1, 50000, 50000},
		{5, 10, 100, 10, 100, 10},
		{500, 10, 100, 10, 100, 100},
		{7, 100, 10, 100, 100, 100}, // max below min: raised to min
		{1, 1, 1, 1, 1, 1},
	} {
		s := NewSizer(c.start, c.min, c.max)
		if s.Min() != c.wantMin || s.Max() != c.wantMax || s.Size() != c.wantStart {
			t.Errorf("NewSizer(%d, %d, %d): min %d max %d size %d, want %d %d %d",
				c.start, c.min, c.max, s.Min(), s.Max(), s.Size(), c.wantMin, c.wantMax, c.wantStart)
		}
	}
}

// TestSizerStaysInBounds feeds arbitrary (including hostile) observations.
func TestSizerStaysInBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, b := range [][2]int{{1, 1}, {1, 2}, {1, 20000}, {100, 200}, {7, 7}, {1000, 1000000}} {
		s := NewSizerConfig(SizerConfig{Start: b[0], Min: b[0], Max: b[1], Concurrency: 1 + rng.IntN(4), Window: 1 + rng.IntN(8)})
		for i := range 20000 {
			items := rng.IntN(2*b[1]+2) - 1 // includes 0 and -1, and above max
			var lat time.Duration
			switch i % 5 {
			case 0:
				lat = 0
			case 1:
				lat = -time.Second
			case 2:
				lat = time.Duration(rng.Int64N(int64(time.Hour)))
			default:
				lat = time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
			}
			var err error
			if rng.IntN(20) == 0 {
				err = errors.New("x")
			}
			s.Observe(items, lat, err)
			checkBounds(t, s, b[0], b[1])
		}
	}
}

func TestSizerIgnoresEmptyBatches(t *testing.T) {
	s := NewSizer(1000, 1, 10000)
	for range 1000 {
		s.Observe(0, time.Hour, errors.New("x"))
		s.Observe(-1, time.Hour, nil)
	}
	if s.Size() != 1000 {
		t.Fatalf("size %d after empty observations", s.Size())
	}
}

func TestSizerErrorsShrink(t *testing.T) {
	s := NewSizerConfig(SizerConfig{Start: 1024, Min: 4, Max: 4096, Window: 4})
	s.Observe(1024, time.Millisecond, errors.New("x"))
	if s.Size() != 512 {
		t.Fatalf("after one error size %d, want 512", s.Size())
	}
	// The retries of that batch (or other batches sized before the cut)
	// teach nothing new: no further cut.
	for range 4 {
		s.Observe(1024, time.Millisecond, errors.New("x"))
	}
	if s.Size() != 512 {
		t.Fatalf("retries of the same batch cut to %d", s.Size())
	}
	// A batch of the new size failing too halves again.
	s.Observe(512, time.Millisecond, errors.New("x"))
	if s.Size() != 256 {
		t.Fatalf("a failed batch at the new size left %d, want 256", s.Size())
	}
	// A sink that keeps failing drives the size to the floor, never below.
	for range 20 {
		s.Observe(s.Size(), time.Millisecond, errors.New("x"))
	}
	if s.Size() != 4 {
		t.Fatalf("size %d under persistent errors, want the floor 4", s.Size())
	}
}

// TestSizerFollowsInput: when batches are smaller than the target (the input
// rate or the flush interval limits them), the target comes down to a little
// above what is really sent instead of floating far above it.
func TestSizerFollowsInput(t *testing.T) {
	s := NewSizerConfig(SizerConfig{Start: 5000, Min: 1, Max: 20000})
	for range 100 {
		s.Observe(300, 2*time.Millisecond+300*time.Microsecond, nil)
	}
	if n := s.Size(); n < 300 || n > 400 {
		t.Fatalf("target %d for batches of 300 limited by the input, want 300..400", n)
	}
}

// TestSizerReactsToKneeChange runs the Sizer against the sink model, in
// simulated time, and checks where it settles before and after the knee moves.
func TestSizerReactsToKneeChange(t *testing.T) {
	before := sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}
	after := before
	after.Knee = 500
	for _, w := range []int{1, 4} {
		sim := sinkmodel.Sim{Workers: w, Duration: 10 * time.Second, Window: 100 * time.Millisecond,
			Phases: []sinkmodel.Phase{{Model: before}, {At: 5 * time.Second, Model: after}}}
		r := sinkmodel.Run(sim, NewSizerConfig(SizerConfig{Start: 100, Min: 1, Max: 20000, Concurrency: w}))
		mean := func(from, to time.Duration) float64 {
			sum, n := 0.0, 0
			for _, win := range r.Windows {
				if win.Start >= from && win.Start < to && win.MeanSize > 0 {
					sum += win.MeanSize
					n++
				}
			}
			return sum / float64(n)
		}
		if m := mean(3*time.Second, 5*time.Second); m < 1700 || m > 2100 {
			t.Errorf("W=%d: mean size %.0f with the knee at 2000", w, m)
		}
		if m := mean(8*time.Second, 10*time.Second); m < 425 || m > 525 {
			t.Errorf("W=%d: mean size %.0f with the knee at 500", w, m)
		}
	}
}

func TestSizerConcurrentObserve(t *testing.T) {
	s := NewSizerConfig(SizerConfig{Start: 1000, Min: 10, Max: 5000, Concurrency: 8})
	m := sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 5000 {
				n := s.Size()
				if n < 10 || n > 5000 {
					t.Errorf("size %d out of bounds", n)
					return
				}
				var err error
				if i%97 == 0 {
					err = errors.New("x")
				}
				s.Observe(n, m.Latency(n)+time.Duration(rng.IntN(1000)), err)
			}
		})
	}
	wg.Wait()
	checkBounds(t, s, 10, 5000)
}

func BenchmarkSizerObserve(b *testing.B) {
	s := NewSizer(1000, 1, 20000)
	m := sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}
	b.ReportAllocs()
	for b.Loop() {
		n := s.Size()
		s.Observe(n, m.Latency(n), nil)
	}
}

func BenchmarkSizerObserveParallel(b *testing.B) {
	s := NewSizerConfig(SizerConfig{Start: 1000, Min: 1, Max: 20000, Concurrency: 4})
	m := sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := s.Size()
			s.Observe(n, m.Latency(n), nil)
		}
	})
}

func BenchmarkSizerSize(b *testing.B) {
	s := NewSizer(1000, 1, 20000)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Size()
	}
}

// TestSizerRecoversAfterOutage: after a sink failed long enough to drive the
// target to the floor, it climbs back to the knee quickly once Sends succeed.
func TestSizerRecoversAfterOutage(t *testing.T) {
	m := sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}
	s := NewSizer(2000, 1, 20000)
	for range 30 {
		s.Observe(s.Size(), time.Millisecond, errors.New("broker down"))
	}
	if s.Size() != 1 {
		t.Fatalf("size %d after the outage, want 1", s.Size())
	}
	var elapsed time.Duration // simulated
	for elapsed < 2*time.Second {
		n := s.Size()
		l := m.Latency(n)
		s.Observe(n, l, nil)
		elapsed += l
	}
	if n := s.Size(); n < 1700 || n > 2100 {
		t.Fatalf("size %d 2 s (simulated) after the outage, want near the knee 2000", n)
	}
}

package batch_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/internal/sinkmodel"
)

// The adaptive tests run a saturated queue's Send workers against the sink
// model in simulated time (sinkmodel.Run): every number below is simulated
// throughput or simulated time, deterministic for the seed, never wall time.

const (
	sweepMin = 1
	sweepMax = 20000
	simLen   = 20 * time.Second
)

// kafkaLike is the reference sink: 2 ms per request, 1 µs per item, and a
// knee at 2000 items beyond which items cost 11×. Best batch: the knee, at
// 500k items/s per worker.
var kafkaLike = sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}

// bestFixed sweeps fixed batch sizes on a log grid over [sweepMin, sweepMax]
// (10 per decade), then refines around the best in 1 % steps, all with the
// same simulation as the adaptive run.
func bestFixed(t *testing.T, sim sinkmodel.Sim) (size int, thr float64, table string) {
	t.Helper()
	grid := sinkmodel.LogGrid(sweepMin, sweepMax, 10)
	res := sinkmodel.Sweep(sim, grid)
	var b strings.Builder
	for i, r := range res {
		fmt.Fprintf(&b, "%d:%.0fk ", grid[i], r.Throughput/1e3)
		if r.Throughput > thr {
			size, thr = grid[i], r.Throughput
		}
	}
	var fine []int // the grid's ratio is 10^0.1 ≈ 1.26: the peak is within it
	for f := 0.78; f <= 1.27; f += 0.02 {
		if n := int(float64(size) * f); n >= sweepMin && n <= sweepMax {
			fine = append(fine, n)
		}
	}
	for i, r := range sinkmodel.Sweep(sim, fine) {
		if r.Throughput > thr {
			size, thr = fine[i], r.Throughput
		}
	}
	return size, thr, b.String()
}

func newSizer(workers int) *batch.Sizer {
	return batch.NewSizerConfig(batch.SizerConfig{Start: 1000, Min: sweepMin, Max: sweepMax, Concurrency: workers})
}

type steadyCase struct {
	name    string
	model   sinkmodel.Model
	workers int
}

func steadyCases() []steadyCase {
	var cs []steadyCase
	for _, w := range []int{1, 4} {
		cs = append(cs,
			steadyCase{fmt.Sprintf("knee2000/W%d", w), kafkaLike, w},
			steadyCase{fmt.Sprintf("knee2000-noise10%%/W%d", w), withNoise(kafkaLike, 0.1), w},
			steadyCase{fmt.Sprintf("knee500/W%d", w), withKnee(kafkaLike, 500), w},
			steadyCase{fmt.Sprintf("softknee-call10ms/W%d", w), sinkmodel.Model{PerCall: 10 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 2}, w},
			steadyCase{fmt.Sprintf("noknee/W%d", w), sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond}, w},
		)
	}
	return cs
}

func withNoise(m sinkmodel.Model, n float64) sinkmodel.Model { m.Noise = n; return m }
func withKnee(m sinkmodel.Model, k int) sinkmodel.Model      { m.Knee = k; return m }
func withCall(m sinkmodel.Model, d time.Duration) sinkmodel.Model {
	m.PerCall = d
	return m
}

// TestAdaptiveVersusBestFixed: adaptive sizing reaches >= 95 % of the
// throughput of the best fixed size over the same simulated run, warm-up
// from a start of 1000 included.
func TestAdaptiveVersusBestFixed(t *testing.T) {
	for _, c := range steadyCases() {
		t.Run(c.name, func(t *testing.T) {
			sim := sinkmodel.Sim{Workers: c.workers, Duration: simLen, Phases: []sinkmodel.Phase{{Model: c.model}}, Seed: 1, Window: 100 * time.Millisecond}
			size, best, table := bestFixed(t, sim)
			t.Logf("model %v, %d workers, %v simulated", c.model, c.workers, simLen)
			t.Logf("sweep (size:items/s): %s", table)
			r := sinkmodel.Run(sim, newSizer(c.workers))
			ratio := r.Throughput / best
			seed := sinkmodel.Run(sim, &seedRule{size: 1000, min: sweepMin, max: sweepMax})
			t.Logf("best fixed %d: %.0f items/s; adaptive: %.0f items/s (%.1f %%), mean size %.0f; the seed's ±10 %% rule: %.1f %%",
				size, best, r.Throughput, 100*ratio, r.MeanSize, 100*seed.Throughput/best)
			if ratio < 0.95 {
				t.Errorf("adaptive reached %.1f %% of the best fixed size's throughput, want >= 95 %%", 100*ratio)
			}
		})
	}
}

// TestAdaptiveReconverges changes the sink half-way through a run and
// measures, in simulated time, how long the Sizer takes to deliver >= 95 % of
// the throughput of the best fixed size for the new sink (a 100 ms window
// reaching it), and that it then stays there (the mean from change+2s to the
// end is also >= 95 %).
func TestAdaptiveReconverges(t *testing.T) {
	const change = 10 * time.Second
	const window = 100 * time.Millisecond
	cases := []struct {
		name     string
		from, to sinkmodel.Model
	}{
		{"knee2000to500", kafkaLike, withKnee(kafkaLike, 500)},
		{"knee500to2000", withKnee(kafkaLike, 500), kafkaLike},
		{"percall5x", kafkaLike, withCall(kafkaLike, 10*time.Millisecond)},
		{"percall1/5", withCall(kafkaLike, 10*time.Millisecond), kafkaLike},
		{"knee2000to500-noise10%", withNoise(kafkaLike, 0.1), withNoise(withKnee(kafkaLike, 500), 0.1)},
		{"softknee-percall5x", sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 2},
			sinkmodel.Model{PerCall: 10 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 2}},
	}
	for _, c := range cases {
		for _, w := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/W%d", c.name, w), func(t *testing.T) {
				// The best fixed size for the new sink, over a run as long
				// as the part of the adaptive run after the change.
				after := sinkmodel.Sim{Workers: w, Duration: change, Phases: []sinkmodel.Phase{{Model: c.to}}, Seed: 2}
				size, best, _ := bestFixed(t, after)
				sim := sinkmodel.Sim{Workers: w, Duration: 2 * change, Seed: 2, Window: window,
					Phases: []sinkmodel.Phase{{Model: c.from}, {At: change, Model: c.to}}}
				r := sinkmodel.Run(sim, newSizer(w))
				conv := time.Duration(-1)
				for _, win := range r.Windows {
					if win.Start >= change && win.Throughput >= 0.95*best {
						conv = win.Start + window - change
						break
					}
				}
				settled := r.ThroughputBetween(change+2*time.Second, sim.Duration)
				t.Logf("%v -> %v at %v, %d workers: best fixed for the new sink %d (%.0f items/s)", c.from, c.to, change, w, size, best)
				t.Logf("re-converged (100 ms window >= 95 %%) after %v; mean from change+2s: %.0f items/s (%.1f %%)", conv, settled, 100*settled/best)
				t.Logf("timeline around the change (size@throughput): %s", timeline(r, change-300*time.Millisecond, change+conv+500*time.Millisecond))
				if conv < 0 || conv > 2*time.Second {
					t.Errorf("re-convergence took %v of simulated time, want <= 2s", conv)
				}
				if settled < 0.95*best {
					t.Errorf("after re-converging, throughput %.1f %% of best fixed, want >= 95 %%", 100*settled/best)
				}
			})
		}
	}
}

func timeline(r sinkmodel.Result, from, to time.Duration) string {
	var b strings.Builder
	for _, w := range r.Windows {
		if w.Start >= from && w.Start < to {
			fmt.Fprintf(&b, "%v:%.0f@%.0fk ", w.Start, w.MeanSize, w.Throughput/1e3)
		}
	}
	return b.String()
}

// seedRule is the original design's rule, for comparison only: ±10 % per
// Send around the average latency.
type seedRule struct {
	size, min, max int
	avg            float64
	n              int
}

func (r *seedRule) Size() int { return r.size }

func (r *seedRule) Observe(_ int, latency time.Duration, _ error) {
	l := float64(latency)
	if r.n > 0 {
		if l < r.avg*0.9 {
			r.size += r.size / 10
		} else if l > r.avg*1.1 {
			r.size -= r.size / 10
		}
		r.size = min(max(r.size, r.min), r.max)
	}
	r.n++
	r.avg += (l - r.avg) / float64(r.n)
}

// BenchmarkAdaptiveVsBestFixed simulates 20 s of each steady sink per
// iteration and reports the Sizer's simulated throughput as a percentage of
// the best fixed size's (found by a sweep outside the timed loop). ns/op is
// the CPU cost of the simulation, Sizer included.
func BenchmarkAdaptiveVsBestFixed(b *testing.B) {
	for _, c := range steadyCases() {
		b.Run(c.name, func(b *testing.B) {
			sim := sinkmodel.Sim{Workers: c.workers, Duration: simLen, Phases: []sinkmodel.Phase{{Model: c.model}}, Seed: 1}
			var best float64
			for _, r := range sinkmodel.Sweep(sim, sinkmodel.LogGrid(sweepMin, sweepMax, 10)) {
				best = max(best, r.Throughput)
			}
			var r sinkmodel.Result
			for b.Loop() {
				r = sinkmodel.Run(sim, newSizer(c.workers))
			}
			b.ReportMetric(100*r.Throughput/best, "%best")
			b.ReportMetric(r.Throughput, "sim-items/s")
			b.ReportMetric(r.MeanSize, "mean-size")
		})
	}
}

// TestAdaptiveNoisySeeds: with ±10 % uniform latency noise the 95 % holds for
// every seed, not just a lucky one. (With ±30 % noise the worst of 20 seeds
// measured 90–94 %: noise that large needs longer epochs, SizerConfig.Window.)
func TestAdaptiveNoisySeeds(t *testing.T) {
	for _, w := range []int{1, 4} {
		worst := 2.0
		for seed := uint64(1); seed <= 10; seed++ {
			sim := sinkmodel.Sim{Workers: w, Duration: simLen, Phases: []sinkmodel.Phase{{Model: withNoise(kafkaLike, 0.1)}}, Seed: seed}
			best := 0.0
			for _, r := range sinkmodel.Sweep(sim, []int{1900, 1950, 1995, 2000}) { // around the knee, where the sweep peaks
				best = max(best, r.Throughput)
			}
			r := sinkmodel.Run(sim, newSizer(w))
			worst = min(worst, r.Throughput/best)
			if r.Throughput < 0.95*best {
				t.Errorf("W=%d seed %d: %.1f %% of the best fixed size", w, seed, 100*r.Throughput/best)
			}
		}
		t.Logf("W=%d, ±10 %% noise, seeds 1..10: worst %.1f %% of the best fixed size", w, 100*worst)
	}
}

// TestAdaptiveReconvergesNoisySeeds: the 2 s re-convergence holds for every
// seed with ±10 % latency noise, for the two changes the design names.
func TestAdaptiveReconvergesNoisySeeds(t *testing.T) {
	const change = 10 * time.Second
	pairs := []struct {
		name     string
		from, to sinkmodel.Model
	}{
		{"knee2000to500", withNoise(kafkaLike, 0.1), withNoise(withKnee(kafkaLike, 500), 0.1)},
		{"percall5x", withNoise(kafkaLike, 0.1), withNoise(withCall(kafkaLike, 10*time.Millisecond), 0.1)},
	}
	for _, p := range pairs {
		for _, w := range []int{1, 4} {
			worst := time.Duration(0)
			for seed := uint64(1); seed <= 10; seed++ {
				after := sinkmodel.Sim{Workers: w, Duration: change + 4*time.Second, Phases: []sinkmodel.Phase{{Model: p.to}}, Seed: seed, Window: 100 * time.Millisecond}
				best := 0.0
				for _, r := range sinkmodel.Sweep(after, []int{480, 490, 495, 500, 1950, 1980, 1995, 2000}) { // the peaks of these sinks
					best = max(best, r.Throughput)
				}
				sim := after
				sim.Phases = []sinkmodel.Phase{{Model: p.from}, {At: change, Model: p.to}}
				r := sinkmodel.Run(sim, newSizer(w))
				conv := time.Duration(-1)
				for _, win := range r.Windows {
					if win.Start >= change && win.Throughput >= 0.95*best {
						conv = win.Start + 100*time.Millisecond - change
						break
					}
				}
				if conv < 0 || conv > 2*time.Second {
					t.Errorf("%s W=%d seed %d: re-convergence took %v of simulated time, want <= 2s", p.name, w, seed, conv)
				}
				worst = max(worst, conv)
			}
			t.Logf("%s, W=%d, ±10 %% noise, seeds 1..10: worst re-convergence %v (simulated)", p.name, w, worst)
		}
	}
}

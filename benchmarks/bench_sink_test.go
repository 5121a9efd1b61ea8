package benchmarks

import (
	"fmt"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/internal/sinkmodel"
)

// The Sink benchmarks compare the queue's adaptive batch sizing with fixed
// sizes on the modelled Kafka-like sink of internal/sinkmodel, in simulated
// time: saturated Send workers, 2 ms per call, 1 µs per item up to a knee at
// 2000 items, 11× per item beyond it. items/s and ns/item in these rows are
// simulated figures, deterministic for the seed, not wall-clock ones; ns/op
// is the wall time of one simulation.

const (
	sinkSimLen  = 20 * time.Second
	sinkWindow  = 100 * time.Millisecond
	sinkChange  = 10 * time.Second
	sinkWorkers = 1
	sweepLo     = 1
	sweepHi     = 20000
)

var kafkaModel = sinkmodel.Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}

func newAdaptive() sinkmodel.Policy {
	return batch.NewSizerConfig(batch.SizerConfig{Start: 1000, Min: sweepLo, Max: sweepHi, Concurrency: sinkWorkers})
}

// bestFixedSize sweeps fixed sizes (10 per decade, then ±25 % in 1 % steps)
// and returns the best and its simulated throughput.
func bestFixedSize(sim sinkmodel.Sim) (int, float64) {
	size, thr := 0, 0.0
	grid := sinkmodel.LogGrid(sweepLo, sweepHi, 10)
	for i, r := range sinkmodel.Sweep(sim, grid) {
		if r.Throughput > thr {
			size, thr = grid[i], r.Throughput
		}
	}
	var fine []int
	for f := 0.75; f <= 1.25; f += 0.01 {
		if n := int(float64(size) * f); n >= sweepLo && n <= sweepHi {
			fine = append(fine, n)
		}
	}
	for i, r := range sinkmodel.Sweep(sim, fine) {
		if r.Throughput > thr {
			size, thr = fine[i], r.Throughput
		}
	}
	return size, thr
}

func reportSim(b *testing.B, r sinkmodel.Result) {
	b.ReportMetric(r.Throughput, "items/s")
	b.ReportMetric(1e9/r.Throughput, "ns/item")
	b.ReportMetric(r.MeanSize, "items/batch")
}

// BenchmarkSink: steady sink (scenario=sink-steady) and a sink whose knee
// drops from 2000 to 500 items half-way (scenario=sink-change, throughput
// after the change; the adaptive row also reports how long it took to get
// a 100 ms window to 95 % of the best fixed size for the new sink).
func BenchmarkSink(b *testing.B) {
	steady := sinkmodel.Sim{Workers: sinkWorkers, Duration: sinkSimLen, Phases: []sinkmodel.Phase{{Model: kafkaModel}}, Seed: 1, Window: sinkWindow}
	newModel := kafkaModel
	newModel.Knee = 500
	after := sinkmodel.Sim{Workers: sinkWorkers, Duration: sinkSimLen, Phases: []sinkmodel.Phase{{Model: newModel}}, Seed: 2, Window: sinkWindow}
	change := after
	change.Phases = []sinkmodel.Phase{{Model: kafkaModel}, {At: sinkChange, Model: newModel}}

	type policy struct {
		lib string
		new func(b *testing.B, sim sinkmodel.Sim) sinkmodel.Policy
	}
	fixed := func(n int) policy {
		return policy{fmt.Sprintf("fixed-%d", n), func(*testing.B, sinkmodel.Sim) sinkmodel.Policy { return sinkmodel.Fixed(n) }}
	}
	bestFixed := policy{"fixed-best", func(b *testing.B, sim sinkmodel.Sim) sinkmodel.Policy {
		size, _ := bestFixedSize(sim)
		b.ReportMetric(float64(size), "best-size")
		return sinkmodel.Fixed(size)
	}}
	policies := []policy{
		{"vinequeue-adaptive", func(*testing.B, sinkmodel.Sim) sinkmodel.Policy { return newAdaptive() }},
		fixed(100), fixed(1000), fixed(10000), bestFixed,
	}

	b.Run("scenario=sink-steady", func(b *testing.B) {
		for _, p := range policies {
			b.Run("lib="+p.lib, func(b *testing.B) {
				var r sinkmodel.Result
				for range b.N {
					r = sinkmodel.Run(steady, p.new(b, steady))
				}
				reportSim(b, r)
			})
		}
	})
	b.Run("scenario=sink-change", func(b *testing.B) {
		for _, p := range policies {
			b.Run("lib="+p.lib, func(b *testing.B) {
				var r sinkmodel.Result
				for range b.N {
					// A fixed size cannot adapt: it is chosen for the sink before the change
					// (fixed-best uses the best size for the sink after it, the ideal).
					sim := steady
					if p.lib == "fixed-best" {
						sim = after
					}
					r = sinkmodel.Run(change, p.new(b, sim))
				}
				thr := r.ThroughputBetween(sinkChange, change.Duration)
				b.ReportMetric(thr, "items/s")
				b.ReportMetric(1e9/thr, "ns/item")
				b.ReportMetric(r.MeanSize, "items/batch")
				if p.lib == "vinequeue-adaptive" {
					_, best := bestFixedSize(after)
					conv := -1.0
					for _, w := range r.Windows {
						if w.Start >= sinkChange && w.Throughput >= 0.95*best {
							conv = float64(w.Start+sinkWindow-sinkChange) / float64(time.Millisecond)
							break
						}
					}
					b.ReportMetric(conv, "readapt-ms")
				}
			})
		}
	})
}

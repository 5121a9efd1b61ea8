package sinkmodel

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy chooses batch sizes from observed Send latencies. *batch.Sizer
// satisfies it; so does Fixed.
type Policy interface {
	Size() int
	Observe(items int, latency time.Duration, err error)
}

// Fixed is the Policy of a constant batch size.
type Fixed int

// Size returns f (at least 1).
func (f Fixed) Size() int { return max(int(f), 1) }

// Observe ignores the observation.
func (Fixed) Observe(int, time.Duration, error) {}

// Phase makes Model the sink's behaviour from simulated time At on.
type Phase struct {
	At    time.Duration
	Model Model
}

// Sim describes one discrete-event simulation: Workers senders, each sending
// back to back (the queue is saturated, so a batch of the policy's size is
// always ready) to a sink that follows Phases, for Duration of simulated time.
// Everything is deterministic for a given Seed: no wall clock is read.
type Sim struct {
	Workers  int           // concurrent senders; default 1
	Duration time.Duration // simulated time
	Phases   []Phase       // sorted by At; the first applies from time 0 whatever its At
	Seed     uint64        // noise
	// Window is the resolution of Result.Windows; 0 means no timeline.
	Window time.Duration
}

// Result is what a simulation delivered.
type Result struct {
	Duration time.Duration
	// Items delivered within Duration. A Send still in flight at the end
	// counts pro rata to the part of its latency inside Duration, so a
	// policy of long Sends is neither favoured nor penalised by the cut-off.
	Items      float64
	Sends      int     // Sends started
	MeanSize   float64 // items per Send started
	Throughput float64 // Items per simulated second
	Windows    []Window
}

// Window is the delivery of one slice of simulated time.
type Window struct {
	Start      time.Duration
	Throughput float64 // items/s, pro rata over each Send's latency
	MeanSize   float64 // mean size of the Sends started in the window
}

// ThroughputBetween returns the mean throughput of the windows starting in
// [from, to).
func (r Result) ThroughputBetween(from, to time.Duration) float64 {
	sum, n := 0.0, 0
	for _, w := range r.Windows {
		if w.Start >= from && w.Start < to {
			sum += w.Throughput
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// Run simulates sim with policy p. A Send's latency is fixed by the phase in
// force when it starts; p.Observe is called when it completes, in completion
// order (ties by worker), and the worker at once starts its next Send of
// p.Size() items, as a saturated queue's workers do.
func Run(sim Sim, p Policy) Result {
	if sim.Duration <= 0 {
		return Result{}
	}
	workers := max(sim.Workers, 1)
	end := float64(sim.Duration)
	rng := rand.New(rand.NewPCG(sim.Seed, 0x9e3779b97f4a7c15))

	var windows []windowAcc
	if sim.Window > 0 {
		windows = make([]windowAcc, (sim.Duration+sim.Window-1)/sim.Window)
	}
	type inflight struct {
		start, end float64
		items      int
	}
	w := make([]inflight, workers)
	res := Result{Duration: sim.Duration}
	var sizeSum float64

	start := func(i int, now float64) {
		n := max(p.Size(), 1)
		m := modelAt(sim.Phases, time.Duration(now))
		lat := m.noisy(n, rng.Float64())
		w[i] = inflight{start: now, end: now + lat, items: n}
		res.Sends++
		sizeSum += float64(n)
		if windows != nil {
			k := int(now / float64(sim.Window))
			windows[k].sends++
			windows[k].sizeSum += float64(n)
		}
	}
	for i := range w {
		start(i, 0)
	}
	for {
		i := 0
		for j := 1; j < workers; j++ {
			if w[j].end < w[i].end {
				i = j
			}
		}
		f := w[i]
		if math.IsInf(f.end, 1) {
			break // every worker is retired
		}
		res.Items += deliver(windows, sim.Window, f.start, f.end, end, f.items)
		if f.end >= end {
			w[i] = inflight{start: math.Inf(1), end: math.Inf(1)} // retire the worker
			continue
		}
		p.Observe(f.items, time.Duration(f.end-f.start), nil)
		start(i, f.end)
	}
	if res.Sends > 0 {
		res.MeanSize = sizeSum / float64(res.Sends)
	}
	if sim.Duration > 0 {
		res.Throughput = res.Items / sim.Duration.Seconds()
	}
	for k, acc := range windows {
		win := Window{Start: time.Duration(k) * sim.Window}
		length := min(sim.Window, sim.Duration-win.Start)
		win.Throughput = acc.items / length.Seconds()
		if acc.sends > 0 {
			win.MeanSize = acc.sizeSum / float64(acc.sends)
		}
		res.Windows = append(res.Windows, win)
	}
	return res
}

type windowAcc struct {
	items   float64
	sizeSum float64
	sends   int
}

// deliver spreads the items of a Send over [start, stop) evenly, credits the
// part before end to the windows, and returns it.
func deliver(windows []windowAcc, window time.Duration, start, stop, end float64, items int) float64 {
	rate := float64(items) / (stop - start)
	stop = min(stop, end)
	if stop <= start {
		return 0
	}
	if windows != nil {
		wl := float64(window)
		for k := int(start / wl); k < len(windows) && float64(k)*wl < stop; k++ {
			lo := max(start, float64(k)*wl)
			hi := min(stop, float64(k+1)*wl)
			if hi > lo {
				windows[k].items += rate * (hi - lo)
			}
		}
	}
	return rate * (stop - start)
}

func modelAt(phases []Phase, t time.Duration) Model {
	if len(phases) == 0 {
		return Model{PerCall: time.Millisecond, PerItem: time.Microsecond}
	}
	m := phases[0].Model
	for _, ph := range phases[1:] {
		if ph.At > t {
			break
		}
		m = ph.Model
	}
	return m
}

// Sweep runs sim once per size with Fixed(size) and returns the results in
// the order of sizes.
func Sweep(sim Sim, sizes []int) []Result {
	out := make([]Result, len(sizes))
	for i, n := range sizes {
		out[i] = Run(sim, Fixed(n))
	}
	return out
}

// LogGrid returns about perDecade sizes per decade from lo to hi (both
// included), rounded to integers, without duplicates.
func LogGrid(lo, hi, perDecade int) []int {
	lo, hi = max(lo, 1), max(hi, lo)
	var out []int
	for k := 0; ; k++ {
		f := float64(lo) * math.Pow(10, float64(k)/float64(max(perDecade, 1)))
		n := int(f + 0.5)
		if n >= hi {
			break
		}
		if len(out) == 0 || n > out[len(out)-1] {
			out = append(out, n)
		}
	}
	return append(out, hi)
}

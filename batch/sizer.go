package batch

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// SizerConfig configures a Sizer. Zero fields select defaults.
type SizerConfig struct {
	// Start is the first target; clamped into [Min, Max]. Default 1000.
	Start int
	// Min and Max bound the target; Min defaults to 1 (and is raised to 1),
	// Max defaults to max(Start, 10000) and is raised to Min.
	Min, Max int
	// Concurrency is how many batches can be in flight when the target
	// changes: the queue's Workers plus any batches already assembled and
	// waiting for a worker. After each change the Sizer ignores that many
	// observations, which were sized under the old target. Default 1.
	Concurrency int
	// Window is the number of observations that make up one measurement
	// epoch. Longer windows average out noisy latencies but react slower.
	// Default 8.
	Window int
	// LatencyWeight (ε) is the price of batch size in the objective, see the
	// package documentation: the Sizer stops growing a batch once doubling it
	// would cut the per-item latency by less than about ε·ln 2 (1.4 % for the
	// default 0.02), as such a gain is not worth doubling how long items wait
	// for their batch. 0 selects 0.02; a negative value means pure throughput.
	LatencyWeight float64
}

const (
	defaultStart         = 1000
	defaultMax           = 10000
	defaultWindow        = 8
	defaultLatencyWeight = 0.02

	// Step sizes are in ln(items): 0.02 ≈ 2 %, 0.1 ≈ 10 %, 0.7 ≈ ×2.
	minStep   = 0.02
	firstStep = 0.1
	maxStep   = 0.7
	stepGrow  = 2.0 // a probe won, or noise hid its effect: go further
	stepDecay = 0.5 // a probe was clearly worse: the optimum is nearer

	// cutLog is the multiplicative decrease (×0.5) applied on a Send error or
	// a latency surge.
	cutLog = math.Ln2
	// A surge is an observation whose latency exceeds surgeFactor times what
	// the previous epoch predicts for its size; surgeConfirm of them in one
	// epoch trigger a cut, so one outlier (a GC pause, a leader election) does not.
	surgeFactor  = 2.0
	surgeConfirm = 2
	// Probes closer than this to the base (in ln) measure nothing.
	minInfo = 0.005
	// A probe is abandoned after earlyMin observations if its score is
	// already earlyMargin (≈ 5 %) worse than the base's.
	earlyMin    = 3
	earlyMargin = 0.05
	// A re-measured base that moved by more than changeSigmas standard
	// errors plus changeFloor (in ln) means the sink changed.
	changeSigmas = 3
	changeFloor  = 0.02
	// maxHold bounds the epochs a converged Sizer waits between probes.
	maxHold = 8
	// Batches smaller than the target by more than this (in ln) mean the
	// target is not what limits them: the input rate or FlushInterval is.
	bindSlack = 0.1
)

// Sizer chooses the size of the next batch from the latencies of past Sends.
// See the package documentation for the algorithm.
//
// Size and Observe are safe for concurrent use: the collector calls Size while
// every Send worker calls Observe. Size is a single atomic load; Observe takes
// a mutex for a few dozen nanoseconds and never allocates.
type Sizer struct {
	size atomic.Int64 // published target, read by Size without the lock

	mu sync.Mutex

	// Immutable after construction.
	min, max       int
	minLog, maxLog float64
	window         int
	concurrency    int
	latencyWeight  float64

	// The search, in ln(items) so that steps are relative.
	logN     float64    // the target now: the base or a probe beside it
	base     float64    // the accepted size
	baseJ    float64    // the objective measured at base
	baseVar  float64    // the variance of baseJ (the squared standard error)
	baseOK   bool       // baseJ describes the sink as it is now
	probing  bool       // logN is a probe at base+dir·steps[side(dir)]
	steps    [2]float64 // probe distance towards smaller [0] and bigger [1] sizes
	dir      int        // direction of the next probe: +1 grow, -1 shrink
	failures int        // probes since the last success; both sides tried at 2
	// inconclusive: a probe since the last success was neither better nor
	// clearly worse than the base.
	inconclusive bool
	hold         int // epochs to stay at base, once converged, between probes
	holdLeft     int

	settle int // observations left to ignore after a move

	// The current epoch.
	count    int
	sumLat   float64 // nanoseconds
	sumItems float64
	sumLogN  float64
	sumLogC  float64 // Σ ln(latency/items), and below its square: the spread
	sumLogC2 float64 // of one epoch's score, to tell a real gain from noise
	surges   int

	// What the last epoch measured, for the surge check.
	lastOK  bool
	lastN   float64 // mean batch size
	lastLat float64 // mean latency per Send (ns)
}

// NewSizer returns a Sizer with the given start, min and max and the defaults
// of SizerConfig otherwise. Out-of-range arguments are clamped, never rejected:
// the target is always within [max(min,1), max(max,min,1)].
func NewSizer(start, min, max int) *Sizer {
	return NewSizerConfig(SizerConfig{Start: start, Min: min, Max: max})
}

// NewSizerConfig returns a Sizer configured by cfg (see SizerConfig for the
// defaults and clamping).
func NewSizerConfig(cfg SizerConfig) *Sizer {
	if cfg.Start <= 0 {
		cfg.Start = defaultStart
	}
	cfg.Min = max(cfg.Min, 1)
	if cfg.Max <= 0 {
		cfg.Max = max(cfg.Start, defaultMax)
	}
	cfg.Max = max(cfg.Max, cfg.Min)
	cfg.Start = min(max(cfg.Start, cfg.Min), cfg.Max)
	if cfg.Window <= 0 {
		cfg.Window = defaultWindow
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	switch {
	case cfg.LatencyWeight == 0 || math.IsNaN(cfg.LatencyWeight):
		cfg.LatencyWeight = defaultLatencyWeight
	case cfg.LatencyWeight < 0:
		cfg.LatencyWeight = 0
	}
	s := &Sizer{
		min:           cfg.Min,
		max:           cfg.Max,
		minLog:        math.Log(float64(cfg.Min)),
		maxLog:        math.Log(float64(cfg.Max)),
		window:        cfg.Window,
		concurrency:   cfg.Concurrency,
		latencyWeight: min(cfg.LatencyWeight, 1),
		steps:         [2]float64{firstStep, firstStep},
		dir:           +1,
	}
	s.base = math.Log(float64(cfg.Start))
	s.setTargetLocked(s.base)
	return s
}

// Size returns the current target batch size, always within [Min, Max].
func (s *Sizer) Size() int { return int(s.size.Load()) }

// Min returns the lower bound of the target.
func (s *Sizer) Min() int { return s.min }

// Max returns the upper bound of the target, the hard cap of a batch.
func (s *Sizer) Max() int { return s.max }

// Observe reports one finished Send of items items that took latency and
// returned err. Call it after every attempt, failed ones included. A failed
// batch caps the target at half its size, on the view that a sink that fails
// is often one that is overloaded or rejects large requests; a failure of a
// batch already bigger than twice the target (a retry, or one sized before
// an earlier cut) teaches nothing new and changes nothing. So a sink that
// keeps failing walks the target down to Min one halving per new batch,
// while the retries of one batch cut it once. Calls with items <= 0 are
// ignored.
func (s *Sizer) Observe(items int, latency time.Duration, err error) {
	if items <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if to := math.Log(float64(items)) - cutLog; to < s.base-minInfo || to < s.logN-minInfo {
			s.cutLocked(to)
		}
		return
	}
	if s.settle > 0 {
		s.settle--
		return
	}
	lat := max(float64(latency), 1) // a zero latency (coarse clock) must not give ln 0
	n := float64(items)
	if s.lastOK && lat > surgeFactor*s.lastLat*max(1, n/s.lastN) {
		// Below the knee latency grows at most linearly with size, so the
		// last epoch bounds what this size should take. Twice that, twice
		// in an epoch, is not noise: the sink changed or we walked off its knee.
		s.surges++
		if s.surges >= surgeConfirm {
			if s.probing && s.baseOK {
				// The probe walked off the knee: a failed probe, ended early.
				s.resetEpochLocked()
				s.probeFailedLocked(true)
				return
			}
			s.cutLocked(s.base - cutLog)
			return
		}
	}
	s.count++
	s.sumLat += lat
	s.sumItems += n
	s.sumLogN += math.Log(n)
	lc := math.Log(lat / n)
	s.sumLogC += lc
	s.sumLogC2 += lc * lc
	if s.count >= s.window {
		s.endEpochLocked()
		return
	}
	if s.probing && s.baseOK && s.count >= earlyMin {
		// A probe that is clearly worse half-way through its epoch is
		// abandoned: a bad probe costs throughput for as long as it runs.
		k := float64(s.count)
		j := math.Log(s.sumLat/s.sumItems) + s.latencyWeight*s.sumLogN/k
		if j > s.baseJ+earlyMargin {
			s.resetEpochLocked()
			s.probeFailedLocked(true)
		}
	}
}

// endEpochLocked scores the epoch just finished and moves the target.
//
// The score is the objective J = ln(latency per item) + ε·ln(size): per-item
// cost, i.e. inverse throughput, plus a small price on size because bigger
// batches make items wait longer. The search is a one-dimensional pattern
// search on ln(size): probe one step beside the base; a probe better by more
// than the noise becomes the base and that side's step doubles; otherwise the
// other side is tried, and after both the base is held for a growing number
// of epochs before probing again, so a converged Sizer spends little time off
// its optimum yet keeps re-measuring it and notices when the sink changes.
func (s *Sizer) endEpochLocked() {
	logN := s.sumLogN / float64(s.count)
	j := math.Log(s.sumLat/s.sumItems) + s.latencyWeight*logN
	s.lastOK = true
	s.lastN = math.Exp(logN)
	s.lastLat = s.sumLat / float64(s.count)
	// The squared standard error of the epoch's mean ln(latency per item).
	k := float64(s.count)
	mean := s.sumLogC / k
	jVar := max(s.sumLogC2/k-mean*mean, 0) / max(k-1, 1)
	s.resetEpochLocked()

	if logN < math.Log(float64(s.Size()))-bindSlack {
		// The batches are smaller than the target: the input rate or the
		// flush interval limits them, not the Sizer. Probing would measure
		// nothing, and a target far above what is sent would release
		// oversized batches when the load returns, so the base is pulled
		// down to what is really sent and re-measured.
		s.base = max(min(s.base, logN+bindSlack), s.minLog)
		s.baseOK = false
		s.probing = false
		s.setTargetLocked(s.base)
		return
	}
	switch {
	case !s.probing || !s.baseOK:
		// A measurement of the base.
		if s.baseOK && math.Abs(j-s.baseJ) > changeSigmas*math.Sqrt(s.baseVar+jVar)+changeFloor {
			// The base itself scores differently now: the sink changed.
			// Search afresh instead of waiting out the hold.
			s.steps = [2]float64{firstStep, firstStep}
			s.hold, s.holdLeft = 0, 0
			s.failures = 0
		}
		s.baseOK, s.baseJ, s.baseVar = true, j, jVar
		s.probing = false
		if s.holdLeft > 0 {
			s.holdLeft--
			return
		}
	case j < s.baseJ-math.Sqrt(s.baseVar+jVar):
		// The probe is better, by more than one standard error of the
		// difference (so noise rarely moves the base): it becomes the base,
		// and the optimum is likely further that way, so the step doubles.
		s.base, s.baseJ, s.baseVar = s.logN, j, jVar
		s.steps[side(s.dir)] = min(s.steps[side(s.dir)]*stepGrow, maxStep)
		s.failures = 0
		s.hold = 0
	default:
		s.probeFailedLocked(j > s.baseJ+math.Sqrt(s.baseVar+jVar))
		return
	}
	s.probeLocked()
}

// probeFailedLocked records a probe that did not beat the base — clearly
// worse, or inconclusive — and tries the other side. A clearly worse side's
// step halves (the optimum is nearer); an inconclusive side's step doubles (a
// longer step gives a bigger signal than the noise). After both sides the
// base is held for a growing number of epochs (reset by the next success),
// which bounds the share of time spent on probes that do not pay.
func (s *Sizer) probeFailedLocked(worse bool) {
	// Each side has its own step: at a sharp knee a probe above it is
	// clearly worse at once while one below barely differs, so the step
	// above shrinks and the one below grows, and neither costs much.
	d := side(s.dir)
	if worse {
		s.steps[d] = max(s.steps[d]*stepDecay, minStep)
	} else {
		s.steps[d] = min(s.steps[d]*stepGrow, maxStep)
	}
	s.failures++
	if !worse {
		s.inconclusive = true
	}
	s.dir = -s.dir
	if s.failures < 2 {
		s.probeLocked()
		return
	}
	s.failures = 0
	if s.inconclusive {
		// Noise hid a side: the search is not over, keep the pace.
		s.hold = max(s.hold/2, 1)
	} else {
		s.hold = min(max(2*s.hold, 1), maxHold)
	}
	s.inconclusive = false
	s.holdLeft = s.hold
	s.probing = false
	s.setTargetLocked(s.base)
}

func side(dir int) int {
	if dir > 0 {
		return 1
	}
	return 0
}

// probeLocked moves the target one step beside the base in direction dir; at
// a bound, where that is the base itself, the other side is probed instead.
func (s *Sizer) probeLocked() {
	for range 2 {
		p := min(max(s.base+float64(s.dir)*s.steps[side(s.dir)], s.minLog), s.maxLog)
		if math.Abs(p-s.base) >= minInfo {
			s.probing = true
			s.setTargetLocked(p)
			return
		}
		s.dir = -s.dir
	}
	s.probing = false // min == max: nothing to search
	s.setTargetLocked(s.base)
}

// cutLocked moves the base down to ln(size) to and forgets what was
// measured: it no longer describes the sink.
func (s *Sizer) cutLocked(to float64) {
	s.base = max(min(to, s.base), s.minLog)
	s.baseOK = false
	s.probing = false
	s.lastOK = false
	s.steps = [2]float64{firstStep, firstStep}
	// Probe upwards first: if the knee moved down the probe is abandoned
	// after a few Sends; if the per-call cost rose (a surge too), bigger
	// batches are the remedy and the cut is undone quickly.
	s.dir = +1
	s.failures = 0
	s.hold, s.holdLeft = 0, 0
	s.setTargetLocked(s.base)
	s.resetEpochLocked()
}

func (s *Sizer) setTargetLocked(logN float64) {
	s.logN = logN
	n := int(math.Round(math.Exp(logN)))
	s.size.Store(int64(min(max(n, s.min), s.max)))
}

func (s *Sizer) resetEpochLocked() {
	s.settle = s.concurrency
	s.count = 0
	s.sumLat, s.sumItems, s.sumLogN = 0, 0, 0
	s.sumLogC, s.sumLogC2 = 0, 0
	s.surges = 0
}

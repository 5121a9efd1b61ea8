package governor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options fields left zero.
const (
	DefaultSoft            = 0.80
	DefaultHard            = 0.95
	DefaultHysteresis      = 0.05
	DefaultRefreshInterval = time.Second
	DefaultMinDelay        = 50 * time.Microsecond
	DefaultMaxDelay        = 2 * time.Millisecond
	DefaultWarnInterval    = 10 * time.Second
)

var (
	// ErrInvalidOptions is returned by New; the message names the field.
	ErrInvalidOptions = errors.New("governor: invalid options")
	// ErrClosed is returned by WaitBelowSoft once Close has been called.
	ErrClosed = errors.New("governor: closed")
)

// heapMetric is the runtime/metrics sample used with IncludeHeap; see doc.go
// for why this one.
const heapMetric = "/memory/classes/heap/objects:bytes"

// Options configures a Governor. The zero value is valid: detected limit,
// soft 80 %, hard 95 %, queue bytes only.
type Options struct {
	// Limit in bytes; 0 detects it (DetectLimit) and re-detects it every
	// RefreshInterval.
	Limit int64
	// Soft and Hard are fractions of the limit, 0 < Soft < Hard <= 1;
	// defaults 0.80 and 0.95.
	Soft, Hard float64
	// Hysteresis is the margin, as a fraction of the limit, by which usage
	// must fall below a threshold before the level drops: Hard is left below
	// Hard-Hysteresis, Soft below Soft-Hysteresis. 0 means DefaultHysteresis
	// (0.05); a negative value disables it. Must be smaller than Soft.
	Hysteresis float64
	// IncludeHeap counts the Go heap (runtime/metrics heapMetric) rather than
	// only the bytes the queue reports; sampled on Refresh.
	IncludeHeap bool
	// Root is prefixed to every file read during detection; "" means "/".
	Root string
	// Logger receives the rate-limited pressure warnings; nil discards.
	Logger *slog.Logger
	// OnLevelChange is called after each level change, in order, one call at
	// a time, with no governor lock held (it may call back into the Governor,
	// but must not block for long: it runs on the goroutine that caused the
	// change, a queue slow path or Refresh).
	OnLevelChange func(from, to Level)
	// RefreshInterval is the period of Run and the minimum interval between
	// limit re-reads by Refresh; default 1s.
	RefreshInterval time.Duration
	// MinDelay and MaxDelay bound Delay: MinDelay on entering Soft, growing
	// linearly to MaxDelay at Hard. Defaults 50µs and 2ms.
	MinDelay, MaxDelay time.Duration
	// WarnInterval is the minimum interval between two warnings for the same
	// level; default 10s.
	WarnInterval time.Duration
}

func (o *Options) normalize() error {
	if o.Limit < 0 {
		return fmt.Errorf("%w: Limit: %d is negative", ErrInvalidOptions, o.Limit)
	}
	if o.Soft == 0 {
		o.Soft = DefaultSoft
	}
	if o.Hard == 0 {
		o.Hard = DefaultHard
	}
	if !(o.Soft > 0 && o.Soft < o.Hard && o.Hard <= 1) {
		return fmt.Errorf("%w: Soft, Hard: need 0 < Soft < Hard <= 1, have %v, %v", ErrInvalidOptions, o.Soft, o.Hard)
	}
	switch {
	case o.Hysteresis == 0:
		o.Hysteresis = DefaultHysteresis
	case o.Hysteresis < 0:
		o.Hysteresis = 0
	}
	if o.Hysteresis >= o.Soft {
		return fmt.Errorf("%w: Hysteresis: %v must be smaller than Soft %v", ErrInvalidOptions, o.Hysteresis, o.Soft)
	}
	if o.RefreshInterval < 0 || o.MinDelay < 0 || o.MaxDelay < 0 || o.WarnInterval < 0 {
		return fmt.Errorf("%w: RefreshInterval, MinDelay, MaxDelay, WarnInterval must not be negative", ErrInvalidOptions)
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.MinDelay == 0 {
		o.MinDelay = DefaultMinDelay
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = max(DefaultMaxDelay, o.MinDelay)
	}
	if o.MinDelay > o.MaxDelay {
		return fmt.Errorf("%w: MinDelay: %v exceeds MaxDelay %v", ErrInvalidOptions, o.MinDelay, o.MaxDelay)
	}
	if o.WarnInterval == 0 {
		o.WarnInterval = DefaultWarnInterval
	}
	return nil
}

// thresholds is an immutable snapshot derived from one limit; replaced
// wholesale (atomic.Pointer) when the limit changes.
type thresholds struct {
	limit              Limit
	soft, hard         int64 // enter Soft / Hard at or above these
	softExit, hardExit int64 // leave Soft / Hard below these
}

func newThresholds(lim Limit, o *Options) *thresholds {
	// Rounded, so that 1000 bytes at 0.95-0.05 is 900, not 899.
	at := func(frac float64) int64 { return int64(math.Round(float64(lim.Bytes) * frac)) }
	return &thresholds{
		limit:    lim,
		soft:     at(o.Soft),
		hard:     at(o.Hard),
		softExit: at(o.Soft - o.Hysteresis),
		hardExit: at(o.Hard - o.Hysteresis),
	}
}

// next is the level for usage total, given the current level cur: the
// hysteresis lives here.
func (t *thresholds) next(cur Level, total int64) Level {
	switch {
	case total >= t.hard:
		return LevelHard
	case cur == LevelHard && total >= t.hardExit:
		return LevelHard
	case total >= t.soft:
		return LevelSoft
	case cur >= LevelSoft && total >= t.softExit:
		return LevelSoft
	}
	return LevelNormal
}

// transition is a level change waiting to be reported.
type transition struct {
	from, to Level
}

// maxPending bounds the queue of unreported transitions; beyond it the
// newest ones are merged (from of the older, to of the newer), which keeps
// from/to chaining correctly and only loses intermediate flaps.
const maxPending = 256

// Stats is a snapshot of the governor.
type Stats struct {
	Limit     int64  // bytes
	Source    Source // where Limit came from
	LimitPath string // file Limit was read from, if any
	BytesHeld int64  // reported by the queue (Add)
	HeapBytes int64  // last heap sample; 0 without IncludeHeap
	Used      int64  // what is compared to the thresholds
	Soft      int64  // bytes: the soft threshold
	Hard      int64  // bytes: the hard threshold
	Level     Level
}

// Governor tracks the bytes a queue holds against a memory limit and turns
// them into a pressure Level. See the package documentation.
type Governor struct {
	// Hot fields, read or written by Add.
	held  atomic.Int64 // bytes the queue reports holding
	other atomic.Int64 // heap bytes not held by the queue, at the last sample (IncludeHeap)
	level atomic.Int32
	th    atomic.Pointer[thresholds]

	opts Options
	det  detector
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex    // serializes level stores; guards belowCh, pending
	belowCh  chan struct{} // closed while the level is Normal; replaced on leaving Normal
	pending  []transition
	closed   chan struct{}
	closeOne sync.Once

	hookMu sync.Mutex // held by the one goroutine reporting transitions

	refreshMu     sync.Mutex // serializes Refresh: samples, lastLimitRead
	samples       []metrics.Sample
	lastLimitRead time.Time
	heap          atomic.Int64

	lastWarn [3]atomic.Int64 // per level, unix nanos of the last warning
	warned   atomic.Bool     // a warning was logged since the level was last Normal
}

// New detects the limit (unless Options.Limit is set) and returns a Governor
// at LevelNormal with nothing held.
func New(opts Options) (*Governor, error) {
	return newGovernor(opts, newDetector(opts.Root), time.Now)
}

func newGovernor(opts Options, det detector, now func() time.Time) (*Governor, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	g := &Governor{
		opts:    opts,
		det:     det,
		log:     opts.Logger,
		now:     now,
		belowCh: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	close(g.belowCh)
	lim := Limit{Bytes: opts.Limit, Source: SourceConfig}
	if opts.Limit == 0 {
		var err error
		if lim, err = det.detect(); err != nil {
			return nil, fmt.Errorf("governor: %w (findings: %v)", err, lim.Findings)
		}
	}
	g.lastLimitRead = now()
	g.th.Store(newThresholds(lim, &g.opts))
	if opts.IncludeHeap {
		g.samples = []metrics.Sample{{Name: heapMetric}}
		g.sampleHeap()
		g.reconcile() // the heap alone may already be above a threshold
		g.report()
	}
	return g, nil
}

// used is what the thresholds compare against: the queue's bytes plus, with
// IncludeHeap, the rest of the heap. The heap already contains the queue's
// items, so adding both would count them twice; other is the heap minus what
// the queue held when the heap was sampled, and held moves in between.
func (g *Governor) used() int64 {
	return max(g.held.Load(), 0) + g.other.Load()
}

// Add records that the queue now holds n more bytes (n < 0: fewer) and
// returns the level after the change. Cheap: an atomic add and a few loads;
// the governor lock is taken only when a threshold is crossed.
func (g *Governor) Add(n int64) Level {
	total := g.held.Add(n)
	t := g.th.Load()
	cur := Level(g.level.Load())
	if t.next(cur, max(total, 0)+g.other.Load()) == cur {
		return cur
	}
	g.reconcile()
	g.report()
	return Level(g.level.Load())
}

// Sub is Add(-n).
func (g *Governor) Sub(n int64) Level { return g.Add(-n) }

// Level is the current level: one atomic load.
func (g *Governor) Level() Level { return Level(g.level.Load()) }

// Delay is how long the queue's slow path should wait at the current
// pressure: 0 at Normal, MinDelay on entering Soft growing linearly with
// usage to MaxDelay at Hard, MaxDelay at Hard (where the Policy decides
// whether to wait at all).
func (g *Governor) Delay() time.Duration {
	switch Level(g.level.Load()) {
	case LevelNormal:
		return 0
	case LevelHard:
		return g.opts.MaxDelay
	}
	t := g.th.Load()
	span := t.hard - t.soft
	frac := 0.0
	if span > 0 {
		frac = float64(g.used()-t.soft) / float64(span)
	}
	frac = min(max(frac, 0), 1)
	return g.opts.MinDelay + time.Duration(frac*float64(g.opts.MaxDelay-g.opts.MinDelay))
}

// WaitBelowSoft blocks until the level is Normal (usage fell below Soft minus
// the hysteresis margin), ctx is done (ctx.Err()) or Close is called
// (ErrClosed). It returns at once when the level is already Normal.
// Waiters park on a channel closed by the transition to Normal: no polling.
func (g *Governor) WaitBelowSoft(ctx context.Context) error {
	for {
		if Level(g.level.Load()) == LevelNormal {
			return nil
		}
		g.mu.Lock()
		ch := g.belowCh
		g.mu.Unlock()
		select {
		case <-ch:
			// Loop: the level may already have risen again.
		case <-ctx.Done():
			return ctx.Err()
		case <-g.closed:
			return ErrClosed
		}
	}
}

// reconcile stores the level matching the current usage, queuing a
// transition for each change. It loops until a usage read after its last
// store agrees with the stored level: an Add that raced with the store and
// saw the old level is then accounted for here (atomics are sequentially
// consistent, so its held update precedes our re-read).
func (g *Governor) reconcile() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		cur := Level(g.level.Load())
		nxt := g.th.Load().next(cur, g.used())
		if nxt == cur {
			return
		}
		g.level.Store(int32(nxt))
		switch {
		case nxt == LevelNormal:
			close(g.belowCh)
		case cur == LevelNormal:
			g.belowCh = make(chan struct{})
		}
		if n := len(g.pending); n >= maxPending {
			g.pending[n-1].to = nxt
			if g.pending[n-1].from == nxt {
				g.pending = g.pending[:n-1]
			}
		} else {
			g.pending = append(g.pending, transition{from: cur, to: nxt})
		}
	}
}

// report delivers queued transitions to the logger and OnLevelChange, in
// order, one at a time, without holding g.mu. Whoever holds hookMu delivers
// everyone's transitions; a goroutine that finds it held leaves its own to
// the holder, which re-checks after releasing it, so none is stranded. A
// hook that calls back into Add lands in the TryLock branch: no deadlock.
func (g *Governor) report() {
	for {
		if !g.hookMu.TryLock() {
			return
		}
		for {
			g.mu.Lock()
			if len(g.pending) == 0 {
				g.mu.Unlock()
				break
			}
			tr := g.pending[0]
			g.pending = g.pending[1:]
			if len(g.pending) == 0 {
				g.pending = nil // let the backing array go
			}
			g.mu.Unlock()
			g.announce(tr)
		}
		g.hookMu.Unlock()
		g.mu.Lock()
		empty := len(g.pending) == 0
		g.mu.Unlock()
		if empty {
			return
		}
	}
}

func (g *Governor) announce(tr transition) {
	if tr.to > tr.from {
		g.warn(tr.to, "memory pressure rising")
	} else if tr.to == LevelNormal && g.warned.Swap(false) {
		s := g.Stats()
		g.log.Info("vinequeue: memory pressure relieved",
			"level", tr.to.String(), "used", s.Used, "limit", s.Limit, "source", string(s.Source))
	}
	if g.opts.OnLevelChange != nil {
		g.opts.OnLevelChange(tr.from, tr.to)
	}
}

// warn logs a warning for level unless one was logged for the same level
// within WarnInterval. Each level has its own budget so that reaching Hard is
// reported even right after a Soft warning.
func (g *Governor) warn(level Level, msg string) {
	if level == LevelNormal || level > LevelHard {
		return
	}
	now := g.now().UnixNano()
	last := &g.lastWarn[level]
	prev := last.Load()
	if prev != 0 && now-prev < int64(g.opts.WarnInterval) {
		return
	}
	if !last.CompareAndSwap(prev, now) {
		return // another goroutine is logging this one
	}
	g.warned.Store(true)
	s := g.Stats()
	g.log.Warn("vinequeue: "+msg,
		"level", level.String(), "used", s.Used, "held", s.BytesHeld, "heap", s.HeapBytes,
		"soft", s.Soft, "hard", s.Hard, "limit", s.Limit, "source", string(s.Source))
}

// Refresh samples the heap (IncludeHeap) and, at most once per
// RefreshInterval and only when Options.Limit is 0, re-detects the limit
// (vertical autoscaling changes it), then recomputes the level. While the
// level is Soft or Hard it repeats the rate-limited warning. The queue calls
// it from its background goroutine, or Run calls it periodically.
func (g *Governor) Refresh() { g.refresh(false) }

func (g *Governor) refresh(forceLimit bool) {
	g.refreshMu.Lock()
	if g.opts.Limit == 0 {
		now := g.now()
		// Allow an eighth of slack so a caller ticking at RefreshInterval
		// is not skipped on every other tick by timer jitter.
		if forceLimit || now.Sub(g.lastLimitRead) >= g.opts.RefreshInterval-g.opts.RefreshInterval/8 {
			g.lastLimitRead = now
			g.redetect()
		}
	}
	if g.opts.IncludeHeap {
		g.sampleHeap()
	}
	g.refreshMu.Unlock()

	g.reconcile()
	g.report()
	if l := Level(g.level.Load()); l != LevelNormal {
		g.warn(l, "memory pressure")
	}
}

// redetect re-reads the limit; a failed detection keeps the old limit.
// Called with refreshMu held.
func (g *Governor) redetect() {
	lim, err := g.det.detect()
	old := g.th.Load().limit
	if err != nil {
		g.log.Warn("vinequeue: memory limit re-detection failed; keeping the old limit",
			"err", err, "limit", old.Bytes, "source", string(old.Source))
		return
	}
	if lim.Bytes == old.Bytes && lim.Source == old.Source && lim.Path == old.Path {
		return
	}
	g.th.Store(newThresholds(lim, &g.opts))
	g.log.Info("vinequeue: memory limit changed",
		"from", old.Bytes, "to", lim.Bytes, "source", string(lim.Source), "path", lim.Path)
}

// sampleHeap reads heapMetric. Called with refreshMu held (or from New).
func (g *Governor) sampleHeap() {
	metrics.Read(g.samples)
	v := g.samples[0].Value
	if v.Kind() != metrics.KindUint64 {
		return // metric absent from this runtime: count the queue only
	}
	h := int64(min(v.Uint64(), 1<<62))
	g.heap.Store(h)
	g.other.Store(max(h-max(g.held.Load(), 0), 0))
}

// Run calls Refresh (re-reading the limit every time) every RefreshInterval
// until ctx is done (returns ctx.Err()) or Close is called (returns nil).
// Use it when the caller has no background goroutine of its own to call
// Refresh from.
func (g *Governor) Run(ctx context.Context) error {
	tick := time.NewTicker(g.opts.RefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-g.closed:
			return nil
		case <-tick.C:
			g.refresh(true)
		}
	}
}

// Close releases every WaitBelowSoft with ErrClosed (the queue calls it on
// Stop so blocked producers return) and stops Run. Add, Level and Delay keep
// working. Idempotent.
func (g *Governor) Close() error {
	g.closeOne.Do(func() { close(g.closed) })
	return nil
}

// Limit returns the limit in force and how it was found.
func (g *Governor) Limit() Limit { return g.th.Load().limit }

// Stats returns a snapshot. Fields are read one by one without a lock, so
// under concurrent Adds they may be from slightly different instants.
func (g *Governor) Stats() Stats {
	t := g.th.Load()
	return Stats{
		Limit:     t.limit.Bytes,
		Source:    t.limit.Source,
		LimitPath: t.limit.Path,
		BytesHeld: g.held.Load(),
		HeapBytes: g.heap.Load(),
		Used:      g.used(),
		Soft:      t.soft,
		Hard:      t.hard,
		Level:     Level(g.level.Load()),
	}
}

package governor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
	DefaultSampleInterval  = 50 * time.Millisecond
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

// Options configures a Governor. The zero value is valid: detected limit,
// soft 80 %, hard 95 %, the process's memory measured against it.
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
	// Measure chooses what is weighed against the limit. The zero value,
	// MeasureAuto, is MeasureProcessMemory when Limit is 0 (the detected
	// limit is the whole process's) and MeasureQueueBytes when Limit is set
	// (an explicit Limit is the queue's own budget). See Measure.
	Measure Measure
	// Root is prefixed to every file read during detection; "" means "/".
	Root string
	// Logger receives the rate-limited pressure warnings and limit changes,
	// always from the governor's own goroutine; nil discards.
	Logger *slog.Logger
	// OnLevelChange is called after each level change, in order (each from
	// is the previous to), one call at a time, on the governor's own
	// goroutine: never on the goroutine whose Add caused the change. A slow
	// hook delays only later announcements; Add, Level, Delay, Refresh and
	// the wake-up of WaitBelowSoft do not wait for it. More than
	// transitionRing (256) changes behind a hook are merged (see doc.go).
	OnLevelChange func(from, to Level)
	// RefreshInterval is the period of limit re-detection when Limit is 0;
	// default 1s.
	RefreshInterval time.Duration
	// SampleInterval is the period of the governor's goroutine: it samples
	// the process's memory (MeasureProcessMemory), picks up level changes
	// made by Add that nobody Settled (waking WaitBelowSoft waiters) and
	// hands them to the announcer. Default 50ms.
	SampleInterval time.Duration
	// MinDelay and MaxDelay bound Delay: MinDelay on entering Soft, growing
	// linearly to MaxDelay at Hard. Defaults 50µs and 2ms.
	MinDelay, MaxDelay time.Duration
	// WarnInterval is the minimum interval between two warnings for the same
	// level; default 10s.
	WarnInterval time.Duration

	// Test hooks. nil/false in production.
	detect func() (Limit, error) // limit detection; default DetectLimit(Root)
	sample func() int64          // the process's memory in bytes; default processSampler
	now    func() time.Time      // clock for warnings and re-detection; default time.Now
	manual bool                  // start no goroutine: the test calls watchOnce/announceOnce
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
	switch {
	case o.Measure < MeasureAuto || o.Measure > MeasureQueueBytes:
		return fmt.Errorf("%w: Measure: unknown %v", ErrInvalidOptions, o.Measure)
	case o.Measure == MeasureAuto && o.Limit == 0:
		o.Measure = MeasureProcessMemory
	case o.Measure == MeasureAuto:
		o.Measure = MeasureQueueBytes
	}
	if o.RefreshInterval < 0 || o.SampleInterval < 0 || o.MinDelay < 0 || o.MaxDelay < 0 || o.WarnInterval < 0 {
		return fmt.Errorf("%w: RefreshInterval, SampleInterval, MinDelay, MaxDelay, WarnInterval must not be negative", ErrInvalidOptions)
	}
	if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.SampleInterval == 0 {
		o.SampleInterval = DefaultSampleInterval
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
	if o.detect == nil {
		det := newDetector(o.Root)
		o.detect = det.detect
	}
	if o.sample == nil && o.Measure == MeasureProcessMemory {
		o.sample = newProcessSampler().read
	}
	if o.now == nil {
		o.now = time.Now
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

// Stats is a snapshot of the governor.
type Stats struct {
	Limit        int64   // bytes
	Source       Source  // where Limit came from
	LimitPath    string  // file Limit was read from, if any
	Measure      Measure // what Used weighs: MeasureProcessMemory or MeasureQueueBytes
	BytesHeld    int64   // reported by the queue (Add)
	ProcessBytes int64   // last sample of the process's memory; 0 with MeasureQueueBytes
	Used         int64   // what is compared to the thresholds
	Soft         int64   // bytes: the soft threshold
	Hard         int64   // bytes: the hard threshold
	Level        Level
}

// Governor tracks memory against a limit and turns it into a pressure Level.
// See the package documentation.
type Governor struct {
	// Hot fields, read or written by Add: atomics only (see doc.go,
	// Concurrency).
	held  atomic.Int64  // bytes the queue reports holding
	other atomic.Int64  // process bytes not held by the queue, at the last sample
	state atomic.Uint64 // seq<<2 | level; seq counts level changes
	th    atomic.Pointer[thresholds]
	ring  transitions // level changes by seq, for the announcer

	opts Options
	log  *slog.Logger

	// The watcher (watch.go): sampling, re-detection, waking waiters.
	watchKick   chan struct{} // buffered 1: Settle and Refresh ask for a look now
	watched     atomic.Uint64 // state as of the watcher's last look
	sampleMu    sync.Mutex    // serializes sample(): Refresh and the watcher
	process     atomic.Int64  // last process sample (MeasureProcessMemory)
	lastLimitAt time.Time     // watcher only
	newsSeq     uint64        // watcher only: limitNews published so far
	limitNews   atomic.Pointer[limitNews]

	waitMu      sync.Mutex    // guards belowCh, belowClosed; never taken by Add
	belowCh     chan struct{} // closed while the watcher last saw Normal
	belowClosed bool

	// The announcer (announce.go): slog and OnLevelChange.
	announceKick  chan struct{} // buffered 1, sent to by the watcher only
	ann           announcer     // announcer goroutine only
	announced     atomic.Uint64 // seq of the last level change announced
	newsAnnounced atomic.Uint64 // seq of the last limitNews logged

	closed   chan struct{}
	closeOne sync.Once
	done     sync.WaitGroup // the two goroutines
}

// New detects the limit (unless Options.Limit is set), takes a first sample
// (MeasureProcessMemory) and starts the governor's two goroutines, which
// Close stops.
func New(opts Options) (*Governor, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	g := &Governor{
		opts:         opts,
		log:          opts.Logger,
		watchKick:    make(chan struct{}, 1),
		announceKick: make(chan struct{}, 1),
		belowCh:      make(chan struct{}),
		belowClosed:  true,
		closed:       make(chan struct{}),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	close(g.belowCh)
	lim := Limit{Bytes: opts.Limit, Source: SourceConfig}
	if opts.Limit == 0 {
		var err error
		if lim, err = opts.detect(); err != nil {
			return nil, fmt.Errorf("governor: %w (findings: %v)", err, lim.Findings)
		}
	}
	g.lastLimitAt = opts.now()
	g.th.Store(newThresholds(lim, &g.opts))
	g.ann.limit = lim
	if opts.Measure == MeasureProcessMemory {
		g.sample()
		g.reconcile() // the process alone may already be above a threshold
	}
	if !opts.manual {
		g.done.Add(2)
		go g.watch()
		go g.announce()
	}
	return g, nil
}

// used is what the thresholds compare against: the queue's bytes plus, with
// MeasureProcessMemory, the rest of the process. The process already
// contains the queue's items, so adding both would count them twice: other
// is the sample minus what the queue held when it was taken, and held moves
// in between, so an Add counts at once.
func (g *Governor) used() int64 {
	return max(g.held.Load(), 0) + g.other.Load()
}

// Add records that the queue now holds n more bytes (n < 0: fewer) and
// returns the level after the change. Atomics only: safe while pinned (see
// doc.go, Concurrency). A change of level is recorded for the governor's
// goroutines, which announce it and wake waiters; call Settle afterwards
// from unpinned code to have that happen now rather than within
// SampleInterval.
func (g *Governor) Add(n int64) Level {
	total := g.held.Add(n)
	cur := Level(g.state.Load() & levelMask)
	if g.th.Load().next(cur, max(total, 0)+g.other.Load()) == cur {
		return cur
	}
	return g.reconcile()
}

// Sub is Add(-n).
func (g *Governor) Sub(n int64) Level { return g.Add(-n) }

// Level is the current level: one atomic load.
func (g *Governor) Level() Level { return Level(g.state.Load() & levelMask) }

// Stretch names the current level's stretch: the level together with how
// many level changes came before it, so two calls return the same Stretch
// only if the level did not change between them. One atomic load. A caller
// uses it to keep something it learnt at a level (say, that the disk it
// overflows to is full) exactly while that level lasts.
func (g *Governor) Stretch() Stretch { return Stretch(g.state.Load()) }

// Stretch is one unbroken stretch of a level; see Governor.Stretch.
type Stretch uint64

// Level is the level the stretch is at.
func (s Stretch) Level() Level { return Level(s & levelMask) }

const levelMask = 3

// reconcile stores the level matching the current usage, lock-free, and
// records each change in the transition ring. After each store it re-reads
// the usage and goes on until the two agree: an Add that read the level
// before our store has its bytes in our re-read (atomics are sequentially
// consistent, and its held update precedes its level load, which precedes
// our compare-and-swap), and an Add that read it after evaluates the new
// level itself. So no Add is left with a stale level.
func (g *Governor) reconcile() Level {
	for {
		s := g.state.Load()
		cur := Level(s & levelMask)
		nxt := g.th.Load().next(cur, g.used())
		if nxt == cur {
			return cur
		}
		ns := (s>>2+1)<<2 | uint64(nxt)
		if g.state.CompareAndSwap(s, ns) {
			g.ring.record(ns)
		}
	}
}

// Delay is how long the queue's slow path should wait at the current
// pressure: 0 at Normal, MinDelay on entering Soft growing linearly with
// usage to MaxDelay at Hard, MaxDelay at Hard (where the Policy decides
// whether to wait at all). Atomics only.
func (g *Governor) Delay() time.Duration {
	switch g.Level() {
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

// Settle asks the governor's goroutine to act now on level changes made by
// Add since it last looked: wake WaitBelowSoft waiters if the level fell to
// Normal, and hand the changes to the announcer. Without it that happens
// within SampleInterval. Two atomic loads when nothing changed; otherwise a
// non-blocking send on a buffered channel (it never parks). Call it from
// unpinned code, e.g. after Sub on a sender finishing a batch, or after the
// unpin that follows a pinned Add.
func (g *Governor) Settle() {
	if g.state.Load() != g.watched.Load() {
		g.kickWatcher()
	}
}

func (g *Governor) kickWatcher() {
	select {
	case g.watchKick <- struct{}{}:
	default: // a look is already due
	}
}

// WaitBelowSoft blocks until the level is Normal (usage fell below Soft minus
// the hysteresis margin), ctx is done (ctx.Err()) or Close is called
// (ErrClosed). It returns at once when the level is already Normal. Waiters
// park on a channel that the governor's goroutine closes when it sees the
// level at Normal (a broadcast): no polling. Not for pinned code.
func (g *Governor) WaitBelowSoft(ctx context.Context) error {
	for {
		if g.Level() == LevelNormal {
			return nil
		}
		g.waitMu.Lock()
		if g.Level() == LevelNormal {
			// Fell since the check above, maybe after the watcher's last
			// look: no channel to wait for.
			g.waitMu.Unlock()
			return nil
		}
		if g.belowClosed {
			// The watcher has not seen the level rise yet: arm the channel
			// now, or this loop would spin on a closed one. The watcher
			// closes it once it sees Normal, and it looks again within
			// SampleInterval (sooner after Settle or Refresh).
			g.belowCh = make(chan struct{})
			g.belowClosed = false
		}
		ch := g.belowCh
		g.waitMu.Unlock()
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

// Refresh samples the process's memory now (MeasureProcessMemory),
// recomputes the level and asks the governor's goroutine to act on any
// change (as Settle). It reads runtime/metrics under a mutex shared with the
// governor's goroutine, which holds it for microseconds and never while
// logging or calling OnLevelChange. Not for pinned code. Limit re-detection
// happens on the governor's goroutine every RefreshInterval.
func (g *Governor) Refresh() {
	if g.opts.Measure == MeasureProcessMemory {
		g.sample()
	}
	g.reconcile()
	g.kickWatcher()
}

// sample reads the process's memory and stores what is not the queue's.
func (g *Governor) sample() {
	g.sampleMu.Lock()
	defer g.sampleMu.Unlock()
	p := g.opts.sample()
	if p < 0 {
		return // metrics absent from this runtime: count the queue only
	}
	g.process.Store(p)
	g.other.Store(max(p-max(g.held.Load(), 0), 0))
}

// Close releases every WaitBelowSoft with ErrClosed (the queue calls it on
// Stop so blocked producers return), announces the level changes made
// before it, stops the governor's goroutines and waits for them: an
// OnLevelChange or slog handler in progress is waited for, so Close must not
// be called from either. Add, Level and Delay keep working; later changes
// are not announced. Idempotent.
func (g *Governor) Close() error {
	g.closeOne.Do(func() { close(g.closed) })
	g.done.Wait()
	return nil
}

// Limit returns the limit in force and how it was found.
func (g *Governor) Limit() Limit { return g.th.Load().limit }

// Stats returns a snapshot. Fields are read one by one without a lock, so
// under concurrent Adds they may be from slightly different instants.
func (g *Governor) Stats() Stats {
	t := g.th.Load()
	return Stats{
		Limit:        t.limit.Bytes,
		Source:       t.limit.Source,
		LimitPath:    t.limit.Path,
		Measure:      g.opts.Measure,
		BytesHeld:    g.held.Load(),
		ProcessBytes: g.process.Load(),
		Used:         g.used(),
		Soft:         t.soft,
		Hard:         t.hard,
		Level:        g.Level(),
	}
}

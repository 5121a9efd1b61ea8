package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/ring"
)

// cacheLine is the padding unit (arm64's false-sharing size; amd64's
// adjacent-line prefetch pair).
const cacheLine = 128

// Queue hands items off from many goroutines and delivers them in batches to
// Config.Send. Create it with New; all methods are safe for concurrent use.
type Queue[T any] struct {
	_ [cacheLine]byte
	// rings is read by every Enqueue and written only when GOMAXPROCS grows,
	// so it sits alone on its line: the fast path reads it from L1.
	rings atomic.Pointer[ringTable[T]]
	_     [cacheLine - 8]byte

	cfg       Config[T]
	sizeOf    func(T) int
	fixedSize int // > 0: every item accounts this many bytes (sizeOf by type)
	logger    *slog.Logger
	growMu    sync.Mutex // serialises ring table growth and sealing

	keyed keyedShards[T]
	gov   *governor.Governor

	wake chan struct{}  // cap 1: a ring passed its watermark, a shard has work, room is wanted
	reqs chan request   // Flush and Stop to the collector
	work chan *batch[T] // collector → workers
	free chan *batch[T] // recycled batches
	done chan struct{}  // closed when every goroutine of the queue has exited

	track tracker

	// space wakes producers waiting on a full ring: the collector bumps gen
	// after a drain pass when spaceWaiters > 0.
	spaceMu      sync.Mutex
	spaceCond    *sync.Cond
	spaceGen     uint64
	spaceWaiters atomic.Int32

	sendCtx    context.Context // passed to Send; cancelled when Stop's ctx expires
	sendCancel context.CancelFunc
	// closedCtx is cancelled when Stop begins: it ends Block-policy waits.
	closedCtx    context.Context
	closedCancel context.CancelFunc

	closing  atomic.Bool
	stopOnce sync.Once
	stopDone chan struct{}
	stopErr  error

	_ [cacheLine]byte
	// Counters written off the fast path (slow path, collector, workers).
	delivered, dropped, rejected, retries, batches, keyedIn, delayed, blocked atomic.Uint64
	bytesHeld                                                                 atomic.Int64
	batchSize                                                                 atomic.Int64
}

// levelHook adapts the user's OnLevelChange to the governor's levels.
func levelHook(f func(from, to Level)) func(from, to governor.Level) {
	if f == nil {
		return nil
	}
	return func(from, to governor.Level) { f(levelOf(from), levelOf(to)) }
}

func levelOf(l governor.Level) Level {
	switch l {
	case governor.LevelSoft:
		return LevelSoft
	case governor.LevelHard:
		return LevelHard
	}
	return LevelNormal
}

func ringSlotSize[T any]() int {
	var zero T
	return int(unsafe.Sizeof(zero))
}

type ringTable[T any] struct {
	rings []*ring.SPSC[T]
}

// batch is a unit of delivery: the items of one Send call.
type batch[T any] struct {
	items []T
	bytes int64
	seq   uint64
	shard *keyedShard[T] // nil unless the batch came from EnqueueKey
}

type requestKind int

const (
	reqFlush requestKind = iota
	reqStop
)

type request struct {
	kind requestKind
	ctx  context.Context
	done chan error
}

// New validates cfg, fills in defaults and starts the queue's goroutines:
// one collector and cfg.Workers senders.
func New[T any](cfg Config[T]) (*Queue[T], error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	q := &Queue[T]{
		cfg:      cfg,
		sizeOf:   cfg.SizeOf,
		logger:   cfg.Logger,
		wake:     make(chan struct{}, 1),
		reqs:     make(chan request),
		work:     make(chan *batch[T]),
		free:     make(chan *batch[T], cfg.Workers*2+2),
		done:     make(chan struct{}),
		stopDone: make(chan struct{}),
	}
	if q.sizeOf == nil {
		q.sizeOf, q.fixedSize = defaultSizeOf[T]()
	}
	q.spaceCond = sync.NewCond(&q.spaceMu)
	q.sendCtx, q.sendCancel = context.WithCancel(context.Background())
	q.closedCtx, q.closedCancel = context.WithCancel(context.Background())
	gov, err := governor.New(governor.Options{
		Limit:         cfg.Memory.Limit,
		Soft:          cfg.Memory.Soft,
		Hard:          cfg.Memory.Hard,
		IncludeHeap:   cfg.Memory.IncludeHeap,
		Logger:        cfg.Logger,
		OnLevelChange: levelHook(cfg.Memory.OnLevelChange),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: Memory: %w", ErrInvalidConfig, err)
	}
	q.gov = gov
	q.batchSize.Store(int64(cfg.BatchSize))
	q.keyed.init()
	if _, err := q.growRings(runtime.GOMAXPROCS(0) - 1); err != nil {
		gov.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1 + cfg.Workers)
	go func() { defer wg.Done(); q.collect() }()
	for range cfg.Workers {
		go func() { defer wg.Done(); q.sendLoop() }()
	}
	go func() { wg.Wait(); close(q.done) }()
	return q, nil
}

// fill validates the config and applies defaults.
func (c *Config[T]) fill() error {
	if c.Send == nil {
		return invalid("Send", "required")
	}
	if c.BatchSize < 0 {
		return invalid("BatchSize", "%d < 0", c.BatchSize)
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.MinBatchSize < 0 {
		return invalid("MinBatchSize", "%d < 0", c.MinBatchSize)
	}
	if c.MinBatchSize == 0 {
		c.MinBatchSize = 1
	}
	if c.MaxBatchSize < 0 {
		return invalid("MaxBatchSize", "%d < 0", c.MaxBatchSize)
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = max(c.BatchSize, 10000)
	}
	if c.MinBatchSize > c.MaxBatchSize {
		return invalid("MinBatchSize", "%d > MaxBatchSize %d", c.MinBatchSize, c.MaxBatchSize)
	}
	if c.BatchSize > c.MaxBatchSize {
		return invalid("BatchSize", "%d > MaxBatchSize %d", c.BatchSize, c.MaxBatchSize)
	}
	if c.BatchSize < c.MinBatchSize {
		return invalid("BatchSize", "%d < MinBatchSize %d", c.BatchSize, c.MinBatchSize)
	}
	if c.FlushInterval < 0 {
		return invalid("FlushInterval", "%v < 0", c.FlushInterval)
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 5 * time.Second
	}
	if c.FlushInterval < 2*time.Millisecond {
		return invalid("FlushInterval", "%v < 2ms", c.FlushInterval)
	}
	if c.Workers < 0 {
		return invalid("Workers", "%d < 0", c.Workers)
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.RingSize == 0 {
		c.RingSize = 1024
	}
	if c.RingSize < 2 || c.RingSize&(c.RingSize-1) != 0 || c.RingSize > 1<<24 {
		return invalid("RingSize", "%d is not a power of two in [2, 2^24]", c.RingSize)
	}
	if err := c.Retry.fill(); err != nil {
		return err
	}
	if err := c.Memory.fill(); err != nil {
		return err
	}
	if c.WAL.Dir != "" {
		return invalid("WAL.Dir", "the WAL tier is not available in this build yet")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (r *RetryPolicy) fill() error {
	if r.MaxAttempts < 0 {
		return invalid("Retry.MaxAttempts", "%d < 0", r.MaxAttempts)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = 5
	}
	if r.InitialBackoff < 0 || r.MaxBackoff < 0 {
		return invalid("Retry.InitialBackoff", "negative backoff")
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = 10 * time.Millisecond
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = 5 * time.Second
	}
	if r.MaxBackoff < r.InitialBackoff {
		return invalid("Retry.MaxBackoff", "%v < InitialBackoff %v", r.MaxBackoff, r.InitialBackoff)
	}
	if r.Multiplier == 0 {
		r.Multiplier = 2
	}
	if r.Multiplier < 1 {
		return invalid("Retry.Multiplier", "%v < 1", r.Multiplier)
	}
	if r.Jitter == 0 {
		r.Jitter = 0.2
	}
	if r.Jitter < 0 || r.Jitter > 1 {
		return invalid("Retry.Jitter", "%v not in [0, 1]", r.Jitter)
	}
	return nil
}

func (m *MemoryConfig) fill() error {
	if m.Limit < 0 {
		return invalid("Memory.Limit", "%d < 0", m.Limit)
	}
	if m.Soft == 0 {
		m.Soft = 0.80
	}
	if m.Hard == 0 {
		m.Hard = 0.95
	}
	if m.Soft <= 0 || m.Soft >= 1 {
		return invalid("Memory.Soft", "%v not in (0, 1)", m.Soft)
	}
	if m.Hard <= m.Soft || m.Hard > 1 {
		return invalid("Memory.Hard", "%v not in (Soft %v, 1]", m.Hard, m.Soft)
	}
	switch m.Policy {
	case PolicyDefault, Reject, Block:
	case Spill:
		return invalid("Memory.Policy", "Spill needs a WAL")
	default:
		return invalid("Memory.Policy", "unknown %v", m.Policy)
	}
	return nil
}

// growRings makes sure the ring table has a ring for P id pid and returns it.
// GOMAXPROCS may have grown since New: the table is replaced by a larger copy
// (readers keep using the old one safely; its rings are the same).
func (q *Queue[T]) growRings(pid int) (*ringTable[T], error) {
	q.growMu.Lock()
	defer q.growMu.Unlock()
	old := q.rings.Load()
	if old != nil && pid < len(old.rings) {
		return old, nil
	}
	n := max(pid+1, runtime.GOMAXPROCS(0))
	t := &ringTable[T]{rings: make([]*ring.SPSC[T], n)}
	if old != nil {
		copy(t.rings, old.rings)
	}
	// Wake the collector well before a ring fills, so producers rarely wait.
	wm := max(q.cfg.RingSize/4, 1)
	for i := range t.rings {
		if t.rings[i] != nil {
			continue
		}
		r, err := ring.NewSPSC[T](q.cfg.RingSize, wm)
		if err != nil {
			return nil, fmt.Errorf("%w: RingSize: %w", ErrInvalidConfig, err)
		}
		if q.closing.Load() {
			r.Seal()
		}
		t.rings[i] = r
		// A ring's slots are held for the queue's life: they count
		// against the budget from the start (the bytes they point to
		// are counted once drained).
		q.gov.Add(int64(q.cfg.RingSize) * int64(ringSlotSize[T]()))
	}
	q.rings.Store(t)
	return t, nil
}

// Enqueue accepts v for delivery. nil means accepted: v will be delivered (or,
// if delivery fails for good, handed to OnDrop and counted). ErrClosed once
// Stop has begun; ErrFull when memory is at the hard level and the Policy is
// Reject.
//
// The common case touches only the calling P's ring: no lock, no shared
// write, no allocation (DESIGN.md's fast-path rule).
func (q *Queue[T]) Enqueue(v T) error {
	pid, tok := procPin()
	t := q.rings.Load()
	if uint(pid) >= uint(len(t.rings)) {
		procUnpin(tok)
		return q.enqueueSlow(v, ring.Full)
	}
	st := t.rings[pid].Push(v)
	procUnpin(tok)
	if st == ring.Pushed {
		return nil
	}
	return q.enqueueSlow(v, st)
}

// enqueueSlow finishes an Enqueue whose push returned st: v is in (a watermark
// to report), or the ring was full or sealed, or the P had no ring yet.
func (q *Queue[T]) enqueueSlow(v T, st ring.Status) error {
	for {
		switch st {
		case ring.Pushed:
			return nil
		case ring.PushedWatermark:
			q.wakeCollector()
			q.pressureDelay()
			return nil
		case ring.Sealed:
			return ErrClosed
		}
		// Full, or no ring for this P: make room, then push again.
		if err := q.atHard(); err != nil {
			return err
		}
		gen, err := q.beforeRetry()
		if err != nil {
			return err
		}
		pid, tok := procPin()
		t := q.rings.Load()
		if uint(pid) >= uint(len(t.rings)) {
			procUnpin(tok)
			q.spaceWaiters.Add(-1)
			if _, err := q.growRings(pid); err != nil {
				return err
			}
			st = ring.Full
			continue
		}
		st = t.rings[pid].Push(v)
		procUnpin(tok)
		if st != ring.Full {
			q.spaceWaiters.Add(-1)
			continue
		}
		if err := q.waitSpace(gen); err != nil {
			return err
		}
	}
}

// EnqueueBatch accepts vs in order and returns how many it accepted: all of
// them unless the error is non-nil (ErrClosed, ErrFull), in which case vs[n:]
// were not accepted. It is cheaper per item than Enqueue.
func (q *Queue[T]) EnqueueBatch(vs []T) (int, error) {
	n := 0
	for n < len(vs) {
		pid, tok := procPin()
		t := q.rings.Load()
		if uint(pid) >= uint(len(t.rings)) {
			procUnpin(tok)
			if _, err := q.growRings(pid); err != nil {
				return n, err
			}
			continue
		}
		r := t.rings[pid]
		k, mark := r.PushBatch(vs[n:])
		procUnpin(tok)
		n += k
		if mark {
			q.wakeCollector()
			q.pressureDelay()
		}
		if n == len(vs) {
			return n, nil
		}
		if r.IsSealed() {
			return n, ErrClosed
		}
		if err := q.atHard(); err != nil {
			if errors.Is(err, ErrFull) {
				q.rejected.Add(uint64(len(vs)-n) - 1) // atHard counted one
			}
			return n, err
		}
		gen, err := q.beforeRetry()
		if err != nil {
			return n, err
		}
		// Push again before waiting: the collector may have drained meanwhile.
		pid, tok = procPin()
		t = q.rings.Load()
		k, mark = 0, false
		if uint(pid) < uint(len(t.rings)) {
			k, mark = t.rings[pid].PushBatch(vs[n:])
			n += k
		}
		procUnpin(tok)
		if mark {
			q.wakeCollector()
		}
		if k > 0 {
			q.spaceWaiters.Add(-1)
			continue
		}
		if err := q.waitSpace(gen); err != nil {
			return n, err
		}
	}
	return n, nil
}

// pressureDelay slows a producer on the slow path while memory is at the
// soft level or above (the governor's delay grows with pressure).
func (q *Queue[T]) pressureDelay() {
	if d := q.gov.Delay(); d > 0 {
		q.delayed.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-q.closedCtx.Done():
		}
		t.Stop()
	}
}

// atHard applies the Policy when a ring is full and memory is at the hard
// level (the collector stops draining there, so the ring stays full): Reject
// counts and returns ErrFull; Block waits until the level falls below Soft
// (or Stop). Below Hard a full ring only means the collector is behind: the
// caller waits for it.
func (q *Queue[T]) atHard() error {
	if q.gov.Level() != governor.LevelHard {
		return nil
	}
	switch q.cfg.Memory.Policy {
	case Block:
		q.blocked.Add(1)
		if err := q.gov.WaitBelowSoft(q.closedCtx); err != nil {
			return ErrClosed
		}
		return nil
	default: // Reject (Spill needs the WAL tier)
		q.rejected.Add(1)
		return ErrFull
	}
}

func (q *Queue[T]) wakeCollector() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// beforeRetry registers the caller as waiting for ring space and wakes the
// collector. It returns the space generation to wait on, or the error that
// ends the attempt (ErrClosed; ErrFull under the Reject policy at the hard
// level). The caller must then call waitSpace, or spaceWaiters.Add(-1).
func (q *Queue[T]) beforeRetry() (uint64, error) {
	if q.closing.Load() {
		return 0, ErrClosed
	}
	q.spaceWaiters.Add(1)
	q.spaceMu.Lock()
	gen := q.spaceGen
	q.spaceMu.Unlock()
	q.wakeCollector()
	return gen, nil
}

// waitSpace waits until the collector has drained since generation gen, or
// the queue closes.
func (q *Queue[T]) waitSpace(gen uint64) error {
	q.spaceMu.Lock()
	for q.spaceGen == gen && !q.closing.Load() {
		q.spaceCond.Wait()
	}
	q.spaceMu.Unlock()
	q.spaceWaiters.Add(-1)
	if q.closing.Load() {
		return ErrClosed
	}
	return nil
}

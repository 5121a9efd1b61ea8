package engine

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/vineroute/vinequeue/batch"
	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/ring"
)

// cacheLine is the padding unit (arm64's false-sharing size; amd64's
// adjacent-line prefetch pair).
const cacheLine = 128

// Queue is the engine of one root Queue: intake past the fast path (which
// the root package runs itself, over Fast), admission, the collector, the
// senders, the keyed shards and the durability tier. Create it with New; all
// methods are safe for concurrent use.
type Queue[T any] struct {
	_ [cacheLine]byte
	// fast holds the slots of P ids below max(GOMAXPROCS, NumCPU) at New,
	// in place: Enqueue's fast path (in the root package) indexes it
	// directly (one load to the slot, one to its ring) instead of going
	// through procs. Set once in New (empty for the sync tier, whose
	// Enqueue always takes the slow path) and never written after. A slot
	// gets its ring only when procs first covers its P id, so a container
	// whose GOMAXPROCS is below NumCPU allocates rings for its GOMAXPROCS;
	// until then the slot's Cur is nil and Enqueue takes the slow path,
	// which grows procs.
	fast []ProcSlot[T]
	// procs has a slot for every P id, fast's and those of Ps beyond it
	// (GOMAXPROCS grew past NumCPU after New). It is written only when
	// GOMAXPROCS grows.
	procs atomic.Pointer[procTable[T]]
	// itemLimit is the largest SizeOf an item may have in the periodic and
	// overflow tiers, whose items are encoded later, off the call (0: no
	// check: the memory tier, the sync tier, which checks the encoding
	// itself, or an item type of fixed size). Set once in New.
	itemLimit int
	_         [cacheLine - 24 - 8 - 8]byte

	// centrals is the central stage: one shard per collector goroutine,
	// each holding the rings handed off by the Ps mapped to it (see
	// central). Set once in New; centrals[0] is the primary's.
	centrals []*central[T]
	// spare holds drained rings; producers take them unpinned (refill)
	// and keep one per P, in procSlot.spare, for their next hand-off. A
	// nil in it is a poke for a producer waiting for a ring (pokeWaiters).
	spare chan *ring.SPSC[T]
	// ringCount is how many rings exist; see RingsPerP.
	ringCount atomic.Int64
	// spareWaiters counts producers in waitSpare; see pokeWaiters.
	spareWaiters atomic.Int32
	// stalledShards counts the collectors leaving rings full at the hard
	// level: only then must a finishing sender wake them (memory fell).
	// Waking them after every batch would cost a futex call per batch when
	// they are parked, for nothing.
	stalledShards atomic.Int32

	cfg       Config[T]
	sizeOf    func(T) int
	fixedSize int   // > 0: every item accounts this many bytes (sizeOf by type)
	ringBytes int64 // bytes of one ring's slots
	logger    *slog.Logger
	growMu    sync.Mutex // serialises growth of procs and Stop's sealing
	// intake is held by every call that writes to the WAL before its item
	// is queued (the sync tier, its EnqueueKey too); Stop closes it and
	// waits for those calls, so each is either refused before it writes
	// anything or accepted (refused means refused). EnqueueKey in the other
	// tiers writes only to its shard: the shard's sealed ring and closed
	// flag, set by Stop, are its gate (shedCredit).
	intake intakeGate

	keyed keyedShards[T]
	// tier is the durability tier, chosen in New (tier.go); wal is its
	// log (nil for the memory tier) and spill its spilling (nil unless
	// the tier has a log and the Policy is Spill): capabilities asked for
	// by their presence.
	tier tier[T]
	wal  *walTier[T]
	// durable is the periodic tier's DurableThrough (durable.go).
	durable durableMark[T]
	spill   *spiller[T]
	// inbox carries items made durable by their call to the collector.
	inbox durableInbox[T]
	// acks carries EnqueueAck's AckDelivered items to the collector (ack.go).
	acks acks[T]
	// park holds back the items of keys with a dead letter (park.go); nil
	// unless Config.ParkKeys.
	park    *parking[T]
	gov     *governor.Governor
	sizer   *batch.Sizer // nil unless Config.Adaptive
	onRetry func(int, error)

	// keepKeys: keyed shards keep their items' keys (keyed.go), for
	// parking or for the periodic tier's keyed records.
	keepKeys bool

	wake chan struct{}    // the primary's (centrals[0].wake): a keyed shard or the inbox has work, a batch finished
	reqs chan request     // Flush and Stop to the primary collector
	work chan *pending[T] // collector → senders
	free chan *pending[T] // recycled batches
	done chan struct{}    // closed when every goroutine but the senders has exited
	// senders holds each sender's batch in Send; sendersDone is closed when
	// every sender has exited (a Send that ignores its ctx can outlive Stop).
	senders     []senderSlot[T]
	sendersDone chan struct{}
	finishing   sync.RWMutex // held shared by a sender finishing a batch (deliver)
	onDrops     dropCalls    // OnDrop calls under way or due, for Stop to wait on

	track tracker
	// seq is the next batch sequence number, shared by the collectors so
	// that the tracker sees one numbering (Flush and Stop wait for every
	// number issued before them).
	seq atomic.Uint64

	sendCtx    context.Context // passed to Send; cancelled when Stop's ctx expires
	sendCancel context.CancelFunc
	// closedCtx is cancelled when Stop begins: it ends Block-policy waits.
	closedCtx    context.Context
	closedCancel context.CancelFunc

	closing atomic.Bool // Stop has begun: the slow paths refuse, Health is not Ready
	// sealed is set once Stop has sealed every ring and closed every
	// other way in: an intake call that starts after it is seen is
	// refused, the fast path included (Health.Closed). Between closing and
	// sealed, a push that reaches a ring before its seal is accepted.
	sealed atomic.Bool
	// writeBeforeSend is set as a Stop whose ctx can end begins, in the
	// periodic tier: from then on a sender writes its batch before Send
	// (take), so that the Stop has none to write past its deadline.
	writeBeforeSend atomic.Bool
	// stopMu guards stopCtx: the first Stop's context, which a later call
	// ends at its own deadline (Stop).
	stopMu  sync.Mutex
	stopCtx *stopContext
	// stopCanEnd is whether the first Stop's own ctx can end (a Close's
	// cannot): set before the collectors are told to stop, read by them.
	stopCanEnd bool
	stopDone   chan struct{}
	stopErr    error
	// requeueMu makes requeues through the main log one at a time
	// (requeueUnkeyed): the log reads a dead letter, has it appended and
	// only then purges it, so two requeues of one dead letter at once
	// both appended it, its items delivered twice.
	requeueMu sync.Mutex

	_ [cacheLine]byte
	// Counters written off the fast path (slow path, collector, senders).
	delivered, dropped, rejected, retries, batches, delayed, blocked atomic.Uint64
	// WAL tier counters.
	replayed, corrupt, syncAccepted, walRejected, walErrors, leftOnDisk, spilled, deadLettered atomic.Uint64
	// Parking counters (park.go): items moved to the park, and items
	// handed out again from dead letters (counted as accepted).
	parked, released atomic.Uint64

	// The replayer (replay.go): replayCh carries its batches to the
	// collector, replayAck tells it its batch is finished, replayDone is
	// closed when it exits. replaying is set from New until then; keyed
	// shards do not dispatch while it is.
	replayCh   chan *pending[T]
	replayAck  chan struct{}
	replayDone chan struct{}
	replaying  atomic.Bool
	// drained counts ring items the collector has taken; Stats adds what
	// the current rings hold.
	drained   atomic.Uint64
	bytesHeld atomic.Int64
	// backlogAtOpen is the number of unacknowledged items the WAL held at
	// New (set before any goroutine starts): the replay's backlog.
	backlogAtOpen uint64
	// walFullAt is when a call was last refused because the WAL is full
	// (unix ns; 0: never), for Health.
	walFullAt atomic.Int64
	// walFull is set while the tier's writes fail with ErrWALFull (the
	// periodic tier's persist): intake is refused with it.
	walFull atomic.Pointer[error]
	// failingSince is when Send first failed after its last success (unix
	// ns; 0 while it succeeds), for Health.
	failingSince atomic.Int64
	batchSize    atomic.Int64
}

// intakeGate: enter before writing an item anywhere Stop cannot seal (the
// WAL, a keyed shard), leave once it is queued; close waits for the calls
// inside. An RWMutex is the gate: the calls share it, Stop takes it alone.
type intakeGate struct {
	mu     sync.RWMutex
	closed bool // guarded by mu
}

// enter reports whether the caller may go on (false once Stop has begun);
// on true the caller must leave.
func (g *intakeGate) enter() bool {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return false
	}
	return true
}

func (g *intakeGate) leave() { g.mu.RUnlock() }

// close refuses every later enter and waits for the calls inside to leave.
func (g *intakeGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// procTable has one slot per P id.
type procTable[T any] struct {
	procs []*ProcSlot[T]
}

// ProcSlot is a P's place in the queue: the ring its producer fills now
// (Cur), and the spare that replaces it at the next hand-off. Cur is
// written by the producer pinned to the P (when it swaps a full ring for
// the spare), and loaded by the collector for partial drains. spare is only
// touched by producers pinned to the P, so that a hand-off, which runs
// pinned, takes a ring without a lock or a channel operation. The root
// package's assembly push reads Cur at its offset in the slot.
type ProcSlot[T any] struct {
	_     [cacheLine]byte
	Cur   atomic.Pointer[ring.SPSC[T]]
	spare atomic.Pointer[ring.SPSC[T]]
	// central is the shard of the central stage this P hands its rings to
	// (the same for the slot's life). Set before Cur is first stored, and
	// never written after, so whoever loaded a non-nil Cur reads it safely.
	central *central[T]
	// handing is the ring HandOff is moving from Cur to the shard's stack,
	// nil outside it: a checkpoint that sees it cannot tell whether it
	// found that ring's items (durable.go).
	handing atomic.Pointer[ring.SPSC[T]]
	_       [cacheLine - 32]byte
}

// pending is a unit of delivery: the items of one Send call.
type pending[T any] struct {
	items  []T
	bytes  int64
	seq    uint64
	shards []*keyedShard[T] // EnqueueKey: the shards whose items it holds, held until it is finished
	spans  []span           // where the items are in the WAL, in item order; none if not on disk
	spill  *spillDone       // read back from a spill: settled when finished
	replay bool             // from the replayer: finishing it lets the replay go on
	keys   []uint64         // with parking (park.go): the key of each item of a keyed batch
	letter uint64           // with parking: the dead letter it delivers again (released)
	acks   []*ackGroup      // EnqueueAck: the groups whose items it holds, told when it is finished (ack.go)
	since  int64            // periodic tier: registered as not written yet, its items accepted at since or later (durable.go)
	send   func(context.Context) error
	// The periodic tier's write ticket, for a batch cut unwritten: it is
	// written only if a checkpoint or a Stop out of time claims it before
	// its sender reports it delivered (durable.go, claimToWrite). ticket
	// is nonzero while that is so (unique: seq+1); claim holds it until
	// claimed, and wrote holds it once a write is over (succeeded or
	// failed).
	ticket uint64
	claim  atomic.Uint64
	wrote  atomic.Uint64
}

type requestKind int

const (
	reqFlush requestKind = iota
	reqStop
	reqCheckpoint // to a secondary collector: cut what its rings hold and write its ready batches
)

type request struct {
	kind requestKind
	at   int64 // reqCheckpoint: the checkpoint's start, unix nanoseconds
	ctx  context.Context
	done chan error
	// spilled (Flush only) is released once every batch spilled before
	// the Flush has been read back and finished.
	spilled chan error
}

// newTier chooses the durability tier from WAL.Mode (see tier.go), opens
// its log, and sets up what depends on the choice: the P rings (every tier
// but sync, whose intake goes to the log), the item limit, the spiller. It
// is the one place that looks at the mode.
func (q *Queue[T]) newTier() error {
	c := q.cfg.WAL
	rings := c.Dir == "" || c.Mode != Sync
	if rings {
		if err := q.checkRingBudget(runtime.GOMAXPROCS(0)); err != nil {
			return err
		}
	}
	if c.Dir == "" {
		q.tier = memoryTier[T]{ringIntake[T]{q}}
	} else {
		w, err := q.openWAL(!rings)
		if err != nil {
			return err
		}
		q.wal = w
		switch c.Mode {
		case Sync:
			q.tier = syncTier[T]{w}
		case Periodic:
			q.tier = periodicTier[T]{w, c.syncInterval()}
			q.keepKeys = true // its checkpoints write keyed records from the shards
		default:
			q.tier = overflowTier[T]{w}
		}
		if rings && q.fixedSize == 0 {
			// Ring items are encoded off the call: refuse at the call
			// what no record could hold. SizeOf counts an item's header:
			// for []byte and string (the built-in codec) the check is
			// then exact.
			var zero T
			q.itemLimit = w.log.MaxRecord() - MaxFrameOverhead + int(unsafe.Sizeof(zero))
		}
		if q.cfg.Memory.Policy == Spill {
			q.spill = newSpiller(q, w)
		}
	}
	// The sync tier writes keyed items before they enter their shard.
	q.keyed.gated = !rings
	if !rings {
		// Every Enqueue takes the slow path, into the group commit (see
		// walmode.go): no rings, so one collector.
		q.makeCentrals(1)
		q.procs.Store(&procTable[T]{})
		return nil
	}
	q.makeCentrals(q.cfg.Collectors)
	q.fast = make([]ProcSlot[T], max(runtime.GOMAXPROCS(0), runtime.NumCPU()))
	q.growProcs(runtime.GOMAXPROCS(0) - 1)
	return nil
}

// New starts the engine for cfg (validated and filled in by the root
// package): one collector per central shard (cfg.Collectors, see
// central.go), cfg.Workers senders, and the replayer and unspiller when the
// tier has a log and a spiller.
func New[T any](cfg Config[T]) (*Queue[T], error) {
	if cfg.Collectors <= 0 {
		cfg.Collectors = DefaultCollectors(runtime.GOMAXPROCS(0))
	}
	q := &Queue[T]{
		cfg:         cfg,
		sizeOf:      cfg.SizeOf,
		logger:      cfg.Logger,
		ringBytes:   int64(cfg.RingSize) * int64(unsafe.Sizeof(*new(T))),
		spare:       make(chan *ring.SPSC[T], 1024),
		wake:        make(chan struct{}, 1),
		reqs:        make(chan request),
		work:        make(chan *pending[T]),
		free:        make(chan *pending[T], 4*cfg.Workers+64),
		done:        make(chan struct{}),
		sendersDone: make(chan struct{}),
		onDrops:     dropCalls{progress: make(chan struct{}, 1)},
		stopDone:    make(chan struct{}),
		durable:     newDurableMark[T](),
		replayCh:    make(chan *pending[T]),
		replayAck:   make(chan struct{}, 1),
		replayDone:  make(chan struct{}),
	}
	if user := q.sizeOf; user != nil {
		// A negative size would credit the governor and switch the
		// memory bound off: count it as nothing.
		q.sizeOf = func(v T) int { return max(user(v), 0) }
	}
	if q.sizeOf == nil {
		var err error
		if q.sizeOf, q.fixedSize, err = defaultSizeOf[T](); err != nil {
			return nil, invalid("SizeOf", "set Config.SizeOf: %v", err)
		}
	}
	q.sendCtx, q.sendCancel = context.WithCancel(context.Background())
	q.closedCtx, q.closedCancel = context.WithCancel(context.Background())
	q.batchSize.Store(int64(cfg.BatchSize))
	if cfg.Adaptive {
		q.sizer = batch.NewSizerConfig(batch.SizerConfig{
			Start: cfg.BatchSize, Min: cfg.MinBatchSize, Max: cfg.MaxBatchSize,
			// Batches in flight when the size changes: one per sender,
			// plus the one each collector is handing over.
			Concurrency: cfg.Workers + cfg.Collectors,
		})
	}
	q.onRetry = q.countRetry
	gov, err := governor.New(governor.Options{
		Limit:         cfg.Memory.Limit,
		Soft:          cfg.Memory.Soft,
		Hard:          cfg.Memory.Hard,
		Measure:       cfg.Memory.Measure,
		Logger:        cfg.Logger,
		OnLevelChange: cfg.Memory.OnLevelChange,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: Memory: %w", ErrInvalidConfig, err)
	}
	q.gov = gov
	// A keyed shard's credit: small beside Hard (all shards together at
	// most 1/32 of it), and no larger than keyedChunkMax.
	q.keyed.chunk = min(gov.Stats().Hard/(nKeyedShards*32), keyedChunkMax)
	if err := q.newTier(); err != nil {
		gov.Close()
		return nil, err
	}
	var wg, senders sync.WaitGroup
	wg.Add(1)
	if s := q.spill; s != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.unspillLoop() }()
	}
	if q.cfg.ParkKeys && q.wal != nil {
		p, err := newParking(q)
		if err != nil {
			q.wal.log.Close()
			gov.Close()
			return nil, err
		}
		q.park = p
		q.keepKeys = true
		wg.Add(1)
		go func() { defer wg.Done(); p.releaseLoop() }()
	}
	if w := q.wal; w != nil {
		q.replaying.Store(true)
		wg.Add(1)
		go func() { defer wg.Done(); q.replayLoop(w) }()
	} else {
		close(q.replayDone)
	}
	go func() { defer wg.Done(); q.collect() }()
	for _, sh := range q.centrals[1:] {
		wg.Add(1)
		go func() { defer wg.Done(); q.collectShard(sh) }()
	}
	q.senders = make([]senderSlot[T], cfg.Workers)
	senders.Add(cfg.Workers)
	for i := range cfg.Workers {
		go func() { defer senders.Done(); q.sendLoop(&q.senders[i]) }()
	}
	if p := q.park; p != nil {
		// Started once the senders' slots exist: it looks at them.
		wg.Add(1)
		go func() { defer wg.Done(); p.waitLoop() }()
	}
	go func() { wg.Wait(); close(q.done) }()
	go func() { senders.Wait(); close(q.sendersDone) }()
	return q, nil
}

// Fast returns the slots Enqueue's fast path indexes by P id (see
// Queue.fast); the slice is never changed after New.
func (q *Queue[T]) Fast() []ProcSlot[T] { return q.fast }

// ItemLimit is the largest SizeOf an item may have (0: no limit); when it
// is set, Enqueue calls CheckItem first.
func (q *Queue[T]) ItemLimit() int { return q.itemLimit }

// growProcs makes sure procs has a slot for P id pid. GOMAXPROCS may have
// grown since New: the table is replaced by a larger copy (Enqueues still
// holding the old one use the same slots).
func (q *Queue[T]) growProcs(pid int) *procTable[T] {
	q.growMu.Lock()
	defer q.growMu.Unlock()
	old := q.procs.Load()
	if old != nil && pid < len(old.procs) {
		return old
	}
	n := max(pid+1, runtime.GOMAXPROCS(0))
	t := &procTable[T]{procs: make([]*ProcSlot[T], n)}
	if old != nil {
		copy(t.procs, old.procs)
	}
	for i := range t.procs {
		if t.procs[i] == nil {
			s := &ProcSlot[T]{}
			if i < len(q.fast) {
				s = &q.fast[i]
			}
			s.central = q.centralOf(i)
			r := q.allocRing() // a P's own ring is always allowed
			if q.closing.Load() {
				r.Seal()
			}
			s.Cur.Store(r)
			t.procs[i] = s
		}
	}
	q.procs.Store(t)
	return t
}

// RingsPerP bounds the rings of a queue: each P's current ring plus this
// many minus one per P handed off or spare. Items in a ring that the collector
// has not drained are held but not yet accounted by SizeOf, so the bound is
// what keeps that gap to a few rings' worth.
const RingsPerP = 3

// newRing returns a ring from the pool, or a new one while the queue has
// fewer than RingsPerP per P; nil when neither (the collector is behind: the
// caller waits for a spare). A ring's slots count against the memory budget
// for as long as the ring exists. Never pinned: the pool is a channel, and
// making a ring charges the governor, which may take its lock and report.
func (q *Queue[T]) newRing() *ring.SPSC[T] {
	select {
	case r := <-q.spare:
		if r != nil {
			return r
		}
		q.pokeWaiters(1) // a poke for a waiter (pokeWaiters): pass it on
	default:
	}
	if q.ringCount.Load() >= int64(RingsPerP*len(q.procs.Load().procs)) {
		return nil
	}
	return q.allocRing()
}

// allocRing makes a new ring and counts it.
func (q *Queue[T]) allocRing() *ring.SPSC[T] {
	q.ringCount.Add(1)
	// RingSize was validated: a power of two >= 2. The ring reports when it
	// holds BatchSize items (the size trigger) or is full: either way it is
	// handed off.
	r, err := ring.NewSPSC[T](q.cfg.RingSize, min(q.cfg.BatchSize, q.cfg.RingSize))
	if err != nil {
		// Config.fill admits only sizes NewSPSC accepts: a broken
		// invariant of this package, not bad input.
		panic("vinequeue: RingSize validated but rejected: " + err.Error())
	}
	q.gov.Add(q.ringBytes)
	return r
}

// recycleRing keeps a drained ring in the pool while memory is at the
// normal level, and lets it go (uncharged) above it, so that rings nobody
// uses do not keep the level up: at Soft a producer makes a ring when it
// needs one, and at Hard the rings are full anyway.
func (q *Queue[T]) recycleRing(r *ring.SPSC[T]) {
	if r.IsSealed() {
		return // Stop sealed it: a spare must accept pushes
	}
	if q.gov.Level() == governor.LevelNormal {
		select {
		case q.spare <- r:
			return
		default:
		}
	}
	q.freeRing(r)
}

// freeRing lets r go and uncharges it. A producer waiting for a spare
// (waitSpare) may make one now: one is poked.
func (q *Queue[T]) freeRing(*ring.SPSC[T]) {
	q.ringCount.Add(-1)
	q.gov.Add(-q.ringBytes)
	q.pokeWaiters(1)
}

// The mode matrix: every durability mode × memory policy × intake call × sink
// behaviour × way of ending, each cell checked against what the queue
// promises for it. TestMatrix runs the cells that end with Stop;
// TestMatrixCrash (matrix_crash_test.go) the cells that end with SIGKILL.
//
// Axes:
//
//	mode    memory | overflow | periodic | sync
//	policy  reject | block | spill (spill only with a WAL)
//	intake  one (Enqueue) | batch (EnqueueBatch, 8 items a call) | key (EnqueueKey, 16 keys)
//	sink    ok | failing (30 % of Send calls fail for the first 150 ms, then none)
//	        | downup (every Send fails for the first 150 ms, then none)
//	end     stop (Stop races the producers) | kill (SIGKILL of a child process, then a
//	        new Queue on the same WAL directory)
//
// What every cell promises (a test failure names the promise it broke):
//
//   - Kept: after a clean Stop with a sink that works, every accepted item
//     (its call returned nil) has been delivered, in every mode; nothing went
//     to OnDrop (the retry budget outlasts every outage in the matrix). At a
//     SIGKILL, sync loses nothing accepted; periodic loses no item accepted
//     before the last Stats.DurableThrough the child saw before the kill
//     (how stale that was is logged, not asserted: it is how long a
//     checkpoint took on this machine); overflow and memory lose at most
//     what memory held (bytes ≤ memBound), overflow keeping what it
//     spilled.
//   - Refused means refused: an item whose call returned an error is never
//     delivered, in that process or after a restart; and the error is one the
//     policy names (Reject: ErrFull; every policy: ErrClosed once Stop began,
//     ErrWALFull with a WAL).
//   - Duplicates: none, except after a SIGKILL for items of the batches
//     their senders had not finished (in Send, or past it and not yet
//     acknowledged: see unfinishedAtKill). A restart after a clean Stop
//     replays nothing.
//   - Order (key): per key, FIFO within a process and across restarts;
//     replayed items of a key are delivered before that key's new items.
//   - Memory: Stats().BytesHeld, polled throughout, stays ≤ Hard + memSlack;
//     under Reject and Block so do the bytes accepted and not yet delivered
//     (counted by the test itself, so an item the queue forgets to account is
//     seen).
//   - Replay beside intake: after a SIGKILL the new Queue admits new items
//     while the sink is still down and the backlog waits, and its Stats show
//     the backlog from New on.
//   - Stats: at quiescence (after Stop) the identity in statsIdentity holds,
//     and Enqueued, Delivered, Dropped and Replayed equal what the test saw.
//   - No goroutine is left after Stop (goleak).
//
// VINEQUEUE_MATRIX_LONG=1 runs every SIGKILL cell and ten times the items
// (make soak); VINEQUEUE_CRASH_KILLS=n spreads n kills over the SIGKILL
// cells; -short runs fewer items and SIGKILL cells.
package vinequeue_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/internal/engine"
)

// ---- the axes ----

type mode int

const (
	modeMemory mode = iota
	modeOverflow
	modePeriodic
	modeSync
)

func (m mode) String() string {
	return [...]string{"memory", "overflow", "periodic", "sync"}[m]
}

type intake int

const (
	intakeOne intake = iota
	intakeBatch
	intakeKey
)

func (i intake) String() string { return [...]string{"one", "batch", "key"}[i] }

type sinkKind int

const (
	sinkOK sinkKind = iota
	sinkFailing
	sinkDownUp
	sinkGated // not an axis: the restart after a kill starts with the sink down until the test opens it
)

func (s sinkKind) String() string { return [...]string{"ok", "failing", "downup", "gated"}[s] }

type cell struct {
	Mode   mode
	Policy vq.Policy
	Intake intake
	Sink   sinkKind
	// Collectors is Config.Collectors (0: the default); not an axis of
	// the matrix: TestMatrixCollectors runs a subset with 3.
	Collectors int
}

func (c cell) name() string {
	n := fmt.Sprintf("%v/%v/%v/%v", c.Mode, c.Policy, c.Intake, c.Sink)
	if c.Collectors != 0 {
		n += fmt.Sprintf("/collectors=%d", c.Collectors)
	}
	return n
}

func (c cell) wal() bool { return c.Mode != modeMemory }

// cells lists every cell of the matrix (without the way of ending).
func cells() []cell {
	var out []cell
	for m := modeMemory; m <= modeSync; m++ {
		for _, p := range []vq.Policy{vq.Reject, vq.Block, vq.Spill} {
			if p == vq.Spill && m == modeMemory {
				continue // Spill needs a WAL: New refuses it (ErrInvalidConfig)
			}
			for i := intakeOne; i <= intakeKey; i++ {
				for s := sinkOK; s <= sinkDownUp; s++ {
					out = append(out, cell{Mode: m, Policy: p, Intake: i, Sink: s})
				}
			}
		}
	}
	return out
}

// ---- the parameters, named once ----

const (
	producers   = 4
	batchCall   = 8  // items per EnqueueBatch call
	nKeys       = 16 // EnqueueKey keys
	cfgBatch    = 32
	cfgRing     = 32
	cfgWorkers  = 2
	cfgFlush    = 20 * time.Millisecond
	cfgSync     = 20 * time.Millisecond // WAL SyncInterval (Periodic)
	cfgLimit    = 128 << 10             // Memory.Limit: small, so that every policy meets Hard
	cfgHard     = 0.95                  // the default Memory.Hard
	cfgSegment  = 256 << 10
	cfgMaxBytes = 2 << 20 // WAL MaxBytes: a full WAL is part of the matrix
	failRate    = 0.3
	sinkWindow  = 150 * time.Millisecond // how long the sink fails (failing) or is down (downup)

	// memSlackBatches is the batches of the documented slack over Hard
	// (see memSlack): one each from the replay, the spill read-back and
	// the release of parked keys.
	memSlackBatches = 3

	// replayIntakeWait: how long new items may take, all told, while a
	// backlog waits for a sink that is down (a few hundred small items).
	replayIntakeWait = 3 * time.Second

	stopTimeout = 10 * time.Second // Stop's ctx: the sink is up long before
	watchdog    = 20 * time.Second // a call that has not returned by then is stuck
)

// itemMaxLen bounds itemLen; itemMaxBytes is the most one item accounts by the
// default SizeOf (slice header plus bytes).
const (
	itemMinLen   = 80
	itemMaxLen   = itemMinLen + 192
	itemMaxBytes = 24 + itemMaxLen
)

func hardBytes() int64 {
	hard := cfgHard // a variable: the constant product is not an integer
	return int64(float64(cfgLimit) * hard)
}

// memSlack is the slack over Hard that internal/engine/admit.go documents
// (the memory bound), for Stats.BytesHeld: the rings' items (RingsPerP
// rings per P, drained past Hard), one batch each from the replay, the
// spill read-back and the release of parked keys, and one call's items per
// producer (Sync mode charges a call's items as it admits them). Items at
// their largest.
func memSlack() int64 {
	p := int64(max(runtime.GOMAXPROCS(0), runtime.NumCPU()))
	return (engine.RingsPerP*p*cfgRing + memSlackBatches*cfgBatch + producers*batchCall) * itemMaxBytes
}

func memBound() int64 { return hardBytes() + memSlack() }

type scale struct {
	items     int // per producer, Stop cells
	killMin   time.Duration
	killMax   time.Duration
	long      bool
	killCells func([]cell) []cell
}

func matrixScale() scale {
	switch {
	case os.Getenv("VINEQUEUE_MATRIX_LONG") == "1":
		return scale{items: 10000, killMin: 100 * time.Millisecond, killMax: 1500 * time.Millisecond, long: true,
			killCells: func(cs []cell) []cell { return cs }}
	case testing.Short():
		return scale{items: 400, killMin: 100 * time.Millisecond, killMax: 500 * time.Millisecond,
			killCells: func(cs []cell) []cell { return latin(cs, 1) }}
	}
	return scale{items: 1000, killMin: 100 * time.Millisecond, killMax: 600 * time.Millisecond,
		killCells: func(cs []cell) []cell { return latin(cs, 3) }}
}

// latin picks per mode × policy n cells whose intake and sink both vary
// (sink = intake + the pair's index, mod 3), so that across the pairs every
// intake meets every sink.
func latin(cs []cell, n int) []cell {
	var out []cell
	pair := -1
	var last cell
	for _, c := range cs {
		if pair < 0 || c.Mode != last.Mode || c.Policy != last.Policy {
			pair++
			last = c
		}
		k := (int(c.Intake) + pair) % 3
		if int(c.Sink) == k && int(c.Intake) < n {
			out = append(out, c)
		}
	}
	return out
}

// config is the cell's Config; the same in the parent and in a child.
func (c cell) config(dir string, send vq.SendFunc[[]byte], onDrop func([][]byte, error)) vq.Config[[]byte] {
	cfg := vq.Config[[]byte]{
		Send:          send,
		BatchSize:     cfgBatch,
		RingSize:      cfgRing,
		Workers:       cfgWorkers,
		Collectors:    c.Collectors,
		FlushInterval: cfgFlush,
		Memory:        vq.MemoryConfig{Limit: cfgLimit, Policy: c.Policy},
		Retry:         vq.RetryPolicy{MaxAttempts: 200, InitialBackoff: time.Millisecond, MaxBackoff: 8 * time.Millisecond},
		OnDrop:        onDrop,
	}
	if c.wal() {
		cfg.WAL = vq.WALConfig{
			Dir:          dir,
			Mode:         [...]vq.WALMode{modeOverflow: vq.Overflow, modePeriodic: vq.Periodic, modeSync: vq.Sync}[c.Mode],
			SyncInterval: cfgSync,
			SegmentSize:  cfgSegment,
			MaxBytes:     cfgMaxBytes,
		}
	}
	return cfg
}

// ---- items: the checker reads producer, sequence and key from the bytes ----

// An id is run<<48 | producer<<32 | seq: unique over every process of a cell.
func itemID(run, producer int, seq uint32) uint64 {
	return uint64(run)<<48 | uint64(producer)<<32 | uint64(seq)
}

func idRun(id uint64) int       { return int(id >> 48) }
func idProducer(id uint64) int  { return int(id >> 32 & 0xffff) }
func idSeq(id uint64) uint32    { return uint32(id) }
func idKey(id uint64) uint64    { return uint64(idSeq(id) % nKeys) }
func itemLen(seq uint32) int    { return itemMinLen + int(seq*37%192) }
func itemBytes(id uint64) int64 { return int64(24 + itemLen(idSeq(id))) } // what the default SizeOf counts
func streamOf(id uint64) [3]int64 {
	return [3]int64{int64(idKey(id)), int64(idRun(id)), int64(idProducer(id))}
}

// makeItem: id, key, then a pad of byte(id), so a damaged item is seen.
func makeItem(id uint64) []byte {
	b := make([]byte, itemLen(idSeq(id)))
	binary.LittleEndian.PutUint64(b, id)
	binary.LittleEndian.PutUint64(b[8:], idKey(id))
	for i := 16; i < len(b); i++ {
		b[i] = byte(id)
	}
	return b
}

func parseItem(b []byte) (uint64, bool) {
	if len(b) < 16 {
		return 0, false
	}
	id := binary.LittleEndian.Uint64(b)
	if len(b) != itemLen(idSeq(id)) || binary.LittleEndian.Uint64(b[8:]) != idKey(id) {
		return id, false
	}
	for _, c := range b[16:] {
		if c != byte(id) {
			return id, false
		}
	}
	return id, true
}

// ---- what one process run did ----

type status byte

const (
	accepted status = 'A'
	refused  status = 'R'
)

type itemRec struct {
	id     uint64
	status status
	at     int64 // unix nanos, taken after the call returned
	err    string
}

type runRec struct {
	run    int
	killed bool
	killAt int64
	// durableThrough is the last Stats.DurableThrough the child logged
	// before the kill (unix nanoseconds; 0: none): every item accepted
	// before it was on disk.
	durableThrough int64
	items          []itemRec
	deliveries     [][]uint64 // per successful Send, in the order the sink saw them
	senders        []uint64   // per delivery: the goroutine that called Send (senderID)
	dropped        []uint64
	corrupt        int
	maxHeld        int64 // Stats().BytesHeld
	maxOut         int64 // accepted and not yet delivered or dropped, by the test
	stats          *vq.Stats

	mu    sync.Mutex
	notes []string // violations seen while running (stuck calls, errors), "kind: detail"
}

func (r *runRec) notef(format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// ---- the sink ----

type sink struct {
	kind    sinkKind
	t0      time.Time
	gate    chan struct{} // sinkGated: Send waits for it
	mu      sync.Mutex
	out     *atomic.Int64                                  // outstanding bytes, shared with the producers
	onBatch func(sender uint64, ids []uint64, corrupt int) // under mu; sender: senderID
}

// senderID is the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 42 [running]:"); 0 if that cannot be read. Go
// gives goroutines no identity on purpose; the matrix needs one only to
// tell which Send calls came from the same sender (unfinishedAtKill).
func senderID() uint64 {
	var buf [64]byte
	f := strings.Fields(string(buf[:runtime.Stack(buf[:], false)]))
	if len(f) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}

func (s *sink) send(ctx context.Context, batch [][]byte) error {
	since := time.Since(s.t0)
	switch s.kind {
	case sinkFailing:
		if since < sinkWindow && rand.Float64() < failRate {
			return errors.New("sink failing")
		}
	case sinkDownUp:
		if since < sinkWindow {
			return errors.New("sink down")
		}
	case sinkGated:
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ids := make([]uint64, 0, len(batch))
	corrupt := 0
	var bytes int64
	for _, b := range batch {
		id, ok := parseItem(b)
		if !ok {
			corrupt++
			continue
		}
		ids = append(ids, id)
		bytes += itemBytes(id)
	}
	sender := senderID()
	s.mu.Lock()
	s.onBatch(sender, ids, corrupt)
	s.mu.Unlock()
	s.out.Add(-bytes)
	return nil
}

// ---- producers ----

// produce makes one producer's calls: n items (math.MaxInt32: until ErrClosed
// or the process dies), reporting each call's outcome after it returned.
func produce(q *vq.Queue[[]byte], in intake, run, p, n int, out *atomic.Int64, done *atomic.Int64,
	report func(acc, ref []uint64, err error)) {
	for seq := 0; seq < n; {
		var acc, ref []uint64
		var err error
		switch in {
		case intakeOne, intakeKey:
			id := itemID(run, p, uint32(seq))
			if in == intakeOne {
				err = q.Enqueue(makeItem(id))
			} else {
				err = q.EnqueueKey(idKey(id), makeItem(id))
			}
			if err == nil {
				acc = []uint64{id}
			} else {
				ref = []uint64{id}
			}
			seq++
		case intakeBatch:
			k := min(batchCall, n-seq)
			items := make([][]byte, k)
			ids := make([]uint64, k)
			for i := range k {
				ids[i] = itemID(run, p, uint32(seq+i))
				items[i] = makeItem(ids[i])
			}
			var m int
			m, err = q.EnqueueBatch(items)
			acc = ids[:max(0, min(m, k))]
			if err != nil {
				ref = ids[len(acc):]
			} else if m != k {
				err = fmt.Errorf("EnqueueBatch accepted %d of %d with a nil error", m, k)
			}
			seq += k
		}
		// Counted once accepted: a Send may subtract an item first, which
		// only lowers the peak, never raises it.
		for _, id := range acc {
			out.Add(itemBytes(id))
		}
		report(acc, ref, err)
		done.Add(int64(len(acc) + len(ref)))
		if errors.Is(err, vq.ErrClosed) {
			return
		}
		if err != nil {
			runtime.Gosched() // ErrFull and the like: let the queue drain
		}
	}
}

// errAllowed says whether the policy names err as a way to refuse an item.
func (c cell) errAllowed(err error) bool {
	switch {
	case errors.Is(err, vq.ErrClosed):
		return true
	case errors.Is(err, vq.ErrWALFull):
		return c.wal()
	case errors.Is(err, vq.ErrFull):
		return c.Policy == vq.Reject
	}
	return false
}

// poll follows the memory bound: Stats().BytesHeld and the test's own count of
// bytes accepted and not yet delivered, until stop is closed.
func poll(q *vq.Queue[[]byte], out *atomic.Int64, stop <-chan struct{}, seen func(held, outstanding int64)) {
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	for {
		seen(int64(q.Stats().BytesHeld), out.Load())
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// ---- Stats helpers, written once ----

// leftOnDisk is what Stop left in the WAL for the next New.
func leftOnDisk(st vq.Stats) uint64 { return st.LeftOnDisk }

// backlogItems is the replay backlog Stats shows (items accepted by an
// earlier process and not yet delivered, in memory or still in the WAL).
func backlogItems(st vq.Stats) uint64 { return st.Backlog.Items }

// statsIdentity returns the two sides of the accounting identity that holds
// at quiescence: what came in (accepted now, replayed from an earlier
// process) equals what went out or is still held.
func statsIdentity(st vq.Stats) (in, out uint64) {
	return st.Enqueued + st.Replayed, st.Delivered + st.Dropped + st.Buffered + leftOnDisk(st) + st.Parked
}

// ---- one in-process run ----

type runOpts struct {
	items      int  // per producer; 0: no producers
	raceStop   bool // Stop once half the items are in, while producers go on
	flush      bool // Flush once the producers are done, and check what it promises
	mustReplay int  // items an earlier process left that the queue must replay
}

// runInProcess runs one Queue in this process on dir, with sink kind k, and
// ends it with Stop. It reports false when a call got stuck (goroutines are
// then left behind and the leak check is moot).
func runInProcess(c cell, k sinkKind, dir string, run int, o runOpts) (*runRec, bool) {
	rec := &runRec{run: run}
	var out atomic.Int64
	var recMu sync.Mutex
	s := &sink{kind: k, t0: time.Now(), gate: make(chan struct{}), out: &out,
		onBatch: func(sender uint64, ids []uint64, corrupt int) {
			rec.deliveries = append(rec.deliveries, ids)
			rec.senders = append(rec.senders, sender)
			rec.corrupt += corrupt
		}}
	onDrop := func(b [][]byte, _ error) {
		recMu.Lock()
		defer recMu.Unlock()
		for _, it := range b {
			id, _ := parseItem(it)
			rec.dropped = append(rec.dropped, id)
			out.Add(-itemBytes(id))
		}
	}
	q, err := vq.New(c.config(dir, s.send, onDrop))
	if err != nil {
		rec.notef("New: %v", err)
		return rec, true
	}
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	var maxHeld, maxOut atomic.Int64
	go func() {
		defer close(pollDone)
		poll(q, &out, stopPoll, func(h, o int64) {
			if h > maxHeld.Load() {
				maxHeld.Store(h)
			}
			if o > maxOut.Load() {
				maxOut.Store(o)
			}
		})
	}()

	if o.mustReplay > 0 {
		// The sink is down: nothing can be delivered, so the backlog is
		// all there from New on.
		ok := eventually(time.Second, func() bool { return backlogItems(q.Stats()) >= uint64(o.mustReplay) })
		if !ok {
			rec.notef("backlog: Stats shows %d items while %d wait for replay (sink down)", backlogItems(q.Stats()), o.mustReplay)
		}
	}

	var done atomic.Int64
	var wg sync.WaitGroup
	perProducer := make([][]itemRec, producers)
	if o.items > 0 {
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				produce(q, c.Intake, run, p, o.items, &out, &done, func(acc, ref []uint64, err error) {
					at := time.Now().UnixNano()
					for _, id := range acc {
						perProducer[p] = append(perProducer[p], itemRec{id: id, status: accepted, at: at})
					}
					for _, id := range ref {
						perProducer[p] = append(perProducer[p], itemRec{id: id, status: refused, at: at, err: err.Error()})
					}
					if err != nil && !c.errAllowed(err) {
						rec.notef("refused with an error the policy does not name: %v (%v policy)", err, c.Policy)
					}
				})
			}()
		}
	}
	producersDone := make(chan struct{})
	go func() { wg.Wait(); close(producersDone) }()
	total := int64(producers * o.items)

	switch {
	case k == sinkGated:
		// Replay beside intake: new items are admitted while the backlog
		// waits for a sink that is down.
		select {
		case <-producersDone:
		case <-time.After(replayIntakeWait):
			rec.notef("intake stalled during replay: %d of %d items answered in %v with the sink down", done.Load(), total, replayIntakeWait)
		}
		close(s.gate)
	case o.raceStop:
		eventually(5*time.Second, func() bool { return done.Load() >= total/2 })
	default:
		<-producersDone
	}

	if o.flush {
		flushCheck(q, s, rec, perProducer, producersDone)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		stopped <- q.Stop(ctx)
	}()
	ok := true
	select {
	case err := <-stopped:
		if err != nil {
			rec.notef("Stop: %v", err)
		}
	case <-time.After(watchdog):
		rec.notef("Stop did not return %v after its %v deadline", watchdog-stopTimeout, stopTimeout)
		ok = false
	}
	select {
	case <-producersDone:
	case <-time.After(watchdog):
		rec.notef("producers stuck: %d of %d items answered %v after Stop", done.Load(), total, watchdog)
		ok = false
	}
	close(stopPoll)
	<-pollDone
	if !ok {
		close(s.gate) // unblock a gated Send if it is what holds things
		return rec, false
	}
	st := q.Stats()
	rec.stats = &st
	rec.maxHeld, rec.maxOut = maxHeld.Load(), maxOut.Load()
	for _, pr := range perProducer {
		rec.items = append(rec.items, pr...)
	}
	return rec, true
}

// flushCheck: once the producers are done, Flush must return with every item
// they had accepted delivered, and the Stats identity must hold.
func flushCheck(q *vq.Queue[[]byte], s *sink, rec *runRec, perProducer [][]itemRec, producersDone <-chan struct{}) {
	select {
	case <-producersDone:
	case <-time.After(watchdog):
		return // reported as stuck producers after Stop
	}
	flushed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		flushed <- q.Flush(ctx)
	}()
	select {
	case err := <-flushed:
		if err != nil {
			rec.notef("Flush: %v", err)
			return
		}
	case <-time.After(watchdog):
		rec.notef("Flush did not return %v after its %v deadline", watchdog-stopTimeout, stopTimeout)
		return
	}
	st := q.Stats()
	if in, out := statsIdentity(st); in != out {
		rec.notef("stats identity after Flush: in %d != out %d (%+v)", in, out, st)
	}
	delivered := map[uint64]bool{}
	s.mu.Lock()
	for _, ids := range rec.deliveries {
		for _, id := range ids {
			delivered[id] = true
		}
	}
	s.mu.Unlock()
	missing, total := 0, 0
	for _, pr := range perProducer {
		for _, it := range pr {
			if it.status == accepted {
				total++
				if !delivered[it.id] {
					missing++
				}
			}
		}
	}
	if missing > 0 {
		rec.notef("Flush returned with %d of %d accepted items undelivered", missing, total)
	}
}

// eventually polls cond every millisecond until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
	return true
}

// ---- the checker ----

// violations groups what a cell broke: one line per kind, with a count and
// the first examples.
type violations struct {
	order []string
	n     map[string]int
	ex    map[string][]string
}

func (v *violations) add(kind, format string, args ...any) {
	if v.n == nil {
		v.n, v.ex = map[string]int{}, map[string][]string{}
	}
	if v.n[kind] == 0 {
		v.order = append(v.order, kind)
	}
	v.n[kind]++
	if len(v.ex[kind]) < 3 {
		v.ex[kind] = append(v.ex[kind], fmt.Sprintf(format, args...))
	}
}

func (v *violations) report(t *testing.T) {
	t.Helper()
	for _, k := range v.order {
		t.Errorf("%s: %d (e.g. %s)", k, v.n[k], strings.Join(v.ex[k], "; "))
	}
}

type delivery struct {
	run, batch int
	committed  bool
}

// unfinishedAtKill returns the batches (indexes into r.deliveries) that a
// killed run may deliver again after its restart: per sender goroutine,
// the last batch it delivered. A sender acknowledges a delivered batch in
// the WAL (the ack is in the page cache, which a SIGKILL does not lose)
// before it takes its next batch, so once the same sender has called Send
// again, the earlier batch never comes back. The last one may: the process
// can die after its Send returned and before its acknowledgement is
// written. That is at most one batch per worker, but not always among the
// last Workers (or 2 × Workers) batches in the order the sink saw them: a
// sender whose thread the OS deschedules between its Send and the
// acknowledgement is overtaken by any number of the other senders'
// batches (on a loaded 2-core machine, up to 7 within a few milliseconds).
// A run ended with Stop has none.
func unfinishedAtKill(r *runRec) map[int]bool {
	if !r.killed {
		return nil
	}
	last := map[uint64]int{}
	for b, g := range r.senders {
		last[g] = b
	}
	out := make(map[int]bool, len(last))
	for _, b := range last {
		out[b] = true
	}
	return out
}

// check compares what the runs of one cell did with what the cell promises.
// The last run ended with a clean Stop; the earlier ones were killed.
func check(c cell, runs []*runRec) *violations {
	v := &violations{}
	for _, r := range runs {
		for _, n := range r.notes {
			kind, _, _ := strings.Cut(n, ":")
			v.add(kind, "run %d: %s", r.run, n)
		}
		if r.corrupt > 0 {
			v.add("corrupt", "run %d: %d items delivered damaged", r.run, r.corrupt)
		}
	}
	known := map[uint64]itemRec{}
	for _, r := range runs {
		for _, it := range r.items {
			known[it.id] = it
		}
	}
	// Deliveries in global order: (run, batch, position).
	dels := map[uint64][]delivery{}
	for _, r := range runs {
		unfinished := unfinishedAtKill(r)
		if len(unfinished) > cfgWorkers {
			v.add("senders", "run %d: Send was called from %d goroutines, more than Workers (%d): the duplicate check cannot tell senders apart", r.run, len(unfinished), cfgWorkers)
		}
		for b, ids := range r.deliveries {
			committed := !unfinished[b]
			for _, id := range ids {
				dels[id] = append(dels[id], delivery{r.run, b, committed})
			}
		}
	}
	dropped := map[uint64]bool{}
	for _, r := range runs {
		for _, id := range r.dropped {
			dropped[id] = true
		}
		if len(r.dropped) > 0 {
			v.add("dropped", "run %d: %d items went to OnDrop though the sink recovers within the retry budget", r.run, len(r.dropped))
		}
	}

	// Refused means refused; duplicates only after a kill, for batches in flight.
	for id, ds := range dels {
		it, ok := known[id]
		if ok && it.status == refused {
			v.add("refused item delivered", "id %s refused (%s) in run %d, delivered in run %d", fmtID(id), it.err, it.run(), ds[0].run)
		}
		if !ok && (idRun(id) >= len(runs) || !runs[idRun(id)].killed) {
			v.add("unknown item delivered", "id %s was never offered", fmtID(id))
		}
		for _, d := range ds[:len(ds)-1] {
			if d.committed {
				v.add("duplicate", "id %s delivered %d times (first in run %d, batch %d, whose sender had gone on to a later batch)", fmtID(id), len(ds), d.run, d.batch)
				break
			}
		}
	}

	// Kept: nothing accepted is lost beyond the mode's bound.
	lostBytes := make([]int64, len(runs))
	lostItems := make([]int, len(runs))
	for id, it := range known {
		if it.status != accepted || len(dels[id]) > 0 || dropped[id] {
			continue
		}
		r := runs[it.run()]
		switch {
		case !r.killed:
			v.add("lost at Stop", "id %s accepted in run %d (clean Stop, sink up) never delivered", fmtID(id), r.run)
		case c.Mode == modeSync:
			v.add("lost at SIGKILL (sync)", "id %s accepted %v before the kill, never delivered", fmtID(id), time.Duration(r.killAt-it.at))
		case c.Mode == modePeriodic:
			if durableAtKill(r, it) {
				v.add("lost at SIGKILL (periodic, accepted before DurableThrough)", "id %s accepted %v before the last DurableThrough the child saw (%v before the kill), never delivered",
					fmtID(id), time.Duration(r.durableThrough-it.at), time.Duration(r.killAt-r.durableThrough))
			}
		default:
			lostBytes[r.run] += itemBytes(id)
			lostItems[r.run]++
		}
	}
	for i, b := range lostBytes {
		if b > memBound() {
			v.add("lost at SIGKILL more than memory held", "run %d: %d items (%d B) lost, more than Hard+slack %d B: what memory cannot hold must have been refused or spilled", i, lostItems[i], b, memBound())
		}
	}

	// Order per key.
	if c.Intake == intakeKey {
		last := map[[3]int64]uint32{}
		seen := map[uint64]bool{}
		for _, r := range runs {
			newSeen := map[uint64]bool{} // keys with an item of this run delivered in this run
			for _, ids := range r.deliveries {
				for _, id := range ids {
					k := idKey(id)
					if idRun(id) == r.run {
						newSeen[k] = true
					} else if newSeen[k] {
						v.add("key order: replayed after new", "run %d key %d: id %s from run %d delivered after a new item of the key", r.run, k, fmtID(id), idRun(id))
					}
					if seen[id] {
						continue
					}
					seen[id] = true
					st := streamOf(id)
					if l, ok := last[st]; ok && idSeq(id) < l {
						v.add("key order", "key %d producer %d: seq %d delivered after seq %d", k, idProducer(id), idSeq(id), l)
					}
					last[st] = idSeq(id)
				}
			}
		}
	}

	// Memory.
	for _, r := range runs {
		if r.maxHeld > memBound() {
			v.add("memory: BytesHeld over Hard+slack", "run %d: max %d B > %d B (Hard %d + slack %d)", r.run, r.maxHeld, memBound(), hardBytes(), memSlack())
		}
		if c.Policy != vq.Spill && r.maxOut > memBound() {
			v.add("memory: accepted-undelivered bytes over Hard+slack", "run %d: max %d B > %d B under %v (BytesHeld max %d)", r.run, r.maxOut, memBound(), c.Policy, r.maxHeld)
		}
	}

	// Stats at quiescence, against what the test saw.
	for _, r := range runs {
		st := r.stats
		if st == nil {
			continue
		}
		if in, out := statsIdentity(*st); in != out {
			v.add("stats identity", "run %d: Enqueued %d + Replayed %d = %d != Delivered %d + Dropped %d + Buffered %d + LeftOnDisk %d = %d",
				r.run, st.Enqueued, st.Replayed, in, st.Delivered, st.Dropped, st.Buffered, leftOnDisk(*st), out)
		}
		var acc, del, replayed uint64
		for _, it := range r.items {
			if it.status == accepted {
				acc++
			}
		}
		seenHere := map[uint64]bool{}
		del = uint64(r.corrupt)
		for _, ids := range r.deliveries {
			del += uint64(len(ids))
			for _, id := range ids {
				if idRun(id) != r.run && !seenHere[id] {
					seenHere[id] = true
					replayed++
				}
			}
		}
		if st.Enqueued != acc || st.Delivered != del || st.Dropped != uint64(len(r.dropped)) || st.Replayed != replayed || st.Buffered != 0 {
			v.add("stats vs truth", "run %d: Stats{Enqueued %d Delivered %d Dropped %d Replayed %d Buffered %d}, the test saw {accepted %d delivered %d dropped %d replayed %d buffered 0}",
				r.run, st.Enqueued, st.Delivered, st.Dropped, st.Replayed, st.Buffered, acc, del, len(r.dropped), replayed)
		}
	}
	return v
}

// TestCheckDuplicateWindow pins which redeliveries after a kill check
// accepts: the last batch of each sender, however many batches of the
// other senders follow it (the sender may have been descheduled between
// its Send and the acknowledgement), and no batch its sender went on from.
func TestCheckDuplicateWindow(t *testing.T) {
	c := cell{Mode: modePeriodic, Policy: vq.Spill, Intake: intakeOne, Sink: sinkOK}
	const killAt = int64(time.Second)
	id := func(seq uint32) uint64 { return itemID(0, 0, seq) }
	runs := func(senders []uint64, redeliver uint64) []*runRec {
		killed := &runRec{run: 0, killed: true, killAt: killAt}
		for b, g := range senders {
			killed.items = append(killed.items, itemRec{id: id(uint32(b)), status: accepted, at: killAt})
			killed.deliveries = append(killed.deliveries, []uint64{id(uint32(b))})
			killed.senders = append(killed.senders, g)
		}
		last := &runRec{run: 1, deliveries: [][]uint64{{redeliver}}, senders: []uint64{9}}
		return []*runRec{killed, last}
	}
	for _, tc := range []struct {
		name      string
		senders   []uint64 // per batch of the killed run
		redeliver uint64   // delivered again after the restart
		want      map[string]int
	}{
		{"last batch of a sender overtaken by 5 of the other's", []uint64{1, 2, 2, 2, 2, 2}, id(0), map[string]int{}},
		{"last batch of each sender", []uint64{1, 2, 1, 2}, id(3), map[string]int{}},
		{"a batch its sender went on from", []uint64{1, 1, 2, 2, 2, 2}, id(0), map[string]int{"duplicate": 1}},
		{"among the last 2 × Workers, but its sender went on", []uint64{1, 2, 1, 2, 2}, id(1), map[string]int{"duplicate": 1}},
		{"more senders than Workers", []uint64{1, 2, 3}, id(0), map[string]int{"senders": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := check(c, runs(tc.senders, tc.redeliver))
			got := map[string]int{}
			for _, k := range v.order {
				got[k] = v.n[k]
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("violations %v, want %v (%v)", got, tc.want, v.ex)
			}
		})
	}
}

// durableAtKill reports whether a periodic run promised it at its kill: it
// was accepted before the last DurableThrough the child logged. it.at is
// taken after the call returned, so the call itself was earlier still.
func durableAtKill(r *runRec, it itemRec) bool {
	return r.durableThrough != 0 && it.at < r.durableThrough
}

// TestCheckPeriodicLoss pins the periodic rule at a kill: an item lost is a
// violation if and only if it was accepted before the last DurableThrough
// the child logged, however long before the kill either was.
func TestCheckPeriodicLoss(t *testing.T) {
	c := cell{Mode: modePeriodic, Policy: vq.Reject, Intake: intakeOne, Sink: sinkOK}
	const killAt = int64(10 * time.Second)
	for _, tc := range []struct {
		name        string
		at, durable int64
		want        int
	}{
		{"accepted before DurableThrough", killAt - int64(time.Second), killAt - int64(time.Second) + 1, 1},
		{"accepted after DurableThrough, long before the kill", killAt - int64(5*time.Second), killAt - int64(6*time.Second), 0},
		{"no DurableThrough logged", killAt - int64(5*time.Second), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			killed := &runRec{run: 0, killed: true, killAt: killAt, durableThrough: tc.durable,
				items: []itemRec{{id: itemID(0, 0, 0), status: accepted, at: tc.at}}}
			v := check(c, []*runRec{killed, {run: 1}})
			if got := v.n["lost at SIGKILL (periodic, accepted before DurableThrough)"]; got != tc.want || len(v.order) != min(tc.want, 1) {
				t.Errorf("violations %v, want %d loss (%v)", v.n, tc.want, v.ex)
			}
		})
	}
}

func (it itemRec) run() int { return idRun(it.id) }

func fmtID(id uint64) string {
	return fmt.Sprintf("%d/%d/%d", idRun(id), idProducer(id), idSeq(id))
}

// summary is the one line a cell logs: what it did and the memory peak.
func summary(runs []*runRec) string {
	var parts []string
	for _, r := range runs {
		acc, ref, del := 0, 0, 0
		for _, it := range r.items {
			if it.status == accepted {
				acc++
			} else {
				ref++
			}
		}
		for _, ids := range r.deliveries {
			del += len(ids)
		}
		end := "stop"
		if r.killed {
			end = "kill"
		}
		parts = append(parts, fmt.Sprintf("run %d (%s): accepted %d refused %d delivered %d, max BytesHeld %d B, max outstanding %d B",
			r.run, end, acc, ref, del, r.maxHeld, r.maxOut))
	}
	return strings.Join(parts, "; ") + fmt.Sprintf(" (bound %d B)", memBound())
}

// ---- TestMatrix: the cells that end with Stop ----

// TestMatrix runs every cell ending with Stop: producers race Stop, then (with
// a WAL) a new Queue on the same directory must replay nothing.
func TestMatrix(t *testing.T) {
	matrixStop(t, cells())
}

// TestMatrixCollectors runs cells ending with Stop with the central stage in
// 3 shards, each with its collector, and GOMAXPROCS at least 4 so that every
// shard has Ps (oversubscribed on a smaller machine): one cell per mode ×
// policy with -short, three per pair by default, all of them in the long run.
func TestMatrixCollectors(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	sc := matrixScale()
	cs := sc.killCells(cells()) // the same subset as the kill cells: latin per pair
	for i := range cs {
		cs[i].Collectors = 3
	}
	matrixStop(t, cs)
}

func matrixStop(t *testing.T, cs []cell) {
	sc := matrixScale()
	for _, c := range cs {
		t.Run(c.name()+"/stop", func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			dir := t.TempDir()
			r0, ok := runInProcess(c, c.Sink, dir, 0, runOpts{items: sc.items, raceStop: true})
			runs := []*runRec{r0}
			if ok && c.wal() && r0.stats != nil {
				var r1 *runRec
				r1, ok = runInProcess(c, sinkOK, dir, 1, runOpts{})
				runs = append(runs, r1)
			}
			t.Log(summary(runs))
			check(c, runs).report(t)
			if ok {
				goleak.VerifyNone(t, leaks)
			}
		})
	}
}

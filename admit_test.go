package vinequeue

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
)

// heldWatch tracks the largest Stats.BytesHeld seen: a goroutine polls
// Stats until stopped, and observe adds samples from the test's own
// goroutines (after each call), so a peak between polls is not missed.
type heldWatch[T any] struct {
	q    *Queue[T]
	max  atomic.Int64
	stop chan struct{}
	done chan struct{}
}

// rejectTally counts calls under Policy Reject: accepted, or refused with
// ErrFull; any other error fails the test.
type rejectTally struct{ accepted, refused atomic.Int64 }

// note counts err's call (nil: accepted) and reports whether the caller
// should go on.
func (r *rejectTally) note(t *testing.T, err error) bool {
	switch {
	case err == nil:
		r.accepted.Add(1)
	case errors.Is(err, ErrFull):
		r.refused.Add(1)
	default:
		t.Error(err)
		return false
	}
	return true
}

func watchHeld[T any](q *Queue[T]) *heldWatch[T] {
	w := &heldWatch[T]{q: q, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			w.observe()
			runtime.Gosched()
		}
	}()
	return w
}

func (w *heldWatch[T]) observe() {
	h := int64(w.q.Stats().BytesHeld)
	for m := w.max.Load(); h > m && !w.max.CompareAndSwap(m, h); m = w.max.Load() {
	}
}

func (w *heldWatch[T]) finish() int64 {
	close(w.stop)
	<-w.done
	return w.max.Load()
}

// gate is a sink that holds every Send until opened.
type gate struct {
	open      chan struct{}
	delivered atomic.Int64
	bytes     atomic.Int64
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) send(ctx context.Context, b [][]byte) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.delivered.Add(int64(len(b)))
	for _, v := range b {
		g.bytes.Add(int64(len(v)))
	}
	return nil
}

// TestEnqueueKeyRejectBounded: issue 10 item 3. EnqueueKey under Reject with
// a 1 MiB limit, offered 100 MiB against a stalled sink: the bytes held never
// pass Hard by more than one item per producer, the rest is refused with
// ErrFull and counted, and exactly the accepted items are delivered once the
// sink opens. On the old main EnqueueKey ignored the limit and took it all.
func TestEnqueueKeyRejectBounded(t *testing.T) {
	const (
		limit     = 1 << 20
		itemSize  = 4 << 10
		producers = 8
	)
	perProducer := 3200 // 8 × 3200 × 4 KiB = 100 MiB offered
	if testing.Short() {
		perProducer = 800
	}
	g := newGate()
	q, err := New(Config[[]byte]{Send: g.send, BatchSize: 64, Workers: 2,
		Memory: MemoryConfig{Limit: limit, Policy: Reject}})
	if err != nil {
		t.Fatal(err)
	}
	w := watchHeld(q)
	var tally rejectTally
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				if !tally.note(t, q.EnqueueKey(uint64(p*perProducer+i), make([]byte, itemSize))) {
					return
				}
				w.observe()
			}
		}()
	}
	wg.Wait()
	maxHeld := w.finish()
	held := tally.accepted.Load() * itemSize // the sink is stalled: all still held
	close(g.open)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	hard := int64(limit) * 95 / 100
	bound := hard + producers*(itemSize+24)
	t.Logf("accepted %d (%d KiB), refused %d, max BytesHeld %d KiB, hard %d KiB", tally.accepted.Load(), held>>10, tally.refused.Load(), maxHeld>>10, hard>>10)
	if maxHeld > bound {
		t.Errorf("BytesHeld reached %d, past Hard %d + one item per producer", maxHeld, hard)
	}
	if held > bound {
		t.Errorf("accepted %d bytes against a stalled sink, past Hard %d + one item per producer", held, hard)
	}
	if tally.refused.Load() == 0 || st.Rejected != uint64(tally.refused.Load()) {
		t.Errorf("refused %d, Stats.Rejected %d", tally.refused.Load(), st.Rejected)
	}
	if g.delivered.Load() != tally.accepted.Load() || st.Delivered != uint64(tally.accepted.Load()) {
		t.Errorf("delivered %d (Stats %d), accepted %d: refused means refused", g.delivered.Load(), st.Delivered, tally.accepted.Load())
	}
	if st.BytesHeld != 0 {
		t.Errorf("BytesHeld %d after Close: a charge was not undone", st.BytesHeld)
	}
}

// TestBlockWaitsAndResumes: under Block an EnqueueKey at the hard level
// waits (counted in Stats.Blocked) until memory falls, then is accepted;
// one still waiting at Stop gets ErrClosed and is never delivered. On the
// old main EnqueueKey never waited.
func TestBlockWaitsAndResumes(t *testing.T) {
	const limit, itemSize = 256 << 10, 8 << 10
	g := newGate()
	q, err := New(Config[[]byte]{Send: g.send, BatchSize: 4, Workers: 1,
		Memory: MemoryConfig{Limit: limit, Policy: Block}})
	if err != nil {
		t.Fatal(err)
	}
	// Fill to Hard from one goroutine: each call returns before the next,
	// so the one that waits is the first past Hard.
	result := make(chan error, 1)
	accepted := 0
	go func() {
		for i := 0; ; i++ {
			if err := q.EnqueueKey(uint64(i), make([]byte, itemSize)); err != nil {
				result <- err
				return
			}
			if q.Stats().Blocked > 0 {
				// This call waited and was then accepted.
				result <- nil
				return
			}
			accepted++
		}
	}()
	waitFor(t, "a producer blocked at Hard", func() bool { return q.Stats().Blocked > 0 })
	select {
	case err := <-result:
		t.Fatalf("the blocked call returned %v while the sink was stalled", err)
	default:
	}
	if l := q.Stats().Level; l != LevelHard {
		t.Fatalf("blocked at level %v", l)
	}
	close(g.open) // memory falls: the call goes on
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("the blocked call returned %v after memory fell", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked call did not resume after memory fell")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := g.delivered.Load(); got != int64(accepted+1) {
		t.Errorf("delivered %d, accepted %d", got, accepted+1)
	}

	// Stop while blocked: ErrClosed, and the item is not delivered.
	g = newGate()
	q, err = New(Config[[]byte]{Send: g.send, BatchSize: 4, Workers: 1,
		Memory: MemoryConfig{Limit: limit, Policy: Block}})
	if err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int64
	go func() {
		for i := 0; ; i++ {
			if err := q.EnqueueKey(uint64(i), make([]byte, itemSize)); err != nil {
				result <- err
				return
			}
			ok.Add(1)
		}
	}()
	waitFor(t, "a producer blocked at Hard", func() bool { return q.Stats().Blocked > 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- q.Close() }()
	if err := <-result; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked call at Stop = %v, want ErrClosed", err)
	}
	close(g.open)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if got := g.delivered.Load(); got != ok.Load() {
		t.Errorf("delivered %d, accepted %d: the refused item came back", got, ok.Load())
	}
}

// TestSpillWALFullBounded: issue 10 item 3 under Spill. The WAL is capped
// (MaxBytes) and the sink is down: once the WAL is full, producers get
// errors matching ErrWALFull, and the bytes held stay within Hard plus the
// items in rings (what the collector may drain past Hard). On the old main
// the collector kept draining rings into memory once spilling failed, and
// producers saw no error.
func TestSpillWALFullBounded(t *testing.T) {
	const (
		limit    = 1 << 20
		itemSize = 4 << 10
		ringSize = 16
	)
	items := 12_000 // 47 MiB offered
	if testing.Short() {
		items = 4000
	}
	g := newGate()
	q, err := New(Config[[]byte]{Send: g.send, BatchSize: ringSize, RingSize: ringSize, Workers: 1,
		Memory: MemoryConfig{Limit: limit, Policy: Spill},
		WAL: WALConfig{Dir: t.TempDir(), Mode: Overflow, Compression: NoCompression,
			SegmentSize: 1 << 20, MaxBytes: 2 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	w := watchHeld(q)
	var accepted, walFull atomic.Int64
	var wg sync.WaitGroup
	const producers = 4
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range items / producers {
				switch err := q.Enqueue(make([]byte, itemSize)); {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrWALFull):
					walFull.Add(1)
				default:
					t.Error(err)
					return
				}
				w.observe()
			}
		}()
	}
	wg.Wait()
	maxHeld := w.finish()
	st := q.Stats()
	hard := int64(limit) * 95 / 100
	slack := int64(engine.RingsPerP*runtime.GOMAXPROCS(0)*ringSize) * (itemSize + 24)
	t.Logf("accepted %d, ErrWALFull %d, spilled %d, max BytesHeld %d KiB (hard %d KiB + rings %d KiB)",
		accepted.Load(), walFull.Load(), st.Spilled, maxHeld>>10, hard>>10, slack>>10)
	if walFull.Load() == 0 {
		t.Error("no producer got ErrWALFull with the WAL full and the sink down")
	}
	if maxHeld > hard+slack {
		t.Errorf("BytesHeld reached %d, past Hard %d + the rings' items %d", maxHeld, hard, slack)
	}
	if st.Rejected != uint64(walFull.Load()) {
		t.Errorf("Stats.Rejected %d, ErrWALFull returned %d times", st.Rejected, walFull.Load())
	}
	close(g.open)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := g.delivered.Load(); got != accepted.Load() {
		t.Errorf("delivered %d, accepted %d", got, accepted.Load())
	}
}

// TestWALModeNeedsDir: issue 10 item 7. Sync or Periodic without a Dir used
// to run memory only while Enqueue's nil claimed durability.
func TestWALModeNeedsDir(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		_, err := New(Config[[]byte]{Send: func(context.Context, [][]byte) error { return nil }, WAL: WALConfig{Mode: mode}})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "WAL.Dir") {
			t.Errorf("WAL mode %v without Dir: New = %v, want ErrInvalidConfig naming WAL.Dir", mode, err)
		}
	}
}

package engine

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/ring"
	"go.uber.org/goleak"
)

// ringCensus lists every ring the queue holds while nothing moves (no
// producer running, the collectors idle after a Flush): each P's current
// ring and spare, and the pool. It fails the test if a ring is in two
// places (handed to two producers, or installed and pooled at once).
func ringCensus[T any](t *testing.T, q *Queue[T]) map[*ring.SPSC[T]]string {
	t.Helper()
	seen := make(map[*ring.SPSC[T]]string)
	add := func(r *ring.SPSC[T], where string) {
		if r == nil {
			return
		}
		if prev, dup := seen[r]; dup {
			t.Fatalf("ring %p is both %s and %s", r, prev, where)
		}
		seen[r] = where
	}
	for pid, s := range q.procs.Load().procs {
		add(s.Cur.Load(), "P "+strconv.Itoa(pid)+"'s current ring")
		add(s.spare.Load(), "P "+strconv.Itoa(pid)+"'s spare")
	}
	var pooled []*ring.SPSC[T]
	for len(q.spare) > 0 {
		r := <-q.spare
		if r != nil { // nil is a poke for a waiter (pokeWaiters)
			pooled = append(pooled, r)
			add(r, "in the pool")
		}
	}
	for _, r := range pooled {
		q.spare <- r
	}
	return seen
}

// TestSpareRingsHeldOnce: with rings so small that producers hand off and
// wait for rings all the time, on several Ps and two central shards, every
// item is delivered exactly once, and afterwards every ring the queue
// counts is in exactly one place: none was handed to two producers, none
// was lost.
func TestSpareRingsHeldOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	const producers, each = 32, 4000
	seen := make([]atomic.Uint32, producers*each)
	var delivered atomic.Int64
	cfg := testConfig(func(_ context.Context, b []int) error {
		for _, v := range b {
			seen[v].Add(1)
		}
		delivered.Add(int64(len(b)))
		return nil
	})
	cfg.RingSize, cfg.BatchSize, cfg.Collectors = 16, 8, 2
	cfg.Memory.Limit = 64 << 20
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				if err := q.EnqueueSlow(p*each + i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != producers*each {
		t.Fatalf("%d items delivered, want %d", got, producers*each)
	}
	for v := range seen {
		if n := seen[v].Load(); n != 1 {
			t.Fatalf("item %d delivered %d times", v, n)
		}
	}
	rings := ringCensus(t, q)
	if got, want := int64(len(rings)), q.ringCount.Load(); got != want {
		t.Fatalf("%d rings found in the Ps and the pool, the queue counts %d: a ring was lost", got, want)
	}
}

// TestStopRacingWaitersLosesNothing: Stop while producers hand off and wait
// for rings. Every producer returns (nil or ErrClosed, none stays parked),
// every accepted item is delivered exactly once, and no ring is in two
// places or left holding an item.
func TestStopRacingWaitersLosesNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	const producers, each = 64, 1 << 20
	var delivered, dup atomic.Int64
	var mu sync.Mutex
	got := make(map[int]bool)
	cfg := testConfig(func(_ context.Context, b []int) error {
		mu.Lock()
		for _, v := range b {
			if got[v] {
				dup.Add(1)
			}
			got[v] = true
		}
		mu.Unlock()
		delivered.Add(int64(len(b)))
		return nil
	})
	cfg.RingSize, cfg.BatchSize = 16, 8
	cfg.Memory.Limit = 64 << 20
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				err := q.EnqueueSlow(p*each + i)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				accepted.Add(1)
			}
		})
	}
	for accepted.Load() < 200_000 {
		runtime.Gosched()
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("producers still waiting 10 s after Stop")
	}
	if d, a := delivered.Load(), accepted.Load(); d != a || dup.Load() != 0 {
		t.Fatalf("%d items accepted, %d delivered, %d twice", a, d, dup.Load())
	}
	for r, where := range ringCensus(t, q) {
		if n := r.Len(); n != 0 {
			t.Fatalf("after Stop, %s holds %d items", where, n)
		}
	}
}

// lackRings makes refill fail (no ring in the pool, the ring count at its
// bound) and returns the undo.
func lackRings[T any](t *testing.T, q *Queue[T]) func() {
	t.Helper()
	var pooled []*ring.SPSC[T]
	for len(q.spare) > 0 {
		if r := <-q.spare; r != nil {
			pooled = append(pooled, r)
		}
	}
	extra := int64(RingsPerP*len(q.procs.Load().procs)) - q.ringCount.Load()
	q.ringCount.Add(extra)
	return func() {
		q.ringCount.Add(-extra)
		for _, r := range pooled {
			q.spare <- r
		}
	}
}

// TestWaiterWokenByDrainInPlace: a producer whose ring is full, with no
// spare and none to be had, is let go by the collector draining that ring
// where it is; nothing else would wake it (no ring is handed off, and the
// interval tick, which pokes every waiter, is an hour away).
func TestWaiterWokenByDrainInPlace(t *testing.T) {
	defer goleak.VerifyNone(t)
	var delivered atomic.Int64
	cfg := testConfig(func(_ context.Context, b []int) error { delivered.Add(int64(len(b))); return nil })
	cfg.RingSize, cfg.BatchSize = 8, 8
	cfg.FlushInterval = time.Hour // no tick lets the waiter go instead
	cfg.Memory.Limit = 64 << 20
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s := q.procs.Load().procs[0]
	spare := s.spare.Swap(nil)
	undo := lackRings(t, q)
	r := s.Cur.Load()
	// Only this goroutine pushes to P 0's ring: the test's producers are
	// the calls below, and nothing else enqueues.
	for i := 0; r.Len() < r.Cap(); i++ {
		r.Push(i)
	}
	done := make(chan error, 1)
	go func() { done <- q.waitSpare(s) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not let go: its full ring was not drained in place")
	}
	if n := r.Len(); n >= r.Cap() {
		t.Fatalf("the ring still holds %d items", n)
	}
	undo()
	s.spare.CompareAndSwap(nil, spare)
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := delivered.Load(); got != 8 {
		t.Fatalf("%d items delivered, want 8", got)
	}
}

// TestStopWakesRingWaiter: a producer parked for a ring that nothing will
// free (its slot is one no collector drains) is let go by Stop.
func TestStopWakesRingWaiter(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, []int) error { return nil })
	cfg.RingSize, cfg.BatchSize = 8, 8
	cfg.Memory.Limit = 64 << 20
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ring.NewSPSC[int](8, 8)
	if err != nil {
		t.Fatal(err)
	}
	for r.Len() < r.Cap() {
		r.Push(1)
	}
	orphan := &ProcSlot[int]{central: q.centrals[0]}
	orphan.Cur.Store(r)
	undo := lackRings(t, q)
	done := make(chan error, 1)
	go func() { done <- q.waitSpare(orphan) }()
	deadline := time.Now().Add(10 * time.Second)
	for q.spareWaiters.Load() == 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	select {
	case err := <-done:
		t.Fatalf("waitSpare returned %v before Stop", err)
	default:
	}
	defer undo()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a producer waiting for a ring was not let go by Stop")
	}
}

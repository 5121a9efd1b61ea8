package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records every delivered item.
type sink[T comparable] struct {
	mu      sync.Mutex
	seen    map[T]int
	batches int
	maxLen  int
	n       atomic.Int64
}

func newSink[T comparable]() *sink[T] { return &sink[T]{seen: make(map[T]int)} }

func (s *sink[T]) send(_ context.Context, batch []T) error {
	s.mu.Lock()
	for _, v := range batch {
		s.seen[v]++
	}
	s.batches++
	s.maxLen = max(s.maxLen, len(batch))
	s.mu.Unlock()
	s.n.Add(int64(len(batch)))
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
}

func TestDeliversEverything(t *testing.T) {
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, BatchSize: 100, Workers: 3, RingSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	for i := 0; i < n; i++ {
		if err := q.Enqueue(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.seen) != n {
		t.Fatalf("delivered %d distinct items, want %d", len(s.seen), n)
	}
	for v, c := range s.seen {
		if c != 1 {
			t.Fatalf("item %d delivered %d times", v, c)
		}
	}
	if s.maxLen > 100 {
		t.Fatalf("batch of %d items > BatchSize 100", s.maxLen)
	}
	st := q.Stats()
	if st.Enqueued != n || st.Delivered != n || st.Buffered != 0 || st.BytesHeld != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBatchSizeTrigger(t *testing.T) {
	got := make(chan int, 10)
	q, err := New(Config[int]{
		Send:          func(_ context.Context, b []int) error { got <- len(b); return nil },
		BatchSize:     50,
		FlushInterval: time.Hour, // only the size trigger can fire
		RingSize:      1024,      // far from full: the ring reports each 50 items
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := 0; i < 60; i++ {
		q.Enqueue(i)
	}
	select {
	case n := <-got:
		if n != 50 {
			t.Fatalf("first batch has %d items, want 50", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no batch sent at BatchSize within 10s with FlushInterval 1h")
	}
	select {
	case n := <-got:
		t.Fatalf("a second batch of %d items went out before the interval", n)
	default:
	}
}

func TestFlushIntervalTrigger(t *testing.T) {
	got := make(chan []int, 10)
	q, err := New(Config[int]{
		Send:          func(_ context.Context, b []int) error { got <- append([]int(nil), b...); return nil },
		BatchSize:     1000,
		FlushInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	start := time.Now()
	q.Enqueue(7)
	select {
	case b := <-got:
		if len(b) != 1 || b[0] != 7 {
			t.Fatalf("got batch %v", b)
		}
		t.Logf("a lone item was sent after %v (FlushInterval 20ms)", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("a lone item was not sent by the interval trigger")
	}
}

func TestFlush(t *testing.T) {
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, FlushInterval: time.Hour, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for round := 0; round < 5; round++ {
		for i := 0; i < 1234; i++ {
			q.Enqueue(round*10000 + i)
		}
		if err := q.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := s.n.Load(); got != int64((round+1)*1234) {
			t.Fatalf("after Flush %d delivered %d, want %d", round, got, (round+1)*1234)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a cancelled ctx = %v", err)
	}
}

// TestExactlyOnceStopRace: 64 goroutines enqueue unique ids while Stop races
// them; every id whose Enqueue returned nil is delivered exactly once, the
// rest got ErrClosed.
func TestExactlyOnceStopRace(t *testing.T) {
	for round := 0; round < 5; round++ {
		s := newSink[uint64]()
		q, err := New(Config[uint64]{Send: s.send, BatchSize: 64, Workers: 4, RingSize: 128})
		if err != nil {
			t.Fatal(err)
		}
		const G = 64
		accepted := make([][]uint64, G)
		var wg sync.WaitGroup
		var started sync.WaitGroup
		started.Add(G)
		for g := 0; g < G; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				for i := uint64(0); ; i++ {
					id := uint64(g)<<32 | i
					var err error
					if i%5 == 4 { // mix in the batch path
						var n int
						n, err = q.EnqueueBatch([]uint64{id})
						if n == 1 {
							err = nil
						}
					} else {
						err = q.Enqueue(id)
					}
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("Enqueue: %v", err)
						return
					}
					accepted[g] = append(accepted[g], id)
				}
			}()
		}
		started.Wait()
		waitFor(t, "some items accepted", func() bool { return q.Stats().Enqueued > 10000 })
		if err := q.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		total := 0
		for _, ids := range accepted {
			total += len(ids)
			for _, id := range ids {
				if c := s.seen[id]; c != 1 {
					t.Fatalf("round %d: accepted id %x delivered %d times", round, id, c)
				}
			}
		}
		if len(s.seen) != total {
			t.Fatalf("round %d: delivered %d distinct ids, accepted %d", round, len(s.seen), total)
		}
		if st := q.Stats(); st.Enqueued != uint64(total) || st.Delivered != uint64(total) {
			t.Fatalf("stats %+v, accepted %d", st, total)
		}
	}
}

func TestClosed(t *testing.T) {
	q, err := New(Config[int]{Send: func(context.Context, []int) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop = %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close after Stop = %v", err)
	}
	if err := q.Enqueue(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Enqueue after Stop = %v", err)
	}
	if n, err := q.EnqueueBatch([]int{1, 2}); n != 0 || !errors.Is(err, ErrClosed) {
		t.Fatalf("EnqueueBatch after Stop = %d, %v", n, err)
	}
	if err := q.EnqueueKey(3, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("EnqueueKey after Stop = %v", err)
	}
	if err := q.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Stop = %v", err)
	}
}

func TestInvalidConfig(t *testing.T) {
	ok := func(context.Context, []int) error { return nil }
	cases := []struct {
		field string
		cfg   Config[int]
	}{
		{"Send", Config[int]{}},
		{"BatchSize", Config[int]{Send: ok, BatchSize: -1}},
		{"BatchSize", Config[int]{Send: ok, BatchSize: 20, MaxBatchSize: 10}},
		{"MinBatchSize", Config[int]{Send: ok, MinBatchSize: 20, MaxBatchSize: 10}},
		{"FlushInterval", Config[int]{Send: ok, FlushInterval: -time.Second}},
		{"FlushInterval", Config[int]{Send: ok, FlushInterval: time.Microsecond}},
		{"Workers", Config[int]{Send: ok, Workers: -2}},
		{"RingSize", Config[int]{Send: ok, RingSize: 1000}},
		{"RingSize", Config[int]{Send: ok, RingSize: 1}},
		{"Retry.MaxAttempts", Config[int]{Send: ok, Retry: RetryPolicy{MaxAttempts: -2}}},
		{"Retry.Jitter", Config[int]{Send: ok, Retry: RetryPolicy{Jitter: 2}}},
		{"Memory.Soft", Config[int]{Send: ok, Memory: MemoryConfig{Soft: 1.5}}},
		{"Memory.Hard", Config[int]{Send: ok, Memory: MemoryConfig{Soft: 0.9, Hard: 0.5}}},
		{"Memory.Limit", Config[int]{Send: ok, Memory: MemoryConfig{Limit: -1}}},
	}
	for _, c := range cases {
		q, err := New(c.cfg)
		if !errors.Is(err, ErrInvalidConfig) {
			if q != nil {
				q.Close()
			}
			t.Errorf("%s: err = %v, want ErrInvalidConfig", c.field, err)
			continue
		}
		if want := c.field + ":"; !contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, c.field)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestRingsFollowGOMAXPROCS: New allocates rings for GOMAXPROCS Ps, not for
// every CPU (a container's GOMAXPROCS is often below NumCPU), and a P id
// without a ring yet gets one on its first Enqueue.
func TestRingsFollowGOMAXPROCS(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, RingSize: 16, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if n := q.e.Rings(); n != 1 {
		t.Fatalf("New with GOMAXPROCS 1 made %d rings, want 1", n)
	}
	for i := 1; i < len(q.fast); i++ {
		if q.fast[i].Cur.Load() != nil {
			t.Fatalf("slot %d has a ring before its P ran", i)
		}
	}
	runtime.GOMAXPROCS(4)
	var wg sync.WaitGroup
	const producers, per = 16, 1000
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := q.Enqueue(g*per + i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(s.seen); got != producers*per {
		t.Fatalf("delivered %d, want %d", got, producers*per)
	}
}

// TestGOMAXPROCSGrowth raises GOMAXPROCS after New while producers run: new
// P ids get rings, nothing is lost.
func TestGOMAXPROCSGrowth(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, RingSize: 16, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := q.Enqueue(int(next.Add(1))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for _, p := range []int{2, 4, 8, 3, 16} {
		runtime.GOMAXPROCS(p)
		mark := next.Load()
		waitFor(t, "progress", func() bool { return next.Load() > mark+1000 })
	}
	close(stop)
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d rings after GOMAXPROCS went up to 16, %d slots in place (fast path)", q.e.Rings(), len(q.fast))
	if got, want := int64(len(s.seen)), next.Load(); got != want {
		t.Fatalf("delivered %d, enqueued %d", got, want)
	}
}

func TestKeyedOrder(t *testing.T) {
	const producers, perProducer, keys = 8, 50_000, 8
	n := perProducer
	if testing.Short() {
		n = 5000
	}
	var mu sync.Mutex
	last := map[uint64]map[int]int{} // key → producer → last seq
	var failed atomic.Bool
	type item struct {
		key      uint64
		producer int
		seq      int
	}
	var total atomic.Int64
	send := func(_ context.Context, b []item) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			m := last[it.key]
			if m == nil {
				m = map[int]int{}
				last[it.key] = m
			}
			prev, ok := m[it.producer]
			if (!ok && it.seq != 0) || (ok && it.seq != prev+1) {
				if failed.CompareAndSwap(false, true) {
					t.Errorf("key %d producer %d: seq %d after %d", it.key, it.producer, it.seq, prev)
				}
			}
			m[it.producer] = it.seq
		}
		total.Add(int64(len(b)))
		return nil
	}
	q, err := New(Config[item]{Send: send, Workers: 4, BatchSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seqs := make([]int, keys)
			for i := 0; i < n; i++ {
				k := uint64(i % keys)
				if err := q.EnqueueKey(k, item{k, p, seqs[k]}); err != nil {
					t.Error(err)
					return
				}
				seqs[k]++
			}
		}()
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := total.Load(); got != int64(producers*n) {
		t.Fatalf("delivered %d, want %d", got, producers*n)
	}
	for k, m := range last {
		for p, s := range m {
			if want := n/keys - 1; s != want {
				t.Errorf("key %d producer %d ended at seq %d, want %d", k, p, s, want)
			}
		}
	}
}

func TestRetryThenDeliver(t *testing.T) {
	var calls atomic.Int32
	s := newSink[int]()
	q, err := New(Config[int]{
		Send: func(ctx context.Context, b []int) error {
			if calls.Add(1) <= 2 {
				return errors.New("broker unavailable")
			}
			return s.send(ctx, b)
		},
		Retry: RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	q.Enqueue(1)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if st.Delivered != 1 || st.Retries != 2 || st.Dropped != 0 || s.seen[1] != 1 {
		t.Fatalf("stats %+v, seen %v", st, s.seen)
	}
}

func TestPanicAndDrop(t *testing.T) {
	var dropped []int
	var reason error
	q, err := New(Config[int]{
		Send:  func(context.Context, []int) error { panic("boom") },
		Retry: RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond},
		OnDrop: func(b []int, why error) {
			dropped = append(dropped, b...)
			reason = why
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		q.Enqueue(i)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if len(dropped) != 10 || st.Dropped != 10 || st.Delivered != 0 || st.Retries != 1 {
		t.Fatalf("dropped %v, stats %+v", dropped, st)
	}
	if !errors.Is(reason, ErrSendPanic) {
		t.Fatalf("drop reason %v does not wrap ErrSendPanic", reason)
	}
}

// TestStopDeadline: Send blocks until its ctx is cancelled; Stop with a short
// deadline drops and counts everything, and returns the deadline error.
func TestStopDeadline(t *testing.T) {
	var dropped atomic.Int64
	q, err := New(Config[int]{
		Send: func(ctx context.Context, b []int) error {
			<-ctx.Done()
			return ctx.Err()
		},
		BatchSize: 10,
		OnDrop:    func(b []int, _ error) { dropped.Add(int64(len(b))) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		q.Enqueue(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	st := q.Stats()
	if dropped.Load() != 100 || st.Dropped != 100 || st.Buffered != 0 {
		t.Fatalf("dropped %d, stats %+v", dropped.Load(), st)
	}
}

func TestRingFullWaits(t *testing.T) {
	// A tiny ring and a slow sender: producers wait for room, nothing lost.
	release := make(chan struct{})
	s := newSink[int]()
	q, err := New(Config[int]{
		Send: func(ctx context.Context, b []int) error {
			<-release
			return s.send(ctx, b)
		},
		RingSize: 4, BatchSize: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			if err := q.Enqueue(i); err != nil {
				t.Error(err)
			}
		}
	}()
	close(release)
	<-done
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s.seen) != 1000 {
		t.Fatalf("delivered %d", len(s.seen))
	}
}

func ExampleQueue() {
	q, err := New(Config[string]{
		Send: func(_ context.Context, batch []string) error {
			fmt.Println("sending", len(batch), "events")
			return nil
		},
		BatchSize: 100,
	})
	if err != nil {
		panic(err)
	}
	for i := 0; i < 250; i++ {
		_ = q.Enqueue(fmt.Sprintf("event %d", i)) // nil: accepted
	}
	// Stop delivers everything accepted, then returns.
	if err := q.Stop(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("delivered", q.Stats().Delivered)
	// Output:
	// sending 100 events
	// sending 100 events
	// sending 50 events
	// delivered 250
}

// TestIdleCPU: after traffic stops, the queue's goroutines park; the process
// uses well under a core (getrusage over a second; the bound is generous,
// the claim in the README is < 1 %).
func TestIdleCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a second of idle time")
	}
	q, err := New(Config[int]{Send: func(context.Context, []int) error { return nil }, FlushInterval: 100 * time.Millisecond, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := 0; i < 100000; i++ {
		q.Enqueue(i)
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, start := cpu(), time.Now()
	idle := time.NewTimer(time.Second)
	<-idle.C // the quantity measured is time passing: this is the idle period, not a wait for an event
	used, wall := cpu()-before, time.Since(start)
	frac := float64(used) / float64(wall)
	t.Logf("idle for %v: %v of CPU (%.3f%% of a core)", wall, used, 100*frac)
	if frac > 0.05 {
		t.Errorf("idle queue used %.1f%% of a core", 100*frac)
	}
}

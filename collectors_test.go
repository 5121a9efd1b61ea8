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

	"go.uber.org/goleak"
)

// TestCollectorsConfig: Collectors outside [0, maxCollectors] is refused,
// naming the field.
func TestCollectorsConfig(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, n := range []int{-1, maxCollectors + 1} {
		_, err := New(Config[int]{Send: func(context.Context, []int) error { return nil }, Collectors: n})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Collectors") {
			t.Errorf("Collectors %d: New = %v, want ErrInvalidConfig naming Collectors", n, err)
		}
	}
}

// checkOnce fails unless every item in want was delivered exactly once and
// nothing else was.
func checkOnce(t *testing.T, s *sink[int], want map[int]bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for v, n := range s.seen {
		if n != 1 || !want[v] {
			t.Fatalf("item %d delivered %d times (accepted: %v)", v, n, want[v])
		}
	}
	if len(s.seen) != len(want) {
		t.Fatalf("delivered %d distinct items, accepted %d", len(s.seen), len(want))
	}
}

// TestCollectorsGOMAXPROCSChanges: with 3 central shards, GOMAXPROCS moves
// up and down while producers run (new P ids map onto the existing shards):
// every item is delivered once, and the batches still fill.
func TestCollectorsGOMAXPROCSChanges(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const batchSize = 100
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, RingSize: 128, BatchSize: batchSize, Collectors: 3, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 16 {
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
	for _, p := range []int{2, 4, 8, 3, 16, 5} {
		runtime.GOMAXPROCS(p)
		mark := next.Load()
		waitFor(t, "progress", func() bool { return next.Load() > mark+5000 })
	}
	close(stop)
	wg.Wait()
	st := q.Stats()
	s.mu.Lock()
	batches, items := s.batches, len(s.seen)
	s.mu.Unlock()
	// Before Stop every batch was cut full (no tick in an hour, no Flush).
	if mean := float64(items) / float64(batches); batches == 0 || mean < 0.8*batchSize {
		t.Fatalf("mean batch %.1f items over %d batches, want at least %.0f", mean, batches, 0.8*batchSize)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	want := make(map[int]bool, next.Load())
	for v := 1; v <= int(next.Load()); v++ {
		want[v] = true
	}
	checkOnce(t, s, want)
	t.Logf("%d items, %d batches before Stop, %d rings, Enqueued %d", next.Load(), batches, q.e.Rings(), st.Enqueued)
}

// TestCollectorsStopRacesEnqueue: with 3 central shards and every shard fed
// (GOMAXPROCS ≥ 4), producers of Enqueue and EnqueueBatch race Stop: every
// accepted item is delivered exactly once, no refused one is.
func TestCollectorsStopRacesEnqueue(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		s := newSink[int]()
		q, err := New(Config[int]{Send: s.send, RingSize: 64, BatchSize: 50, Workers: 2, Collectors: 3})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		accepted := make(map[int]bool)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []int
				defer func() {
					mu.Lock()
					for _, v := range mine {
						accepted[v] = true
					}
					mu.Unlock()
				}()
				base := g << 24
				for i := 0; ; i++ {
					if g%2 == 0 {
						if q.Enqueue(base+i) != nil {
							return
						}
						mine = append(mine, base+i)
						continue
					}
					vs := make([]int, 7)
					for k := range vs {
						vs[k] = base + i*7 + k
					}
					n, err := q.EnqueueBatch(vs)
					mine = append(mine, vs[:n]...)
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							t.Error(err)
						}
						return
					}
				}
			}()
		}
		waitFor(t, "deliveries", func() bool { return s.n.Load() > int64(1000*(round%4+1)) })
		if err := q.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		checkOnce(t, s, accepted)
	}
}

// TestCollectorsFlushCoversEveryShard: Flush returns only once what every
// shard's rings held is delivered; nothing is cut by size or by the tick
// here (BatchSize above what is enqueued, FlushInterval an hour), so only
// Flush can deliver, and it must reach every shard.
func TestCollectorsFlushCoversEveryShard(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	s := newSink[int]()
	q, err := New(Config[int]{Send: s.send, RingSize: 4096, BatchSize: 4000, Collectors: 3, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for round := range 3 {
		var wg sync.WaitGroup
		var accepted atomic.Int64
		for g := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					if err := q.Enqueue(round<<20 | g<<10 | i); err != nil {
						t.Error(err)
						return
					}
					accepted.Add(1)
					runtime.Gosched() // spread the items over the Ps
				}
			}()
		}
		wg.Wait()
		before := s.n.Load()
		if err := q.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := s.n.Load() - before; got != accepted.Load() {
			t.Fatalf("round %d: Flush returned with %d of %d items delivered", round, got, accepted.Load())
		}
	}
}

// TestCollectorsStopDeadline: with 3 central shards holding batches and a
// Send that ignores its ctx, Stop returns by its deadline (every collector
// gives up what it holds), and every accepted item is delivered or handed
// to OnDrop, none twice.
func TestCollectorsStopDeadline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0))))
	stuck := make(chan struct{})
	s := newSink[int]()
	var mu sync.Mutex
	dropped := make(map[int]int)
	q, err := New(Config[int]{
		Send: func(ctx context.Context, b []int) error {
			<-stuck // ignores ctx
			return s.send(ctx, b)
		},
		BatchSize: 10, RingSize: 64, Collectors: 3, FlushInterval: time.Hour,
		OnDrop: func(b []int, _ error) {
			mu.Lock()
			for _, v := range b {
				dropped[v]++
			}
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if err := q.Enqueue(g<<10 | i); err != nil {
					t.Error(err)
					return
				}
				accepted.Add(1)
				runtime.Gosched()
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- q.Stop(ctx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop = %v, want DeadlineExceeded", err)
		}
	case <-time.After(20 * time.Second):
		close(stuck)
		t.Fatal("Stop is still waiting past its deadline")
	}
	close(stuck) // the abandoned Send returns; its batch was given up already
	mu.Lock()
	defer mu.Unlock()
	for v, n := range dropped {
		if n != 1 {
			t.Fatalf("item %d handed to OnDrop %d times", v, n)
		}
	}
	if got := int64(len(dropped)); got != accepted.Load() {
		t.Fatalf("OnDrop got %d distinct items of %d accepted (Send delivered none)", got, accepted.Load())
	}
	if st := q.Stats(); st.Dropped != uint64(accepted.Load()) || st.Delivered != 0 {
		t.Fatalf("Stats: Dropped %d, Delivered %d; want %d dropped", st.Dropped, st.Delivered, accepted.Load())
	}
}

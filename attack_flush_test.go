package vinequeue

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// scatterOverPs enqueues n items (ids from next) from many goroutines while
// GOMAXPROCS is wide, so that partial rings of many Ps hold some, then
// narrows GOMAXPROCS to 1: the Ps that held them are gone.
func scatterOverPs(t *testing.T, enqueue func(id uint64) error, next *atomic.Uint64, goroutines, each int) {
	t.Helper()
	runtime.GOMAXPROCS(8)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range each {
				if err := enqueue(next.Add(1)); err != nil {
					t.Error(err)
					return
				}
				runtime.Gosched()
			}
		}()
	}
	close(start)
	wg.Wait()
	runtime.GOMAXPROCS(1)
}

// TestAttackFlushAfterGOMAXPROCSShrinks: items left in partial rings of Ps
// that GOMAXPROCS then removes are still "accepted before the call": Flush
// waits for them (no tick in an hour to help it).
func TestAttackFlushAfterGOMAXPROCSShrinks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, collectors := range []int{1, 3} {
		var delivered atomic.Int64
		q, err := New(Config[uint64]{
			Send:      func(_ context.Context, b []uint64) error { delivered.Add(int64(len(b))); return nil },
			BatchSize: 1000, RingSize: 1024, Collectors: collectors,
			FlushInterval: time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		var next atomic.Uint64
		scatterOverPs(t, q.Enqueue, &next, 64, 5)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = q.Flush(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Collectors %d: Flush: %v", collectors, err)
		}
		if got := delivered.Load(); got != int64(next.Load()) {
			t.Fatalf("Collectors %d: Flush returned with %d of %d items delivered", collectors, got, next.Load())
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAttackDurableThroughAfterGOMAXPROCSShrinks: Periodic, the sink held
// shut; items sit in partial rings of Ps that GOMAXPROCS then removes. Once
// DurableThrough passes the moment they were all accepted, a copy of the
// directory (what a SIGKILL would leave, and more) replays every one.
func TestAttackDurableThroughAfterGOMAXPROCSShrinks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, collectors := range []int{1, 3} {
		dir := t.TempDir()
		release := make(chan struct{})
		q, err := New(Config[[]byte]{
			Send: func(ctx context.Context, b [][]byte) error {
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			},
			BatchSize: 1000, RingSize: 1024, Collectors: collectors,
			FlushInterval: time.Hour,
			WAL:           WALConfig{Dir: dir, Mode: Periodic, SyncInterval: 10 * time.Millisecond, SegmentSize: 1 << 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		var next atomic.Uint64
		scatterOverPs(t, func(id uint64) error {
			return q.Enqueue(binary.LittleEndian.AppendUint64(nil, id))
		}, &next, 64, 5)
		accepted := time.Now()
		deadline := time.Now().Add(10 * time.Second)
		for !q.Stats().DurableThrough.After(accepted) {
			if time.Now().After(deadline) {
				t.Fatalf("Collectors %d: DurableThrough %v never passed %v", collectors, q.Stats().DurableThrough, accepted)
			}
			time.Sleep(time.Millisecond)
		}
		snap := t.TempDir()
		copyDir(t, dir, snap)
		close(release)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		replayed := map[uint64]bool{}
		var mu sync.Mutex
		r, err := New(Config[[]byte]{
			Send: func(_ context.Context, b [][]byte) error {
				mu.Lock()
				defer mu.Unlock()
				for _, v := range b {
					replayed[binary.LittleEndian.Uint64(v)] = true
				}
				return nil
			},
			WAL: WALConfig{Dir: snap, Mode: Periodic, SegmentSize: 1 << 20},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		missing := 0
		for id := uint64(1); id <= next.Load(); id++ {
			if !replayed[id] {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("Collectors %d: %d of %d items accepted before DurableThrough are not in the WAL", collectors, missing, next.Load())
		}
	}
}

package vinequeue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestHealthClosedRefusesLaterCalls: once Health reports Closed, every
// intake call that starts afterwards is refused with ErrClosed. Closed
// used to turn true when Stop began, before Stop sealed the rings, so an
// Enqueue in that gap was accepted (and delivered): a caller that checked
// Health first was told the queue was closed and then had its item taken.
// Ready is false for the whole of Stop. Every accepted item is delivered
// exactly once.
func TestHealthClosedRefusesLaterCalls(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{0, Periodic, Sync} {
		name := "memory"
		if mode != 0 {
			name = mode.String()
		}
		t.Run(name, func(t *testing.T) {
			rounds := 200
			if mode == Sync {
				rounds = 50
			}
			if raceBuild {
				rounds /= 3
			}
			if testing.Short() {
				rounds /= 10
			}
			var late atomic.Int64 // accepted after Health said Closed
			for range rounds {
				healthClosedRound(t, mode, &late)
				if t.Failed() {
					return
				}
			}
			if n := late.Load(); n != 0 {
				t.Fatalf("%d calls accepted after Health reported Closed", n)
			}
		})
	}
}

func healthClosedRound(t *testing.T, mode WALMode, late *atomic.Int64) {
	var delivered atomic.Int64
	cfg := Config[uint64]{
		Send:      func(_ context.Context, b []uint64) error { delivered.Add(int64(len(b))); return nil },
		BatchSize: 64, FlushInterval: 2 * time.Millisecond,
	}
	if mode != 0 {
		cfg.WAL, cfg.Codec = WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20}, uint64Codec{}
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Each producer asks Health before each call: a call made after
	// Health said Closed must be refused.
	const producers = 3
	var accepted atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{}, producers)
	for p := range producers {
		wg.Go(func() {
			started <- struct{}{}
			for i := uint64(0); ; i++ {
				h := q.Health()
				if h.Closed && h.Ready {
					t.Errorf("Health: Closed and Ready")
				}
				var err error
				switch {
				case p == 2 && i%2 == 0:
					var n int
					n, err = q.EnqueueBatch([]uint64{i, i})
					accepted.Add(int64(n))
					if err == nil {
						accepted.Add(-1) // counted once more below
					}
				case p == 1 && i%2 == 0:
					err = q.EnqueueKey(i%7, i)
				default:
					err = q.Enqueue(i)
				}
				if err == nil {
					accepted.Add(1)
					if h.Closed {
						late.Add(1)
					}
					continue
				}
				if !errors.Is(err, ErrClosed) {
					t.Errorf("intake: %v", err)
				}
				return
			}
		})
	}
	for range producers {
		<-started
	}
	if err := q.Stop(context.Background()); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if h := q.Health(); !h.Closed || h.Ready {
		t.Errorf("after Stop: Health %+v", h)
	}
	if d, a := delivered.Load(), accepted.Load(); d != a {
		t.Errorf("delivered %d of %d accepted", d, a)
	}
}

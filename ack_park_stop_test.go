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

// TestAckParkCollectorsStopRace: EnqueueAck (both levels) and EnqueueKey
// with parked keys, three collectors, and a Close racing the callers.
// Every call returns; what was refused is never delivered; nothing is
// delivered twice; the identity holds after Close; no goroutine is left.
func TestAckParkCollectorsStopRace(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, mode := range []WALMode{Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			const poison = 1<<63 | 3<<32 // key 3's first item
			var mu sync.Mutex
			seen := map[uint64]int{}
			cfg := Config[uint64]{
				Send: func(_ context.Context, b []uint64) error {
					mu.Lock()
					defer mu.Unlock()
					for _, v := range b {
						if v == poison {
							return Permanent(errors.New("poison"))
						}
					}
					for _, v := range b {
						seen[v]++
					}
					return nil
				},
				BatchSize: 16, FlushInterval: 5 * time.Millisecond, Workers: 4, Collectors: 3,
				Retry:    RetryPolicy{MaxAttempts: 1},
				WAL:      WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20},
				Codec:    uint64Codec{},
				ParkKeys: true,
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var calls atomic.Int64
			refused := make([][]uint64, 24)
			for g := range 24 {
				wg.Go(func() {
					for i := 0; ; i++ {
						v := uint64(g)<<32 | uint64(i)
						calls.Add(1)
						var err error
						switch g % 3 {
						case 0:
							err = q.EnqueueAck(context.Background(), v, AckDelivered)
						case 1:
							err = q.EnqueueAck(context.Background(), v, AckDurable)
						default: // keyed, key g (never 3: 3%3 == 0), tagged by the top bit
							v |= 1 << 63
							err = q.EnqueueKey(uint64(g), v)
						}
						switch {
						case err == nil:
						case errors.Is(err, ErrClosed):
							refused[g] = append(refused[g], v)
							return
						default:
							t.Errorf("enqueue: %v", err)
							return
						}
					}
				})
			}
			// Key 3's first item is poison: key 3 parks.
			if err := q.EnqueueKey(3, poison); err != nil {
				t.Fatal(err)
			}
			for i := 1; i < 50; i++ {
				if err := q.EnqueueKey(3, 1<<63|3<<32|uint64(i)); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "some calls", func() bool { return calls.Load() > 2000 })
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			st := q.Stats()
			checkIdentity(t, st)
			if st.ParkedKeys == 0 {
				t.Errorf("key 3 not parked: %+v", st)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, vs := range refused {
				for _, v := range vs {
					if seen[v] != 0 {
						t.Fatalf("refused item %x delivered", v)
					}
				}
			}
			for v, n := range seen {
				if n != 1 {
					t.Fatalf("item %x delivered %d times", v, n)
				}
				if v>>32 == 1<<31|3 {
					t.Fatalf("item %x of parked key 3 delivered", v)
				}
			}
		})
	}
}

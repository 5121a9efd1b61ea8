package vinequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
	"go.uber.org/goleak"
)

// doublingCodec encodes an item whose first byte is 'L' twice over, so
// that an item SizeOf lets in can still be too large for a WAL record once
// encoded (the check at the call sees SizeOf, not the encoding). Other
// items are stored as they are.
type doublingCodec struct{}

func (doublingCodec) Append(dst []byte, v []byte) ([]byte, error) {
	dst = append(dst, v...)
	if len(v) > 0 && v[0] == 'L' {
		dst = append(dst, v...)
	}
	return dst, nil
}

func (doublingCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestSpillTooLargeForARecord: under Policy Spill at the hard level, a
// batch holding an item too large for any WAL record (its encoding, which
// the check at the call cannot see) used to stay in memory whole, without
// counting as a failed spill: the rings kept flowing, and each such batch
// added to memory past Hard and the bound, without limit. Now that item
// alone is given up (OnDrop, with an error matching ErrTooLarge; counted in
// Stats.Dropped), the rest of its batch is spilled, and memory stays
// within the bound; every other accepted item is delivered once.
func TestSpillTooLargeForARecord(t *testing.T) {
	for _, mode := range []WALMode{Overflow, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			const (
				limit     = 64 << 10
				itemHeld  = 256 // what an item weighs (SizeOf)
				ringSize  = 16
				batchSize = 16
				producers = 2
				large     = 40 << 10 // encoded: 80 KiB, past a 64 KiB segment's record limit
			)
			hard := int64(limit) * 95 / 100
			// The bound of internal/engine/admit.go: the rings' items
			// (RingsPerP per P), and a batch each being filled, read
			// back and replayed.
			slack := int64(engine.RingsPerP*runtime.GOMAXPROCS(0)*ringSize+3*batchSize) * itemHeld
			run := time.Second
			if testing.Short() {
				run = 300 * time.Millisecond
			}

			var mu sync.Mutex
			delivered := map[uint64]int{}
			dropped := map[uint64]int{}
			var badReason atomic.Value
			open := make(chan struct{})
			send := func(ctx context.Context, b [][]byte) error {
				select {
				case <-open:
				case <-ctx.Done():
					return ctx.Err()
				}
				mu.Lock()
				defer mu.Unlock()
				for _, v := range b {
					delivered[binary.LittleEndian.Uint64(v[1:])]++
				}
				return nil
			}
			onDrop := func(b [][]byte, reason error) {
				if !errors.Is(reason, ErrTooLarge) {
					badReason.Store(reason)
				}
				mu.Lock()
				defer mu.Unlock()
				for _, v := range b {
					dropped[binary.LittleEndian.Uint64(v[1:])]++
				}
			}
			q, err := New(Config[[]byte]{Send: send, OnDrop: onDrop, Codec: doublingCodec{},
				SizeOf:    func([]byte) int { return itemHeld },
				BatchSize: batchSize, RingSize: ringSize, Workers: 1, FlushInterval: 20 * time.Millisecond,
				Memory: MemoryConfig{Limit: limit, Policy: Spill},
				WAL:    WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 64 << 10, SyncInterval: 20 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			w := watchHeld(q)
			var next atomic.Uint64
			var largeAccepted sync.Map // id → true
			var accepted, walFull atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range producers {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						id := next.Add(1)
						v := make([]byte, 9, large)
						v[0] = 'S'
						if id%8 == 0 {
							v = v[:large]
							v[0] = 'L'
						}
						binary.LittleEndian.PutUint64(v[1:], id)
						switch err := q.Enqueue(v); {
						case err == nil:
							accepted.Add(1)
							if v[0] == 'L' {
								largeAccepted.Store(id, true)
							}
						case errors.Is(err, ErrWALFull):
							walFull.Add(1)
						default:
							t.Error(err)
							return
						}
						w.observe()
					}
				})
			}
			deadline := time.Now().Add(run)
			for time.Now().Before(deadline) && w.max.Load() <= 4*(hard+slack) {
				time.Sleep(10 * time.Millisecond) // the test's length, not a wait for an event
			}
			close(stop)
			wg.Wait()
			maxHeld := w.finish()
			close(open)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := q.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			t.Logf("accepted %d (ErrWALFull %d), spilled %d, delivered %d, dropped %d; max BytesHeld %d KiB (hard %d KiB + slack %d KiB)",
				accepted.Load(), walFull.Load(), st.Spilled, st.Delivered, st.Dropped, maxHeld>>10, hard>>10, slack>>10)
			if st.Spilled == 0 {
				t.Errorf("nothing spilled: the test did not test")
			}
			if maxHeld > hard+slack {
				t.Errorf("BytesHeld reached %d B, past Hard %d B + slack %d B", maxHeld, hard, slack)
			}
			if r := badReason.Load(); r != nil {
				t.Errorf("OnDrop reason %v, want one matching ErrTooLarge", r)
			}
			// A large item reaches the sink (from memory, where nothing
			// spills: below Hard) or OnDrop, once; every other accepted
			// item reaches the sink once.
			mu.Lock()
			defer mu.Unlock()
			bad, nDropped := 0, 0
			report := func(format string, args ...any) {
				if bad++; bad <= 10 {
					t.Errorf(format, args...)
				}
			}
			for id, n := range dropped {
				nDropped += n
				if _, isLarge := largeAccepted.Load(id); !isLarge || n != 1 || delivered[id] != 0 {
					report("item %d (large %v) handed to OnDrop %d times and delivered %d times", id, isLarge, n, delivered[id])
				}
			}
			for id, n := range delivered {
				if n != 1 {
					report("item %d delivered %d times", id, n)
				}
			}
			if got := len(delivered) + len(dropped); int64(got) != accepted.Load() || st.Dropped != uint64(nDropped) {
				t.Errorf("accepted %d: delivered %d, dropped %d; Stats.Dropped %d", accepted.Load(), len(delivered), len(dropped), st.Dropped)
			}
			if nDropped == 0 {
				t.Errorf("no large item met a spill: the test did not test")
			}
		})
	}
}

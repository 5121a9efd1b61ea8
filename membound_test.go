package vinequeue

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
)

// TestSpillWALFillsAgainBounded: under Policy Spill, with a WAL that fills,
// frees room as batches are delivered and acknowledged, and fills again,
// memory stays within Hard plus the documented slack. A spill that fails
// keeps its batch in memory past Hard; the queue used to forget that failure
// at the next spill that succeeded and let the rings flow again, so every
// time the WAL filled another rings' worth could stay in memory past Hard:
// with a sink slower than intake, BytesHeld went past the bound, the
// further the more often the WAL filled (seen in the matrix's crash cell
// periodic/spill/batch/ok).
func TestSpillWALFillsAgainBounded(t *testing.T) {
	const (
		limit     = 64 << 10
		itemSize  = 4 << 10 // what an item takes in the WAL
		itemHeld  = 256     // what it weighs in memory (SizeOf)
		ringSize  = 16
		batchSize = 16
		producers = 4
		perCall   = 8
	)
	// The longer it runs, the more often the WAL fills again: before the
	// fix, 3 s went past the bound in 5 runs of 5 (1.5 s in about half).
	run := 3 * time.Second
	if testing.Short() {
		run = 1500 * time.Millisecond
	}
	// A sink that works, slowly: each Send waits for a tick, so the WAL
	// frees room (acknowledged segments) a little at a time while
	// producers keep it full. Items weigh little in memory and much in
	// the WAL, so that a delivery frees far more WAL than memory: each
	// time the WAL has room again, the rings may flow, and what they bring
	// is what this test weighs.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var delivered atomic.Int64
	send := func(ctx context.Context, b [][]byte) error {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		delivered.Add(int64(len(b)))
		return nil
	}
	q, err := New(Config[[]byte]{Send: send, SizeOf: func([]byte) int { return itemHeld }, BatchSize: batchSize, RingSize: ringSize, Workers: 2,
		FlushInterval: 20 * time.Millisecond,
		Memory:        MemoryConfig{Limit: limit, Policy: Spill},
		WAL: WALConfig{Dir: t.TempDir(), Mode: Periodic, SyncInterval: 20 * time.Millisecond,
			Compression: NoCompression, SegmentSize: 64 << 10, MaxBytes: 512 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	w := watchHeld(q)
	var accepted, walFull atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vs := make([][]byte, perCall)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := range vs {
					vs[i] = make([]byte, itemSize)
				}
				n, err := q.EnqueueBatch(vs)
				accepted.Add(int64(n))
				switch {
				case err == nil:
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
	time.Sleep(run) // the test's length, not a wait for an event
	close(stop)
	wg.Wait()
	maxHeld := w.finish()
	st := q.Stats()
	hard := int64(limit) * 95 / 100
	// The bound of internal/engine/admit.go: the rings' items (RingsPerP
	// per P), and a batch each being filled, read back and replayed.
	slack := int64(engine.RingsPerP*runtime.GOMAXPROCS(0)*ringSize+3*batchSize) * itemHeld
	t.Logf("accepted %d, ErrWALFull %d calls, spilled %d, delivered %d, max BytesHeld %d KiB (hard %d KiB + slack %d KiB)",
		accepted.Load(), walFull.Load(), st.Spilled, delivered.Load(), maxHeld>>10, hard>>10, slack>>10)
	if walFull.Load() == 0 || st.Spilled == 0 {
		t.Errorf("the WAL never filled (%d ErrWALFull) or nothing spilled (%d): the test did not test", walFull.Load(), st.Spilled)
	}
	if maxHeld > hard+slack {
		t.Errorf("BytesHeld reached %d B, past Hard %d B + slack %d B", maxHeld, hard, slack)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := q.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

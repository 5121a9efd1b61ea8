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

// TestAttackHardBoundKeyedAckPark: EnqueueKey (with parked keys),
// EnqueueAck AckDelivered whose callers give up waiting after a few
// milliseconds and enqueue again (their items stay accepted), and
// AckDurable, together, under Reject with a 1 MiB limit against a stalled
// sink and three collectors: BytesHeld stays within Hard plus one item per
// concurrent call, and after the sink opens everything balances.
func TestAttackHardBoundKeyedAckPark(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Periodic, Sync, Overflow} {
		t.Run(mode.String(), func(t *testing.T) {
			const (
				limit    = 1 << 20
				itemSize = 4 << 10
				keyed    = 4
				ackers   = 8
				keysPer  = 8
			)
			openCh := make(chan struct{})
			var delivered atomic.Int64
			send := func(ctx context.Context, b [][]byte) error {
				for _, v := range b {
					if v[0] == 'P' {
						return Permanent(errors.New("poison"))
					}
				}
				select {
				case <-openCh:
				case <-ctx.Done():
					return ctx.Err()
				}
				delivered.Add(int64(len(b)))
				return nil
			}
			q, err := New(Config[[]byte]{Send: send, BatchSize: 16, Workers: 4, Collectors: 3,
				FlushInterval: 5 * time.Millisecond,
				Retry:         RetryPolicy{MaxAttempts: 1},
				Memory:        MemoryConfig{Limit: limit, Policy: Reject},
				WAL:           WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 4 << 20, SyncInterval: 10 * time.Millisecond},
				ParkKeys:      true})
			if err != nil {
				t.Fatal(err)
			}
			w := watchHeld(q)
			var tally rejectTally
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for p := range keyed {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k, v := hardKeyedItem(p, i, keysPer, itemSize, 'k')
						if !tally.note(t, q.EnqueueKey(k, v)) {
							return
						}
						w.observe()
					}
				})
			}
			for a := range ackers {
				wg.Go(func() {
					level := AckDelivered
					if a%2 == 0 {
						level = AckDurable
					}
					for {
						select {
						case <-stop:
							return
						default:
						}
						v := make([]byte, itemSize)
						v[0] = 'a'
						ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
						err := q.EnqueueAck(ctx, v, level)
						cancel()
						if errors.Is(err, context.DeadlineExceeded) {
							err = nil // accepted: the caller gave up waiting for its outcome
						}
						if !tally.note(t, err) {
							return
						}
						w.observe()
					}
				})
			}
			deadline := time.Now().Add(10 * time.Second)
			for tally.refused.Load() < 2000 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			maxHeld := w.finish()
			close(openCh)
			flushT(t, q)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			hard := int64(limit) * 95 / 100
			bound := hard + (keyed+ackers)*(itemSize+24)
			t.Logf("accepted %d, refused %d, max BytesHeld %d KiB, hard %d KiB, bound %d KiB; parked %d, delivered %d",
				tally.accepted.Load(), tally.refused.Load(), maxHeld>>10, hard>>10, bound>>10, st.Parked, st.Delivered)
			if maxHeld > bound {
				t.Errorf("BytesHeld reached %d KiB, past Hard + one item per concurrent call (%d KiB)", maxHeld>>10, bound>>10)
			}
			if st.BytesHeld != 0 || st.Buffered != 0 {
				t.Errorf("after Close: BytesHeld %d, Buffered %d", st.BytesHeld, st.Buffered)
			}
			if uint64(tally.accepted.Load()) != st.Enqueued {
				t.Errorf("callers saw %d accepted, Enqueued %d", tally.accepted.Load(), st.Enqueued)
			}
			checkIdentity(t, st)
		})
	}
}

package vinequeue_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// TestAttackPeriodicDeadLetterWALFull: Periodic, every batch fails for
// good while the WAL is full (MaxBytes two segments): the sender's write
// of its batch (the lazy write, done before the dead letter) and the dead
// letter itself can fail. Every accepted item must still be accounted for
// exactly once: handed to OnDrop and kept nowhere (then never delivered
// later), or kept (the main log or a dead letter) and delivered once by
// the next queue after a requeue, never lost silently, never delivered
// twice. Keyed and unkeyed, with and without ParkKeys.
func TestAttackPeriodicDeadLetterWALFull(t *testing.T) {
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("ParkKeys=%v", park), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			dir := t.TempDir()
			var mu sync.Mutex
			dropped := map[string]int{}
			delivered := map[string]int{}
			key := func(it []byte) string { return string(it[:bytes.IndexByte(it, '|')]) }
			cfg := func(send vq.SendFunc[[]byte]) vq.Config[[]byte] {
				return vq.Config[[]byte]{
					Send:          send,
					BatchSize:     8,
					FlushInterval: 2 * time.Millisecond,
					Workers:       2,
					Retry:         vq.RetryPolicy{MaxAttempts: 1},
					ParkKeys:      park,
					OnDrop: func(b [][]byte, _ error) {
						mu.Lock()
						defer mu.Unlock()
						for _, it := range b {
							dropped[key(it)]++
						}
					},
					WAL: vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: 2 * time.Millisecond,
						SegmentSize: 64 << 10, MaxBytes: 128 << 10, Compression: vq.NoCompression},
				}
			}
			q, err := vq.New(cfg(func(context.Context, [][]byte) error {
				return vq.Permanent(errors.New("rejected"))
			}))
			if err != nil {
				t.Fatal(err)
			}
			pad := bytes.Repeat([]byte{'x'}, 2000)
			var accepted []string
			full := 0
			for i := 0; i < 400; i++ {
				id := fmt.Sprintf("%d", i)
				it := append([]byte(id+"|"), pad...)
				var err error
				if i%2 == 0 {
					err = q.EnqueueKey(uint64(i%5), it)
				} else {
					err = q.Enqueue(it)
				}
				switch {
				case err == nil:
					accepted = append(accepted, id)
				case errors.Is(err, vq.ErrWALFull):
					full++
				default:
					t.Fatal(err)
				}
			}
			flushThenClose(t, q, 30*time.Second)
			st1 := q.Stats()

			q2, err := vq.New(cfg(func(_ context.Context, b [][]byte) error {
				mu.Lock()
				defer mu.Unlock()
				for _, it := range b {
					delivered[key(it)]++
				}
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			flushWithin(t, q2, 30*time.Second)
			for range 5 {
				n, err := q2.RequeueDeadLetters()
				if errors.Is(err, vq.ErrWALFull) {
					// The WAL has no room to take the letters' items
					// back (documented: the letters not requeued stay);
					// what stays is counted below as kept.
					flushWithin(t, q2, 30*time.Second)
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				flushWithin(t, q2, 30*time.Second)
				if n == 0 {
					break
				}
			}
			letters, err := q2.DeadLetters()
			if err != nil {
				t.Fatal(err)
			}
			kept := 0 // items still in a dead letter: handed to OnDrop, and kept
			for _, l := range letters {
				kept += l.Items
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			lost, twice := 0, 0
			for _, id := range accepted {
				d := delivered[id]
				switch {
				case d > 1:
					twice++
				case d == 0 && dropped[id] == 0:
					if lost < 5 {
						t.Errorf("item %s accepted, never handed to OnDrop, never delivered by the next queue", id)
					}
					lost++
				}
			}
			t.Logf("%d accepted, %d refused with ErrWALFull; first queue: dropped %d, dead-lettered %d, left on disk %d, parked %d; next: replayed %d, delivered %d, %d still in dead letters",
				len(accepted), full, st1.Dropped, st1.DeadLettered, st1.LeftOnDisk, st1.Parked, q2.Stats().Replayed, q2.Stats().Delivered, kept)
			if lost+twice > 0 {
				t.Errorf("%d items lost silently, %d delivered more than once", lost, twice)
			}
			if d := st1.Dropped - st1.DeadLettered; d != uint64(len(accepted)-kept)-q2.Stats().Delivered {
				t.Errorf("first queue dropped %d items without keeping them; the next queue delivered %d of %d accepted, %d still in dead letters", d, q2.Stats().Delivered, len(accepted), kept)
			}
		})
	}
}

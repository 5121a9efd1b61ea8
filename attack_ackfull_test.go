package vinequeue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackStopOutOfTimeWithAFullWAL: Periodic mode, a Send that never
// returns before its ctx ends, a WAL that fills up: the items accepted
// before the first ErrWALFull whose write failed are held in memory only.
// When Stop runs out of time, every accepted item must be either in the
// WAL for the next New (counted LeftOnDisk) or handed to OnDrop (counted
// Dropped): none may be counted LeftOnDisk without being on disk.
//
// Before the fix a batch whose write had failed (its items named under
// record id 0) counted as on disk: LeftOnDisk, no OnDrop, and the next New
// had nothing to replay. The item vanished, counted as kept.
func TestAttackStopOutOfTimeWithAFullWAL(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, level := range []AckLevel{0, AckDelivered} {
		name := "Enqueue"
		if level == AckDelivered {
			name = "EnqueueAck"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var mu sync.Mutex
			dropped := map[uint64]bool{}
			q, err := New(Config[[]byte]{
				Send:      func(ctx context.Context, b [][]byte) error { <-ctx.Done(); return ctx.Err() },
				BatchSize: 1, Workers: 1, FlushInterval: 2 * time.Millisecond,
				OnDrop: func(b [][]byte, _ error) {
					mu.Lock()
					defer mu.Unlock()
					for _, v := range b {
						dropped[binary.LittleEndian.Uint64(v)] = true
					}
				},
				WAL: WALConfig{Dir: dir, Mode: Periodic, SegmentSize: 8192, MaxBytes: 16384, SyncInterval: 2 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			item := func(id uint64) []byte {
				v := make([]byte, 3000)
				rand.Read(v) // incompressible
				binary.LittleEndian.PutUint64(v, id)
				return v
			}
			accepted := map[uint64]bool{}
			for id := uint64(1); id < 100; id++ {
				var err error
				if level == AckDelivered && id > 1 {
					// The caller's wait ends at Stop; its answer comes then.
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					err = q.EnqueueAck(ctx, item(id), AckDelivered)
					cancel()
					if errors.Is(err, context.DeadlineExceeded) {
						err = nil
					}
				} else {
					err = q.Enqueue(item(id))
				}
				if errors.Is(err, ErrWALFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				accepted[id] = true
				time.Sleep(5 * time.Millisecond) // a checkpoint writes it, or fails to
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v; want its deadline", err)
			}
			st := q.Stats()
			checkIdentity(t, st)
			replayed := map[uint64]bool{}
			r, err := New(Config[[]byte]{
				Send: func(_ context.Context, b [][]byte) error {
					mu.Lock()
					defer mu.Unlock()
					for _, v := range b {
						replayed[binary.LittleEndian.Uint64(v)] = true
					}
					return nil
				},
				WAL: WALConfig{Dir: dir, Mode: Periodic, SegmentSize: 8192, MaxBytes: 16384},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("accepted %d; LeftOnDisk %d, Dropped %d; replayed %d, OnDrop %d", len(accepted), st.LeftOnDisk, st.Dropped, len(replayed), len(dropped))
			for id := range accepted {
				if !replayed[id] && !dropped[id] {
					t.Errorf("item %d accepted, neither replayed by the next New nor handed to OnDrop", id)
				}
			}
			if int(st.LeftOnDisk) != len(replayed) {
				t.Errorf("LeftOnDisk %d, but the next New replayed %d", st.LeftOnDisk, len(replayed))
			}
		})
	}
}

package vinequeue

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestDeadLetterWholeOrNotAtAll: a failed batch too large for one
// dead-letter record is written as several dead letters. When the disk
// (here WAL.MaxBytes) fills part way through them, the batch must go to
// the dead-letter log whole or not at all: a batch in the WAL stays there,
// unacknowledged, for the next New to replay once; one not in the WAL goes
// to OnDrop once. It used to leave the dead letters written before the
// refusal in place, so those items were both in the dead-letter log and
// replayed (or handed to OnDrop): delivered twice once requeued.
func TestDeadLetterWholeOrNotAtAll(t *testing.T) {
	const seg = 64 << 10
	// Room for the main log and two of the batch's four dead letters: the
	// batch is in the main log (four segments) but in Overflow mode, where
	// it stays in memory.
	maxBytes := map[WALMode]int64{Sync: 13 * seg / 2, Periodic: 13 * seg / 2, Overflow: 3 * seg}
	cases := []struct {
		mode  WALMode
		keyed bool // EnqueueKey with ParkKeys: the dead letters name keys, which park
	}{{Sync, false}, {Periodic, false}, {Overflow, false}, {Sync, true}, {Periodic, true}}
	for _, c := range cases {
		mode := c.mode
		name := mode.String()
		if c.keyed {
			name += "-keyed-parking"
		}
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			const (
				items = 48
				size  = 4 << 10 // incompressible: 48 of them take four dead letters
			)
			dir := t.TempDir()
			var failing atomic.Bool
			failing.Store(true)
			var mu sync.Mutex
			delivered := make(map[uint64]int) // per item
			dropped := make(map[uint64]int)   // per item, by OnDrop
			count := func(m map[uint64]int, b [][]byte) {
				mu.Lock()
				defer mu.Unlock()
				for _, v := range b {
					m[binary.LittleEndian.Uint64(v)]++
				}
			}
			cfg := Config[[]byte]{
				Send: func(_ context.Context, b [][]byte) error {
					if failing.Load() {
						return Permanent(errors.New("poison"))
					}
					count(delivered, b)
					return nil
				},
				BatchSize: items, FlushInterval: time.Second, // one batch, cut by Flush
				OnDrop: func(b [][]byte, _ error) { count(dropped, b) },
				WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: seg, Compression: NoCompression,
					MaxBytes: maxBytes[mode]},
				ParkKeys: c.keyed,
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			batch := make([][]byte, items)
			for i := range batch {
				batch[i] = make([]byte, size)
				rand.Read(batch[i])
				binary.LittleEndian.PutUint64(batch[i], uint64(i))
			}
			if c.keyed {
				for _, v := range batch {
					if err := q.EnqueueKey(7, v); err != nil {
						t.Fatal(err)
					}
				}
			} else if n, err := q.EnqueueBatch(batch); err != nil || n != items {
				t.Fatalf("EnqueueBatch = %d, %v", n, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := q.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			ds, err := q.DeadLetters()
			if err != nil {
				t.Fatal(err)
			}
			letters := 0
			for _, d := range ds {
				letters += d.Items
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			t.Logf("first run: dead letters %d (%d items), %+v", len(ds), letters, st)
			if int(st.DeadLettered) != letters {
				t.Errorf("Stats.DeadLettered %d, the dead-letter log holds %d items", st.DeadLettered, letters)
			}
			if letters == items {
				t.Skipf("every item was dead-lettered: MaxBytes %d does not exercise a full disk here", cfg.WAL.MaxBytes)
			}
			checkIdentity(t, st)

			// The sink is back: the next New delivers what was not given
			// up, and a requeue what is in the dead-letter log. Each item
			// reaches the sink or OnDrop exactly once.
			failing.Store(false)
			q2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q2.RequeueDeadLetters(); err != nil {
				t.Errorf("RequeueDeadLetters: %v", err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			// Each item is delivered once, except those given up on with
			// no dead letter (OnDrop alone); a dead-lettered one also went
			// to OnDrop when it was given up on.
			mu.Lock()
			defer mu.Unlock()
			var lettered, gone uint64
			for i := range uint64(items) {
				switch del, drop := delivered[i], dropped[i]; {
				case del == 1 && drop == 0:
				case del == 1 && drop == 1:
					lettered++
				case del == 0 && drop == 1:
					gone++
				default:
					t.Errorf("item %d delivered %d times and handed to OnDrop %d times", i, del, drop)
				}
			}
			if lettered != st.DeadLettered || gone != st.Dropped-st.DeadLettered {
				t.Errorf("%d items dead-lettered and requeued, %d given up on: Stats say DeadLettered %d, Dropped %d",
					lettered, gone, st.DeadLettered, st.Dropped)
			}
		})
	}
}

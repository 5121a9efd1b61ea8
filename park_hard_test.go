package vinequeue

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

// TestParkKeysAtHardBounded: EnqueueKey under Reject with a 1 MiB limit
// against a stalled sink, with parked keys (every fourth key's first item
// fails for good, so its later items are diverted to dead letters) and
// three collectors: BytesHeld stays within Hard + one item per producer,
// what parking diverts is given back exactly once (BytesHeld 0 at the
// end), and the Stats identity holds.
func TestParkKeysAtHardBounded(t *testing.T) {
	defer goleak.VerifyNone(t)
	const (
		limit     = 1 << 20
		itemSize  = 4 << 10
		producers = 4
		keysPer   = 8
	)
	perProducer := 600
	if testing.Short() {
		perProducer = 200
	}
	var open atomic.Bool
	openCh := make(chan struct{})
	var delivered atomic.Int64
	send := func(ctx context.Context, b [][]byte) error {
		for _, v := range b {
			if v[0] == 'P' { // poison: key%4 == 0, first item
				return Permanent(errors.New("poison"))
			}
		}
		if !open.Load() {
			select {
			case <-openCh:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		delivered.Add(int64(len(b)))
		return nil
	}
	q, err := New(Config[[]byte]{Send: send, BatchSize: 16, Workers: 4, Collectors: 3,
		Retry:    RetryPolicy{MaxAttempts: 1},
		Memory:   MemoryConfig{Limit: limit, Policy: Reject},
		WAL:      WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 4 << 20},
		ParkKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	w := watchHeld(q)
	var tally rejectTally
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				k, v := hardKeyedItem(p, i, keysPer, itemSize, 'x')
				if !tally.note(t, q.EnqueueKey(k, v)) {
					return
				}
				w.observe()
			}
		})
	}
	wg.Wait()
	maxHeld := w.finish()
	open.Store(true)
	close(openCh)
	flushT(t, q)
	st := q.Stats()
	hard := int64(limit) * 95 / 100
	bound := hard + producers*(itemSize+24)
	t.Logf("accepted %d, refused %d, max BytesHeld %d KiB, hard %d KiB; parked %d, dead-lettered %d, delivered %d",
		tally.accepted.Load(), tally.refused.Load(), maxHeld>>10, hard>>10, st.Parked, st.DeadLettered, st.Delivered)
	if maxHeld > bound {
		t.Errorf("BytesHeld reached %d, past Hard %d + one item per producer", maxHeld, hard)
	}
	if st.ParkedKeys == 0 || st.Parked == 0 {
		t.Errorf("nothing parked: ParkedKeys %d, Parked %d", st.ParkedKeys, st.Parked)
	}
	if st.BytesHeld != 0 || st.Buffered != 0 {
		t.Errorf("after Flush: BytesHeld %d, Buffered %d; want 0", st.BytesHeld, st.Buffered)
	}
	checkIdentity(t, st)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.BytesHeld != 0 {
		t.Errorf("BytesHeld %d after Close: a charge was not undone (or undone twice)", st.BytesHeld)
	}
	checkIdentity(t, st)
}

// hardKeyedItem is producer p's i'th item over its keysPer keys: itemSize
// bytes, tagged tag, except that the first item of every fourth key is
// poison ('P', which the tests' sinks fail for good, so the key parks).
func hardKeyedItem(p, i, keysPer, itemSize int, tag byte) (uint64, []byte) {
	k := uint64(p*keysPer + i%keysPer)
	v := make([]byte, itemSize)
	v[0] = tag
	if k%4 == 0 && i < keysPer {
		v[0] = 'P'
	}
	copy(v[1:], strconv.Itoa(i))
	return k, v
}

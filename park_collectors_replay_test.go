package vinequeue

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestParkKeysStopOutOfTimeCollectors: TestParkKeysKeyedReplayStopOutOfTime
// with three collectors, in both durable modes: key 1's items left in the
// main log by a Stop out of time are replayed with their key (keyed
// records) into a queue of three collectors and parked there, not
// delivered; a requeue then delivers the key whole, in order.
func TestParkKeysStopOutOfTimeCollectors(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, mode := range []WALMode{Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := newParkSink()
			inSend := make(chan struct{}, 1)
			cfg := parkConfig(dir, mode, s)
			cfg.Collectors = 3
			cfg.Workers = 1
			cfg.Send = hangingSend(s, inSend, holds(parkItem(stuckKey, 0)))
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			d := parkPoisoned(t, q, s)
			if err := q.EnqueueKey(stuckKey, parkItem(stuckKey, 0)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-inSend:
			case <-time.After(30 * time.Second):
				t.Fatal("the stuck item never reached Send")
			}
			enqueueKeys(t, q, []uint64{1, 2}, 10, 15)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v; want its deadline", err)
			}
			checkIdentity(t, q.Stats())

			s2 := newParkSink()
			cfg2 := parkConfig(dir, mode, s2)
			cfg2.Collectors = 3
			q, err = New(cfg2)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			flushT(t, q)
			if got := s2.delivered(1); len(got) != 0 {
				t.Fatalf("key 1 (parked) delivered after restart: %v", got)
			}
			if got := s2.delivered(2); !slices.Equal(got, seqs(10, 15)) {
				t.Fatalf("key 2 after restart: %v; want 10..14", got)
			}
			st := q.Stats()
			if st.ParkedKeys != 1 || st.ParkedItems != 14 {
				t.Fatalf("after restart: ParkedKeys %d, ParkedItems %d; want 1, 14", st.ParkedKeys, st.ParkedItems)
			}
			checkIdentity(t, st)
			if _, err := q.RequeueDeadLetters(d.ID); err != nil {
				t.Fatal(err)
			}
			flushT(t, q)
			if got := s2.delivered(1); !slices.Equal(got, seqs(0, 15)) {
				t.Fatalf("key 1 after requeue: %v; want 0..14 (0..9 from dead letters)", got)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, q.Stats())
		})
	}
}

package vinequeue

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestParkKeysMixedLoadCollectorsRestart: today's features together —
// ParkKeys in Periodic with three collectors, EnqueueKey, EnqueueAck and
// Enqueue from their own goroutines and Flush from another; then a Stop, a
// restart (keys from the keyed records and dead letters) and a requeue.
// Every key keeps its order, the parked key delivers nothing until the
// requeue and then everything in order, and the Stats identity holds at
// each quiescent point.
func TestParkKeysMixedLoadCollectorsRestart(t *testing.T) {
	defer goleak.VerifyNone(t)
	const perKey = 150
	keys := []uint64{1, 2, 3, 4, 5, 6}
	dir := t.TempDir()
	s := newParkSink()
	s.poisoned.Store("1/0", true)
	cfg := parkConfig(dir, Periodic, s)
	cfg.Collectors = 3
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Go(func() {
		for i := range perKey {
			for _, k := range keys {
				if err := q.EnqueueKey(k, parkItem(k, i)); err != nil {
					errs <- err
					return
				}
			}
		}
	})
	wg.Go(func() {
		for i := range perKey {
			if err := q.EnqueueAck(ctx, parkItem(100, i), AckDelivered); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for i := range perKey {
			if err := q.Enqueue(parkItem(200, i)); err != nil {
				errs <- err
				return
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for range 20 {
				if err := q.Flush(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	flushT(t, q)
	for _, k := range keys[1:] {
		if got := s.delivered(k); !slices.Equal(got, seqs(0, perKey)) {
			t.Fatalf("key %d delivered %v; want 0..%d in order", k, got, perKey-1)
		}
	}
	for _, k := range []uint64{100, 200} { // no order promised: all, once
		got := slices.Sorted(slices.Values(s.delivered(k)))
		if !slices.Equal(got, seqs(0, perKey)) {
			t.Fatalf("unkeyed %d delivered %v", k, got)
		}
	}
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("parked key 1 delivered %v", got)
	}
	st := q.Stats()
	if st.ParkedKeys != 1 || st.ParkedItems != perKey-1 || st.Buffered != 0 {
		t.Fatalf("Stats: ParkedKeys %d, ParkedItems %d, Buffered %d; want 1, %d, 0", st.ParkedKeys, st.ParkedItems, st.Buffered, perKey-1)
	}
	checkIdentity(t, st)
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := q.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())

	// Restart: key 1 parks again; items enqueued now for it park behind.
	q, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	enqueueKeys(t, q, keys, perKey, perKey+10)
	flushT(t, q)
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("parked key 1 delivered after restart: %v", got)
	}
	for _, k := range keys[1:] {
		if got := s.delivered(k); !slices.Equal(got, seqs(0, perKey+10)) {
			t.Fatalf("key %d after restart: %v", k, got)
		}
	}
	st = q.Stats()
	if st.ParkedKeys != 1 || st.ParkedItems != perKey-1+10 {
		t.Fatalf("after restart: ParkedKeys %d, ParkedItems %d; want 1, %d", st.ParkedKeys, st.ParkedItems, perKey-1+10)
	}
	checkIdentity(t, st)
	s.poisoned.Delete("1/0")
	if _, err := q.RequeueDeadLetters(); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(0, perKey+10)) {
		t.Fatalf("key 1 after requeue: %v; want 0..%d in order", got, perKey+9)
	}
	st = q.Stats()
	if st.ParkedKeys != 0 || st.ParkedItems != 0 || st.Buffered != 0 {
		t.Fatalf("after requeue: ParkedKeys %d, ParkedItems %d, Buffered %d", st.ParkedKeys, st.ParkedItems, st.Buffered)
	}
	checkIdentity(t, st)
	closeWithNoDeadLetters(t, q)
}

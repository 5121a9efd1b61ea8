package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// TestAttackRequeueConcurrent: RequeueDeadLetters is safe for concurrent
// use: several calls at once, each for every dead letter, requeue each
// dead letter once. Its items are delivered once (a duplicate comes only
// from a crash between the requeue's write and its purge), and a call
// that names no dead letter does not fail because another call took one
// first.
func TestAttackRequeueConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("ParkKeys=%v", park), func(t *testing.T) {
			var mu sync.Mutex
			failed, got := map[string]bool{}, map[string]int{}
			send := func(_ context.Context, b [][]byte) error {
				mu.Lock()
				defer mu.Unlock()
				for _, v := range b {
					if !failed[string(v)] {
						failed[string(v)] = true
						return vq.Permanent(errors.New("first time"))
					}
				}
				for _, v := range b {
					got[string(v)]++
				}
				return nil
			}
			q := newRequeueQueue(t, send, park)
			defer q.Close()
			const n = 60
			for i := range n {
				if err := q.Enqueue(fmt.Appendf(nil, "x/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			flushWithin(t, q, 30*time.Second)
			if ds, err := q.DeadLetters(); err != nil || len(ds) != n {
				t.Fatalf("%d dead letters (%v); want %d", len(ds), err, n)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 4 {
				wg.Go(func() {
					<-start
					if _, err := q.RequeueDeadLetters(); err != nil {
						t.Errorf("RequeueDeadLetters(): %v", err)
					}
				})
			}
			close(start)
			wg.Wait()
			flushWithin(t, q, 30*time.Second)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			twice := 0
			for i := range n {
				it := fmt.Sprintf("x/%d", i)
				if got[it] != 1 {
					if twice++; twice <= 5 {
						t.Errorf("%s delivered %d times after the requeues; want once", it, got[it])
					}
				}
			}
			if twice > 0 {
				t.Errorf("%d of %d requeued items not delivered exactly once", twice, n)
			}
		})
	}
}

// TestAttackPurgeConcurrent: PurgeDeadLetters is safe for concurrent use
// too: several calls at once, each for every dead letter, purge them all
// between them without an error (a call that names no dead letter does
// not fail because another took one first), and nothing purged is
// delivered.
func TestAttackPurgeConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("ParkKeys=%v", park), func(t *testing.T) {
			var mu sync.Mutex
			delivered := 0
			send := func(_ context.Context, b [][]byte) error {
				if string(b[0]) != "ok" {
					return vq.Permanent(errors.New("never"))
				}
				mu.Lock()
				delivered += len(b)
				mu.Unlock()
				return nil
			}
			q := newRequeueQueue(t, send, park)
			defer q.Close()
			const n = 40
			for i := range n {
				var err error
				if i%2 == 0 {
					err = q.Enqueue(fmt.Appendf(nil, "x/%d", i))
				} else {
					err = q.EnqueueKey(uint64(i), fmt.Appendf(nil, "x/%d", i))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			flushWithin(t, q, 30*time.Second)
			if ds, err := q.DeadLetters(); err != nil || len(ds) != n {
				t.Fatalf("%d dead letters (%v); want %d", len(ds), err, n)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			var purged sync.Map
			for g := range 4 {
				wg.Go(func() {
					<-start
					m, err := q.PurgeDeadLetters()
					if err != nil {
						t.Errorf("PurgeDeadLetters(): %v", err)
					}
					purged.Store(g, m)
				})
			}
			close(start)
			wg.Wait()
			total := 0
			purged.Range(func(_, m any) bool { total += m.(int); return true })
			if total != n {
				t.Errorf("the calls purged %d dead letters between them; want %d", total, n)
			}
			if err := q.EnqueueKey(1, []byte("ok")); err != nil { // key 1 flows again
				t.Fatal(err)
			}
			flushWithin(t, q, 30*time.Second)
			if ds, err := q.DeadLetters(); err != nil || len(ds) != 0 {
				t.Fatalf("%d dead letters left (%v)", len(ds), err)
			}
			if st := q.Stats(); st.ParkedKeys != 0 {
				t.Errorf("ParkedKeys %d after every dead letter was purged", st.ParkedKeys)
			}
			mu.Lock()
			defer mu.Unlock()
			if delivered != 1 {
				t.Errorf("%d items delivered; want only the one enqueued after the purge", delivered)
			}
		})
	}
}

// newRequeueQueue is the queue both requeue attacks use: a batch per item,
// two senders, no retry (a failure dead-letters the item at once), a
// Periodic WAL, keys parked or not.
func newRequeueQueue(t *testing.T, send vq.SendFunc[[]byte], park bool) *vq.Queue[[]byte] {
	t.Helper()
	q, err := vq.New(vq.Config[[]byte]{
		Send: send, BatchSize: 1, Workers: 2, FlushInterval: 5 * time.Millisecond,
		Retry:    vq.RetryPolicy{MaxAttempts: 1},
		WAL:      vq.WALConfig{Dir: t.TempDir(), Mode: vq.Periodic, SegmentSize: 1 << 20},
		ParkKeys: park,
	})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

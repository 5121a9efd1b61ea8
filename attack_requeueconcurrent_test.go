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
			q, err := vq.New(vq.Config[[]byte]{
				Send: send, BatchSize: 1, Workers: 2, FlushInterval: 5 * time.Millisecond,
				Retry:    vq.RetryPolicy{MaxAttempts: 1},
				WAL:      vq.WALConfig{Dir: t.TempDir(), Mode: vq.Periodic, SegmentSize: 1 << 20},
				ParkKeys: park,
			})
			if err != nil {
				t.Fatal(err)
			}
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

package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// orderSink delivers "<key>/<seq>" items, failing for good (Permanent) an
// item whose seq ends in 9 the first time it is sent, and records each
// key's items in the order of their first delivery.
type orderSink struct {
	mu     sync.Mutex
	failed map[string]bool
	seen   map[string]bool
	order  map[uint64][]int
}

func newOrderSink() *orderSink {
	return &orderSink{failed: map[string]bool{}, seen: map[string]bool{}, order: map[uint64][]int{}}
}

func (s *orderSink) send(_ context.Context, b [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range b {
		if it := string(v); strings.HasSuffix(it, "9") && !s.failed[it] {
			s.failed[it] = true
			return vq.Permanent(errors.New("poison"))
		}
	}
	for _, v := range b {
		it := string(v)
		if s.seen[it] {
			continue
		}
		s.seen[it] = true
		ks, ss, _ := strings.Cut(it, "/")
		k, _ := strconv.ParseUint(ks, 10, 64)
		seq, _ := strconv.Atoi(ss)
		s.order[k] = append(s.order[k], seq)
	}
	return nil
}

// TestAttackRequeueRacesParking: with ParkKeys, RequeueDeadLetters (all)
// runs again and again while keyed batches fail for good (each a dead
// letter that parks its keys) and senders move parked keys' items into
// dead letters of their own. A keyed dead letter is always released in
// its keys' order, never requeued as unkeyed items through the main log
// (which delivers its items ahead of their key's earlier ones), and no key
// stays parked once no dead letter is left: every item is delivered, and
// each key's items are first delivered in the order they were accepted.
func TestAttackRequeueRacesParking(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []vq.WALMode{vq.Periodic, vq.Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newOrderSink()
			q, err := vq.New(vq.Config[[]byte]{
				Send:      s.send,
				BatchSize: 8, Workers: 3, FlushInterval: 5 * time.Millisecond,
				Retry:    vq.RetryPolicy{MaxAttempts: 1},
				WAL:      vq.WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20, SyncInterval: 5 * time.Millisecond},
				ParkKeys: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			const keys, perKey = 8, 200
			stop := make(chan struct{})
			var operator sync.WaitGroup
			operator.Go(func() { // requeues everything, again and again
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := q.RequeueDeadLetters(); err != nil {
						t.Error(err)
						return
					}
				}
			})
			var producers sync.WaitGroup
			for g := range 4 {
				producers.Go(func() {
					for seq := range perKey {
						for k := uint64(2 * g); k < uint64(2*g+2); k++ {
							if err := q.EnqueueKey(k, fmt.Appendf(nil, "%d/%d", k, seq)); err != nil {
								t.Error(err)
								return
							}
						}
					}
				})
			}
			producers.Wait()
			close(stop)
			operator.Wait()

			// Release what is left until every item is delivered.
			deadline := time.Now().Add(20 * time.Second)
			for {
				requeueThenFlush(t, q)
				ds, err := q.DeadLetters()
				if err != nil {
					t.Fatal(err)
				}
				st := q.Stats()
				s.mu.Lock()
				n := len(s.seen)
				s.mu.Unlock()
				if n == keys*perKey && len(ds) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d items delivered; %d dead letters left, ParkedKeys %d, ParkedItems %d", n, keys*perKey, len(ds), st.ParkedKeys, st.ParkedItems)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			for k, order := range s.order {
				for i := 1; i < len(order); i++ {
					if order[i] < order[i-1] {
						t.Errorf("key %d: item %d first delivered after item %d", k, order[i], order[i-1])
						break
					}
				}
			}
			t.Logf("%d dead letters written (poisoned items)", len(s.failed))
		})
	}
}

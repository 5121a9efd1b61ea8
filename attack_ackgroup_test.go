package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackAckOutcomeIsThatOfTheItemsBatch: EnqueueAck's callers whose
// items the collector takes together share one wake (an ack group), and a
// group's items can go out in two batches or more (BatchSize 4 here, so
// a group of six is cut four and two). Each caller must get the outcome of
// its own item's batch: nil once Send returned nil for it, ErrDropped only
// if it was given up on and OnDrop had it. The README's gateway answers
// 502 on ErrDropped ("OnDrop has it"): an item that was delivered and
// reported dropped is sent again by the client, a duplicate the queue
// caused.
//
// On the code before this test a group took the first bad outcome among
// all its batches: callers whose items Send had delivered were told
// ErrDropped when another batch of their group failed.
func TestAttackAckOutcomeIsThatOfTheItemsBatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		callers = 32
		each    = 40
	)
	var mu sync.Mutex
	delivered := make(map[string]bool)
	dropped := make(map[string]bool)
	q, err := New(Config[string]{
		Send: func(_ context.Context, b []string) error {
			for _, v := range b {
				if v[0] == 'x' { // poison: the whole batch fails for good
					return Permanent(errors.New("poison"))
				}
			}
			mu.Lock()
			for _, v := range b {
				delivered[v] = true
			}
			mu.Unlock()
			return nil
		},
		OnDrop: func(b []string, _ error) {
			mu.Lock()
			for _, v := range b {
				dropped[v] = true
			}
			mu.Unlock()
		},
		BatchSize:     4,
		Workers:       4,
		FlushInterval: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	type result struct {
		item string
		err  error
	}
	results := make(chan result, callers*each)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				item := "c" + strconv.Itoa(c) + "-" + strconv.Itoa(i)
				if (c*each+i)%7 == 3 {
					item = "x" + item
				}
				results <- result{item, q.EnqueueAck(context.Background(), item, AckDelivered)}
			}
		})
	}
	wg.Wait()
	close(results)
	mu.Lock()
	defer mu.Unlock()
	var wrong []string
	for r := range results {
		switch {
		case r.err == nil && !delivered[r.item]:
			wrong = append(wrong, fmt.Sprintf("%s: nil, not delivered", r.item))
		case errors.Is(r.err, ErrDropped) && (delivered[r.item] || !dropped[r.item]):
			wrong = append(wrong, fmt.Sprintf("%s: ErrDropped, delivered %v, OnDrop had it %v", r.item, delivered[r.item], dropped[r.item]))
		case r.err != nil && !errors.Is(r.err, ErrDropped):
			wrong = append(wrong, fmt.Sprintf("%s: %v", r.item, r.err))
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("%d of %d callers told another item's outcome, e.g. %v", len(wrong), callers*each, wrong[:min(len(wrong), 5)])
	}
}

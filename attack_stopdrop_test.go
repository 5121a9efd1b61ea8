package vinequeue

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackStopOutOfTimeCountsEverything: memory mode, a Send stuck until
// its ctx ends, 20,000 items waiting in batches of one. Stop runs out of
// time. When it returns, Stats promises Buffered 0 ("after Stop") and OnDrop
// has had every undelivered item ("what is undelivered goes to OnDrop").
//
// On main Stop hands the waiting batches to OnDrop on a goroutine of its
// own and returns after 50 ms whatever is left (finishGrace): Stats read
// then still shows thousands Buffered, and OnDrop is called after Stop
// returned, from a goroutine Stop did not wait for.
func TestAttackStopOutOfTimeCountsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 20000
	var dropped atomic.Int64
	q, err := New(Config[[]byte]{
		Send:      func(ctx context.Context, _ [][]byte) error { <-ctx.Done(); return ctx.Err() },
		BatchSize: 1, Workers: 1, FlushInterval: 2 * time.Millisecond,
		OnDrop: func(b [][]byte, _ error) {
			x := 0
			for i := range 20000 { // some microseconds of work per batch, as a log line would be
				x += i
			}
			_ = x
			dropped.Add(int64(len(b)))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := q.EnqueueKey(1, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want its deadline", err)
	}
	st := q.Stats()
	got := dropped.Load()
	if st.Buffered != 0 || st.Dropped+st.Delivered != n || got != int64(st.Dropped) {
		t.Fatalf("right after Stop: Buffered %d, Dropped %d, Delivered %d; OnDrop had %d of %d", st.Buffered, st.Dropped, st.Delivered, got, n)
	}
}

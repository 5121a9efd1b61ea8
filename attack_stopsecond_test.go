package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// TestAttackStopDuringCloseKeepsItsDeadline: a Close is under way (a
// deferred Close, say) and cannot end, its Sends held; a Stop(ctx) called
// meanwhile (a signal handler's, with a shutdown deadline) must still
// return by its deadline, and what is undelivered is then left in the WAL
// for the next New, not lost (keyed items and Collectors 2 included: the
// Close, cut short, writes them as it gives them up). It used to wait for
// the Close, for as long as the Sends were held (here until the test let
// them go).
func TestAttackStopDuringCloseKeepsItsDeadline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const items = 200
	dir := t.TempDir()
	release := make(chan struct{})
	inSend := make(chan struct{}, 1)
	q, err := vq.New(vq.Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			select {
			case inSend <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
				return errors.New("released by the test")
			}
		},
		BatchSize: 10, Workers: 2, Collectors: 2, FlushInterval: 2 * time.Millisecond,
		WAL: vq.WALConfig{Dir: dir, Mode: vq.Periodic, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range items {
		var err error
		if i%2 == 0 { // keyed: held behind their key's batch in Send
			err = q.EnqueueKey(uint64(i%4), fmt.Appendf(nil, "k/%d/%d", i%4, i))
		} else {
			err = q.Enqueue(fmt.Appendf(nil, "u/%d", i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	<-inSend
	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	for limit := time.Now().Add(5 * time.Second); !q.Health().Closed; {
		if time.Now().After(limit) {
			t.Fatal("Close never began")
		}
		time.Sleep(time.Millisecond)
	}
	const deadline = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- q.Stop(ctx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop during a Close = %v, want its deadline's error", err)
		}
	case <-time.After(deadline + 5*time.Second):
		close(release) // let the Close end
		<-stopped
		<-closed
		t.Fatal("Stop(ctx) called during a Close did not return by its deadline: it waited for the Close, which waits for the held Sends")
	}
	<-closed
	close(release)
	// Nothing lost: what was not delivered is replayed by the next New.
	got := make(chan int, items)
	q2, err := vq.New(vq.Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error { got <- len(b); return nil },
		WAL:  vq.WALConfig{Dir: dir, Mode: vq.Periodic, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	close(got)
	n := 0
	for k := range got {
		n += k
	}
	if left := q.Stats().LeftOnDisk; n != items || left != items {
		t.Errorf("the next New replayed %d items, LeftOnDisk %d; want %d each (none was delivered)", n, left, items)
	}
}

package vinequeue

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackCallsAfterStop: every method of a stopped queue with a WAL,
// dead letters and a parked key returns (no hang, no panic on the closed
// log), and those that would change the queue say so.
func TestAttackCallsAfterStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Sync, Periodic, Overflow} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newParkSink()
			q, err := New(parkConfig(t.TempDir(), mode, s))
			if err != nil {
				t.Fatal(err)
			}
			d := parkPoisoned(t, q, s)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				if err := q.Flush(ctx); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Flush after Stop: %v", err)
				}
				if err := q.Enqueue([]byte("x")); !errors.Is(err, ErrClosed) {
					t.Errorf("Enqueue after Stop: %v", err)
				}
				if err := q.EnqueueKey(1, []byte("x")); !errors.Is(err, ErrClosed) {
					t.Errorf("EnqueueKey after Stop: %v", err)
				}
				if n, err := q.EnqueueBatch([][]byte{[]byte("x")}); n != 0 || !errors.Is(err, ErrClosed) {
					t.Errorf("EnqueueBatch after Stop: %d, %v", n, err)
				}
				for _, l := range []AckLevel{AckDurable, AckDelivered} {
					if err := q.EnqueueAck(ctx, []byte("x"), l); !errors.Is(err, ErrClosed) {
						t.Errorf("EnqueueAck(%v) after Stop: %v", l, err)
					}
				}
				_ = q.Stats()
				_ = q.Health()
				if _, err := q.DeadLetters(); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("DeadLetters after Stop: %v", err)
				}
				if n, err := q.RequeueDeadLetters(d.ID); n != 0 || err == nil {
					t.Errorf("RequeueDeadLetters after Stop: %d, %v; want 0 and an error", n, err)
				}
				if n, err := q.PurgeDeadLetters(d.ID); n != 0 || err == nil {
					t.Errorf("PurgeDeadLetters after Stop: %d, %v; want 0 and an error", n, err)
				}
				if err := q.Stop(context.Background()); err != nil {
					t.Errorf("second Stop: %v", err)
				}
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("a call on a stopped queue hangs")
			}
		})
	}
}

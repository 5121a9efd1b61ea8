package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// periodicQueue is a Periodic queue of []byte over a temporary directory,
// checkpointing every every.
func periodicQueue(t *testing.T, every time.Duration, send func(context.Context, [][]byte) error, opts ...func(*Config[[]byte])) *Queue[[]byte] {
	t.Helper()
	cfg := testConfig(send)
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: every}
	cfg.Codec = bytesCodec{}
	cfg.BatchSize = 50
	cfg.FlushInterval = 5 * time.Millisecond
	cfg.Workers = 2
	for _, o := range opts {
		o(&cfg)
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestPeriodicDeliveredBeforeCheckpointNotWritten: in Periodic mode a batch
// whose Send succeeds before a checkpoint finds it is never written to the
// WAL, keyed or not: no record, no acknowledgement. (Before, every batch cut
// from memory was written by its sender before Send.)
func TestPeriodicDeliveredBeforeCheckpointNotWritten(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := periodicQueue(t, time.Hour, func(context.Context, [][]byte) error { return nil })
	const n = 500
	for i := range n {
		if err := q.EnqueueSlow(fmt.Appendf(nil, "u%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := q.EnqueueKey(uint64(i%7), fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	ls := q.wal.log.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if st.Delivered != 2*n {
		t.Fatalf("delivered %d, want %d", st.Delivered, 2*n)
	}
	if ls.Appended != 0 || ls.ItemsPending != 0 {
		t.Fatalf("%d records appended, %d items pending; want none: every batch was delivered before a checkpoint", ls.Appended, ls.ItemsPending)
	}
	if len(q.durable.tickets) != 0 || len(q.durable.unwritten) != 0 {
		t.Fatalf("%d batches still registered unwritten", len(q.durable.unwritten))
	}
}

// TestPeriodicHeldSendWrittenAtCheckpoint: a batch whose Send is still under
// way when a checkpoint comes is written by that checkpoint (keyed and not),
// the durable mark passes it, and once Send returns nil it is acknowledged,
// so nothing stays pending in the WAL.
func TestPeriodicHeldSendWrittenAtCheckpoint(t *testing.T) {
	defer goleak.VerifyNone(t)
	hold := make(chan struct{})
	entered := make(chan struct{}, 2)
	q := periodicQueue(t, 10*time.Millisecond, func(ctx context.Context, b [][]byte) error {
		entered <- struct{}{}
		<-hold
		return nil
	})
	for i := range 20 {
		if err := q.EnqueueKey(uint64(i%3), fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := q.EnqueueSlow(fmt.Appendf(nil, "u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	<-entered // both batches in Send
	accepted := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ls := q.wal.log.Stats()
		if ls.ItemsPending == 40 && q.Stats().DurableThrough.After(accepted) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d items pending in the WAL, DurableThrough %v (items accepted before %v); want both held batches written and the mark past them",
				ls.ItemsPending, q.Stats().DurableThrough, accepted)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for q.wal.log.Stats().ItemsPending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d items pending after delivery; want every written batch acknowledged", q.wal.log.Stats().ItemsPending)
		}
		time.Sleep(time.Millisecond)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != 40 || st.LeftOnDisk != 0 {
		t.Fatalf("delivered %d, left on disk %d; want 40 and 0", st.Delivered, st.LeftOnDisk)
	}
}

// TestPeriodicStopOutOfTimeWritesHeldSend: a Stop out of time leaves a
// batch held in Send, never written before, in the WAL (LeftOnDisk), so the
// next New replays it; it is not handed to OnDrop.
func TestPeriodicStopOutOfTimeWritesHeldSend(t *testing.T) {
	defer goleak.VerifyNone(t)
	entered := make(chan struct{}, 2)
	var dropped atomic.Int64
	q := periodicQueue(t, time.Hour, func(ctx context.Context, b [][]byte) error {
		entered <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}, func(c *Config[[]byte]) { c.OnDrop = func(b [][]byte, _ error) { dropped.Add(int64(len(b))) } })
	cfgDir := q.cfg.WAL.Dir
	for i := range 10 {
		if err := q.EnqueueKey(uint64(i%3), fmt.Appendf(nil, "k%d", i)); err != nil {
			t.Fatal(err)
		}
		if err := q.EnqueueSlow(fmt.Appendf(nil, "u%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	<-entered
	if n := q.wal.log.Stats().Appended; n != 0 {
		t.Fatalf("%d records before Stop; want none (no checkpoint yet)", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Stop(ctx); err == nil {
		t.Fatal("Stop out of time returned nil")
	}
	if st := q.Stats(); st.LeftOnDisk != 20 || st.Dropped != 0 || dropped.Load() != 0 {
		t.Fatalf("left on disk %d, dropped %d (OnDrop %d); want 20 left in the WAL", st.LeftOnDisk, st.Dropped, dropped.Load())
	}
	got := make(chan int, 100)
	cfg := testConfig(func(_ context.Context, b [][]byte) error { got <- len(b); return nil })
	cfg.WAL = WALConfig{Dir: cfgDir, Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: time.Hour}
	cfg.Codec = bytesCodec{}
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := q2.Flush(ctx2); err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if st := q2.Stats(); st.Replayed != 20 || st.Delivered != 20 {
		t.Fatalf("replayed %d, delivered %d; want the 20 left at Stop", st.Replayed, st.Delivered)
	}
}

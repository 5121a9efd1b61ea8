package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue"
)

// Before sends waited for their own promises, a send flushed the client and
// waited for the flush whatever its context said: with the broker gone,
// Stop(ctx) returned some 45 s after a 3 s deadline. These tests stop kfake
// in the middle of a run and check that Stop returns by its deadline (plus
// slack for a loaded machine, far below those 45 s) and that nothing
// vanishes: what was not acknowledged went to OnDrop, or stayed in the WAL.

const (
	stopDeadline = 3 * time.Second
	stopSlack    = 2 * time.Second
)

// brokerGoneRun runs a queue into a cluster, closes the cluster once some
// batches were delivered, enqueues more, and stops the queue with a
// deadline. It returns Stop's error and the queue's final stats.
func brokerGoneRun(t *testing.T, cfg vinequeue.Config[Record]) (vinequeue.Stats, error) {
	t.Helper()
	c := newCluster(t)
	p := newProducer(t, c, Config{DeliveryTimeout: 2 * time.Second})
	cfg.Send = p.SendRecords
	cfg.BatchSize = 50
	cfg.Workers = 4
	cfg.FlushInterval = 5 * time.Millisecond
	// Retry for longer than the test: what is not acknowledged is given
	// up on by Stop's deadline, not by the retry budget.
	cfg.Retry = vinequeue.RetryPolicy{MaxAttempts: 1000, InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	q, err := vinequeue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	enqueue := func(from, to int) {
		for i := from; i < to; i++ {
			key := fmt.Appendf(nil, "key-%d", i%100)
			if err := q.EnqueueKey(vinequeue.KeyOf(string(key)), Record{Key: key, Value: fmt.Appendf(nil, "%s:%d", key, i/100)}); err != nil {
				t.Fatalf("EnqueueKey: %v", err)
			}
		}
	}
	enqueue(0, 1000)
	waitFor(t, "the first deliveries", func() bool { return q.Stats().Delivered >= 200 })
	c.Close()
	enqueue(1000, 3000)

	ctx, cancel := context.WithTimeout(context.Background(), stopDeadline)
	defer cancel()
	start := time.Now()
	err = q.Stop(ctx)
	took := time.Since(start)
	t.Logf("Stop returned after %v: %v", took.Round(time.Millisecond), err)
	if took > stopDeadline+stopSlack {
		t.Errorf("Stop took %v with a %v deadline", took, stopDeadline)
	}
	st := q.Stats()
	if st.Enqueued != 3000 {
		t.Errorf("Enqueued %d, want 3000", st.Enqueued)
	}
	if st.Delivered >= 3000 {
		t.Fatalf("all %d records delivered although the broker was gone", st.Delivered)
	}
	closed := time.Now()
	p.Close()
	t.Logf("Producer.Close took %v", time.Since(closed).Round(time.Millisecond))
	return st, err
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStopWithBrokerGoneMemory(t *testing.T) {
	var (
		mu      sync.Mutex
		dropped int
		reasons = make(map[string]int)
	)
	st, err := brokerGoneRun(t, vinequeue.Config[Record]{
		SizeOf: RecordSize,
		OnDrop: func(batch []Record, reason error) {
			mu.Lock()
			dropped += len(batch)
			reasons[fmt.Sprint(errors.Is(reason, context.Canceled) || errors.Is(reason, vinequeue.ErrClosed))]++
			mu.Unlock()
		},
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want the deadline's error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dropped == 0 || uint64(dropped) != st.Dropped {
		t.Errorf("OnDrop saw %d records, Stats.Dropped %d: want equal and > 0", dropped, st.Dropped)
	}
	if st.Delivered+st.Dropped != st.Enqueued || st.Buffered != 0 {
		t.Errorf("stats %+v: Delivered + Dropped != Enqueued, or some still buffered", st)
	}
	t.Logf("%d delivered, %d dropped; drop reasons (stop-related: count) %v", st.Delivered, st.Dropped, reasons)
}

// TestStopWithBrokerGoneWAL runs the same with a Periodic WAL: nothing is
// dropped, what was not acknowledged stays in the WAL, and a queue opened on
// the same directory against a healthy cluster delivers it.
func TestStopWithBrokerGoneWAL(t *testing.T) {
	dir := t.TempDir()
	var dropped atomic.Int64
	cfg := vinequeue.Config[Record]{
		SizeOf: RecordSize,
		WAL:    vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Periodic, SyncInterval: 10 * time.Millisecond},
		Codec:  RecordCodec{},
		OnDrop: func(batch []Record, _ error) { dropped.Add(int64(len(batch))) },
	}
	st, err := brokerGoneRun(t, cfg)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want the deadline's error", err)
	}
	if st.Dropped != 0 || dropped.Load() != 0 {
		t.Fatalf("%d records dropped (OnDrop %d) with a WAL", st.Dropped, dropped.Load())
	}
	left := st.Enqueued - st.Delivered

	c := newCluster(t)
	p := newProducer(t, c, Config{})
	cfg.Send = p.SendRecords
	q, err := vinequeue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := q.Stats()
	t.Logf("first run: %d enqueued, %d delivered, %d left; second run: %d replayed, %d delivered", st.Enqueued, st.Delivered, left, st2.Replayed, st2.Delivered)
	if st2.Replayed < left || st2.Delivered != st2.Replayed || st2.Dropped != 0 {
		t.Errorf("second run %+v: want >= %d replayed, all delivered, none dropped", st2, left)
	}
	// At least once: every record of the first run is in the new cluster
	// or was acknowledged by the old one; the new one holds all the
	// unacknowledged ones.
	if got := len(consumeAll(t, c)); uint64(got) != st2.Delivered {
		t.Errorf("consumed %d records, want %d", got, st2.Delivered)
	}
}

package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// blockingCodec is the built-in []byte encoding, except that the first
// item equal to mark blocks its Append until release is closed (entered is
// closed when it does): a Codec slow on one item, as one doing I/O would be.
type blockingCodec struct {
	mark    []byte
	once    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (c *blockingCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if bytes.Equal(v, c.mark) && c.once.CompareAndSwap(false, true) {
		close(c.entered)
		<-c.release
	}
	return append(dst, v...), nil
}

func (c *blockingCodec) Decode(src []byte) ([]byte, error) { return bytes.Clone(src), nil }

// stopWhileASenderWrites occupies one sender in Send with a first item
// (inSend says when), hands the other a batch of n items whose Send fails
// for good (failing: a Send that fails at once for a batch holding mark)
// and whose first item blocks in codec's Append when that sender writes it
// to the WAL before dead-lettering it, and, once that write has begun,
// calls Stop with a ctx already ended: Stop out of time while a sender is
// still writing its batch.
func stopWhileASenderWrites(t *testing.T, q *Queue[[]byte], codec *blockingCodec, inSend <-chan struct{}, n int, item string) {
	t.Helper()
	if err := q.Enqueue([]byte("first")); err != nil {
		t.Fatal(err)
	}
	<-inSend
	batch := make([][]byte, n)
	batch[0] = codec.mark
	for i := 1; i < n; i++ {
		batch[i] = []byte(item)
	}
	if k, err := q.EnqueueBatch(batch); err != nil {
		t.Fatalf("EnqueueBatch: %d, %v", k, err)
	}
	<-codec.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // out of time at once
	if err := q.Stop(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Stop = %v; want its ctx's error", err)
	}
}

// failsForGood reports whether Send is to fail b for good: the batch that
// holds the codec's mark.
func (c *blockingCodec) failsForGood(b [][]byte) bool {
	return len(b) > 0 && bytes.Equal(b[0], c.mark)
}

// TestAttackStopWhileASenderWritesItsBatch: Periodic mode writes a batch
// whose Send failed for good to the WAL on its sender before dead-lettering
// it (a batch delivered before a checkpoint finds it is never written). A
// sender still writing it (a slow Codec, a slow disk, or merely
// descheduled) when Stop runs out of time holds that batch where Stop does
// not see it: no longer in the sender's slot, nor in the collector's
// hands. (The test was written when every batch was written on its sender
// before Send, the window being between taking the batch and its slot.)
//
// Stop promises that when it returns every given-up item is counted
// (Buffered 0) and that a Send which ignores its ctx does not hold it. On
// the code before this test, Stop returned at once with the batch
// Buffered; the sender then finished its write into a closed WAL and
// called Send with a cancelled ctx after Stop had returned.
//
// Here the write is released as soon as Stop cancels the senders' ctx
// (the other sender's Send sees it), so a Stop that waits for senders
// finishing what they hold sees it counted; 4096 items keep the write
// itself longer than Stop's own way from there to its return.
func TestAttackStopWhileASenderWritesItsBatch(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	const n = 4096
	codec := &blockingCodec{mark: []byte("mark"), entered: make(chan struct{}), release: make(chan struct{})}
	inSend := make(chan struct{}, 1)
	var releaseOnce sync.Once
	var sent atomic.Int64
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			if ctx.Err() != nil {
				// Called after Stop gave up: the promise is broken
				// whatever this returns.
				sent.Add(int64(len(b)))
			}
			if codec.failsForGood(b) {
				return Permanent(errors.New("refused"))
			}
			select {
			case inSend <- struct{}{}:
			default:
			}
			<-ctx.Done()
			releaseOnce.Do(func() { close(codec.release) })
			return ctx.Err()
		},
		Codec:         codec,
		BatchSize:     100000,
		RingSize:      8192,
		Workers:       2,
		FlushInterval: 4 * time.Millisecond,
		WAL:           WALConfig{Dir: t.TempDir(), Mode: Periodic, SyncInterval: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer releaseOnce.Do(func() { close(codec.release) })
	stopWhileASenderWrites(t, q, codec, inSend, n, "an item of the batch being written")
	st := q.Stats()
	if st.Buffered != 0 || st.Enqueued != st.Delivered+st.Dropped+st.LeftOnDisk {
		t.Errorf("right after Stop: Enqueued %d, Delivered %d, Dropped %d, LeftOnDisk %d, Buffered %d",
			st.Enqueued, st.Delivered, st.Dropped, st.LeftOnDisk, st.Buffered)
	}
	releaseOnce.Do(func() { close(codec.release) })
	goleak.VerifyNone(t, ignore) // every sender has returned
	if s := sent.Load(); s != 0 {
		t.Errorf("Send called with %d items after Stop gave up on them", s)
	}
}

// TestAttackStopWithAPanickingSend: a Send that panics on every call, with
// RetryForever, and an OnDrop that panics too. Stop runs out of time and
// returns its deadline's error; every item was given up exactly once,
// counted before Stop returned; the panics were recovered.
func TestAttackStopWithAPanickingSend(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const n = 300
	var onDrop atomic.Int64
	q, err := New(Config[[]byte]{
		Send:      func(context.Context, [][]byte) error { panic("sink exploded") },
		Retry:     RetryPolicy{MaxAttempts: RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond},
		BatchSize: 7, Workers: 3, FlushInterval: 2 * time.Millisecond,
		OnDrop: func(b [][]byte, reason error) {
			onDrop.Add(int64(len(b)))
			panic("OnDrop exploded too")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := q.Enqueue([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want its deadline", err)
	}
	st := q.Stats()
	if st.Enqueued != n || st.Dropped != n || st.Buffered != 0 || onDrop.Load() != n {
		t.Fatalf("Enqueued %d, Dropped %d, Buffered %d, OnDrop had %d; want %d dropped, each once", st.Enqueued, st.Dropped, st.Buffered, onDrop.Load(), n)
	}
	if st.Retries == 0 {
		t.Fatal("no retry counted: did Send run?")
	}
}

// TestAttackStopPastASenderStuckInItsWrite: as above, but the sender's
// write stays blocked past Stop's 50 ms grace, so Stop returns without it
// (the README says so). When the write is released, after Stop has
// returned and closed the WAL, the sender must not crash on the closed
// log nor call Send again: it gives the batch up (its dead letter cannot
// be written either), and the counters then add up.
func TestAttackStopPastASenderStuckInItsWrite(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	const n = 64
	codec := &blockingCodec{mark: []byte("mark"), entered: make(chan struct{}), release: make(chan struct{})}
	inSend := make(chan struct{}, 1)
	var late, onDrop atomic.Int64
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			if ctx.Err() != nil {
				late.Add(int64(len(b)))
			}
			if codec.failsForGood(b) {
				return Permanent(errors.New("refused"))
			}
			select {
			case inSend <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		},
		OnDrop:        func(b [][]byte, _ error) { onDrop.Add(int64(len(b))) },
		Codec:         codec,
		BatchSize:     100000,
		Workers:       2,
		FlushInterval: 4 * time.Millisecond,
		WAL:           WALConfig{Dir: t.TempDir(), Mode: Periodic, SyncInterval: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopWhileASenderWrites(t, q, codec, inSend, n, "item")
	close(codec.release) // the write goes on, into a closed WAL
	goleak.VerifyNone(t, ignore)
	st := q.Stats()
	if st.Buffered != 0 || st.Enqueued != n+1 || st.Enqueued != st.Delivered+st.Dropped+st.LeftOnDisk {
		t.Errorf("once the sender is done: Enqueued %d, Delivered %d, Dropped %d, LeftOnDisk %d, Buffered %d",
			st.Enqueued, st.Delivered, st.Dropped, st.LeftOnDisk, st.Buffered)
	}
	if uint64(onDrop.Load()) != st.Dropped {
		t.Errorf("OnDrop had %d items, Stats.Dropped %d", onDrop.Load(), st.Dropped)
	}
	if l := late.Load(); l != 0 {
		t.Errorf("Send called with %d items after Stop gave up", l)
	}
}

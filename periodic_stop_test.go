package vinequeue_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/internal/engine"
)

// deadlineCodec encodes []byte as is and counts the items it encodes after
// past is set (Stop's deadline has passed) that a Send held (inSend).
type deadlineCodec struct {
	past   *atomic.Bool
	inSend *sync.Map
	after  *atomic.Int64
}

func (c deadlineCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if c.past.Load() {
		if _, ok := c.inSend.Load(string(v)); ok {
			c.after.Add(1)
		}
	}
	return append(dst, v...), nil
}

func (deadlineCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestPeriodicStopWritesInFlightBeforeItsDeadline: in Periodic mode a batch
// in Send is not on disk (it is written only if found undelivered). Stop
// writes those batches as it begins, while its ctx runs, so that when it
// runs out of time it has nothing of the senders' left to write: no item
// of a batch in Send is encoded after the deadline, and the next New
// replays every item. It
// used to write every batch in Send (up to Workers of them) after the
// deadline, so that Stop returned late by as long as those writes took.
func TestPeriodicStopWritesInFlightBeforeItsDeadline(t *testing.T) {
	defer goleak.VerifyNone(t)
	const workers, batch = 8, 50
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			dir := t.TempDir()
			var past atomic.Bool
			var after atomic.Int64
			var held sync.Map // the items in a Send
			inSend := make(chan struct{}, workers)
			q, err := vq.New(vq.Config[[]byte]{
				Send: func(ctx context.Context, b [][]byte) error {
					for _, v := range b {
						held.Store(string(v), true)
					}
					inSend <- struct{}{}
					<-ctx.Done()
					return ctx.Err()
				},
				Codec:         deadlineCodec{&past, &held, &after},
				BatchSize:     batch,
				Workers:       workers,
				FlushInterval: 5 * time.Millisecond,
				// No checkpoint during the test: only Stop writes.
				WAL: vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: time.Hour},
			})
			if err != nil {
				t.Fatal(err)
			}
			// One key per batch's worth, each on its own shard, so that
			// several batches can be in Send at once (a shard has one at
			// a time with a sender).
			var keys []uint64
			shards := map[int]bool{}
			for k := uint64(0); len(keys) < workers; k++ {
				if s := engine.ShardOf(k); !shards[s] {
					shards[s] = true
					keys = append(keys, k)
				}
			}
			for i := range workers * batch {
				v := fmt.Appendf(nil, "%d", i)
				if keyed {
					err = q.EnqueueKey(keys[i/batch], v)
				} else {
					err = q.Enqueue(v)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			// Every item is in a Send that holds it (unkeyed); keyed, at
			// least one batch is, with more to come during Stop (a batch
			// that gathered the first items of two shards holds back the
			// rest of both until it is finished).
			want := workers
			if keyed {
				want = 1
			}
			for range want {
				<-inSend
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			stop := context.AfterFunc(ctx, func() { past.Store(true) })
			defer stop()
			if err := q.Stop(ctx); err == nil {
				t.Fatal("Stop returned nil with every Send held past its deadline")
			}
			if n := after.Load(); n != 0 {
				t.Errorf("%d items of batches in Send encoded after Stop's deadline, want 0: Stop wrote the batches in Send only once out of time", n)
			}
			if got := q.Stats().LeftOnDisk; got != workers*batch {
				t.Errorf("LeftOnDisk = %d, want %d", got, workers*batch)
			}

			var replayed atomic.Int64
			q2, err := vq.New(vq.Config[[]byte]{
				Send:  func(_ context.Context, b [][]byte) error { replayed.Add(int64(len(b))); return nil },
				Codec: deadlineCodec{new(atomic.Bool), new(sync.Map), new(atomic.Int64)},
				WAL:   vq.WALConfig{Dir: dir, Mode: vq.Periodic},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			if got := replayed.Load(); got != workers*batch {
				t.Errorf("the next New replayed %d items, want %d", got, workers*batch)
			}
		})
	}
}

// countCodec encodes []byte as is and counts the items it encodes.
type countCodec struct{ n *atomic.Int64 }

func (c countCodec) Append(dst []byte, v []byte) ([]byte, error) {
	c.n.Add(1)
	return append(dst, v...), nil
}

func (countCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestPeriodicCloseWritesOnlyWhatItMust: a Stop whose ctx cannot end (Close)
// never gives a batch up, so the batches in Send, delivered during it, are
// never written; a Stop with a deadline writes them as it begins, so that
// it could give them up at its deadline without writing past it, and
// writes every later batch before its Send. Workers-1 full batches are
// held in Send; a last, partial batch is cut by Stop itself and handed to
// the idle Worker only after the point where a Stop writes (or not) what
// is in Send, so its Send says that point is past. (It fails if every Stop
// writes what is in Send, deadline or not.)
func TestPeriodicCloseWritesOnlyWhatItMust(t *testing.T) {
	defer goleak.VerifyNone(t)
	// One P, one ring: the batches are cut as the test counts them (with
	// more, the items of one goroutine that moves between Ps split).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const workers, batch, partial = 3, 25, 10
	const total = (workers-1)*batch + partial
	for _, deadline := range []bool{false, true} {
		t.Run(fmt.Sprintf("deadline=%v", deadline), func(t *testing.T) {
			var encoded atomic.Int64
			held := make(chan struct{}, workers)
			partialSent := make(chan struct{})
			release := make(chan struct{})
			q, err := vq.New(vq.Config[[]byte]{
				Send: func(ctx context.Context, b [][]byte) error {
					if len(b) < batch {
						close(partialSent)
						return nil
					}
					held <- struct{}{}
					<-release
					return nil
				},
				Codec:     countCodec{&encoded},
				BatchSize: batch,
				Workers:   workers,
				// Only Stop cuts the partial batch.
				FlushInterval: time.Hour,
				WAL:           vq.WALConfig{Dir: t.TempDir(), Mode: vq.Periodic, SyncInterval: time.Hour},
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range total {
				if err := q.Enqueue(fmt.Appendf(nil, "%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			for range workers - 1 {
				<-held // the full batches in Send, unwritten
			}
			ctx := context.Background()
			if deadline {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Minute)
				defer cancel()
			}
			stopped := make(chan error, 1)
			go func() { stopped <- q.Stop(ctx) }()
			<-partialSent
			close(release)
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
			if st := q.Stats(); st.Delivered != total {
				t.Fatalf("delivered %d of %d", st.Delivered, total)
			}
			want := int64(0)
			if deadline {
				want = total
			}
			if n := encoded.Load(); n != want {
				t.Errorf("Stop (deadline %v) wrote %d items, all of them delivered by its end: want %d", deadline, n, want)
			}
		})
	}
}

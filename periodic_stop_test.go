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
			keys := keysOnShardsOfTheirOwn(workers)
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
				Codec:     countCodec{all: &encoded},
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
			stopWritesOnlyWhatItMust(t, q, deadline, partialSent, release, &encoded, total)
		})
	}
}

// TestPeriodicStopWritesHeldKeyedBeforeItsDeadline: a keyed batch cannot
// be cut while its shard has a batch in Send, so at a Stop whose Sends are
// held its key's later items wait in the shard. Stop writes them as it
// begins, with its ctx still running, so that none is encoded once it is
// out of time; the next New replays every item, each key's in its order.
// It used to cut and write them only at the deadline (24,000 of 32,000
// items encoded past it with 4 keys, 32 Workers, BatchSize 1,000), so
// that Stop returned late by as long as those writes took.
func TestPeriodicStopWritesHeldKeyedBeforeItsDeadline(t *testing.T) {
	defer goleak.VerifyNone(t)
	const workers, batch, keys, perKey = 8, 50, 4, 300
	const total = keys * perKey
	dir := t.TempDir()
	var past atomic.Bool
	var after atomic.Int64
	inSend := make(chan struct{}, total)
	q, err := vq.New(vq.Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			inSend <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		},
		Codec:         countCodec{past: &past, after: &after},
		BatchSize:     batch,
		Workers:       workers,
		FlushInterval: 5 * time.Millisecond,
		// No checkpoint during the test: only Stop writes.
		WAL: vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each key on a shard of its own, six batches' worth each: the
	// shard's first batch goes to a Send that holds it, and the rest
	// waits behind it.
	ks := keysOnShardsOfTheirOwn(keys)
	for i := range perKey {
		for k, key := range ks {
			if err := q.EnqueueKey(key, fmt.Appendf(nil, "k/%d/%d", k, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-inSend // a batch is held; the rest of its shards' items wait behind it
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { past.Store(true) })
	defer stop()
	if err := q.Stop(ctx); err == nil {
		t.Fatal("Stop returned nil with every Send held past its deadline")
	}
	if n := after.Load(); n != 0 {
		t.Errorf("%d items encoded after Stop's deadline, want 0: the keyed items waiting behind a batch in Send were written only once Stop was out of time", n)
	}
	if got := q.Stats().LeftOnDisk; got != total {
		t.Errorf("LeftOnDisk = %d, want %d", got, total)
	}

	// The replay: every item once, each key's in its order (a key's next
	// batch is sent only once its last one is finished, so the order of
	// the Sends' starts is the key's).
	var mu sync.Mutex
	next := make([]int, keys)
	var replayed, outOfOrder int
	q2, err := vq.New(vq.Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range b {
				replayed++
				k, seq, ok := keyedSeq(string(v))
				if !ok || k >= keys || seq != next[k] {
					outOfOrder++
					continue
				}
				next[k]++
			}
			return nil
		},
		Codec:   countCodec{},
		Workers: workers,
		WAL:     vq.WALConfig{Dir: dir, Mode: vq.Periodic},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if replayed != total || outOfOrder != 0 {
		t.Errorf("the next New replayed %d items (%d out of their key's order or not ours), want %d in order", replayed, outOfOrder, total)
	}
}

// countCodec encodes []byte as is and counts the items it encodes: all of
// them in all, and in after those encoded once past is set (Stop's
// deadline has passed); a nil counter counts nothing.
type countCodec struct {
	all   *atomic.Int64
	past  *atomic.Bool
	after *atomic.Int64
}

func (c countCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if c.all != nil {
		c.all.Add(1)
	}
	if c.past != nil && c.past.Load() {
		c.after.Add(1)
	}
	return append(dst, v...), nil
}

func (countCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestPeriodicCloseWritesOnlyWhatItMustKeyed is
// TestPeriodicCloseWritesOnlyWhatItMust for keyed items: a key's first
// batch is held in Send, its later items wait in the shard behind it, and
// a few items of another key are cut by Stop itself, so that their Send
// says that Stop is past the point where it writes (or not). Close writes
// none of them, all being delivered by its end; a Stop with a deadline
// writes every one as it begins (the batch in Send, and the items behind
// it). (It fails if every Stop writes what the keyed shards hold.)
func TestPeriodicCloseWritesOnlyWhatItMustKeyed(t *testing.T) {
	defer goleak.VerifyNone(t)
	// One P: a batch is cut only once every item the collector counts is
	// published (the producer is never stopped while pinned).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const workers, batch, behind, partial = 2, 25, 30, 10
	const total = batch + behind + partial
	ks := keysOnShardsOfTheirOwn(2) // two keys on shards of their own
	for _, deadline := range []bool{false, true} {
		t.Run(fmt.Sprintf("deadline=%v", deadline), func(t *testing.T) {
			var encoded atomic.Int64
			held := make(chan struct{}, 1)
			partialSent := make(chan struct{})
			release := make(chan struct{})
			q, err := vq.New(vq.Config[[]byte]{
				Send: func(ctx context.Context, b [][]byte) error {
					switch {
					case string(b[0][:2]) == "b/":
						close(partialSent) // the other key's only batch
					case len(b) == batch && string(b[0]) == "a/0":
						held <- struct{}{}
						<-release
					}
					return nil
				},
				Codec:     countCodec{all: &encoded},
				BatchSize: batch,
				Workers:   workers,
				// Only full batches, until Stop.
				FlushInterval: time.Hour,
				WAL:           vq.WALConfig{Dir: t.TempDir(), Mode: vq.Periodic, SyncInterval: time.Hour},
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := range batch + behind {
				if err := q.EnqueueKey(ks[0], fmt.Appendf(nil, "a/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			<-held // the key's first batch in Send, unwritten; the rest behind it
			for i := range partial {
				if err := q.EnqueueKey(ks[1], fmt.Appendf(nil, "b/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			stopWritesOnlyWhatItMust(t, q, deadline, partialSent, release, &encoded, total)
		})
	}
}

// stopWritesOnlyWhatItMust is the end of the two tests above: it stops q
// (with a deadline or, as Close, without), lets the held Sends go once the
// partial batch Stop cut has been sent, and checks that all total items
// were delivered and that the Stop wrote all of them if it had a deadline,
// none otherwise (encoded counts what the Codec encoded).
func stopWritesOnlyWhatItMust(t *testing.T, q *vq.Queue[[]byte], deadline bool, partialSent <-chan struct{}, release chan<- struct{}, encoded *atomic.Int64, total int) {
	t.Helper()
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
	if st := q.Stats(); st.Delivered != uint64(total) {
		t.Fatalf("delivered %d of %d", st.Delivered, total)
	}
	want := int64(0)
	if deadline {
		want = int64(total)
	}
	if n := encoded.Load(); n != want {
		t.Errorf("Stop (deadline %v) wrote %d items, all of them delivered by its end: want %d", deadline, n, want)
	}
}

// TestPeriodicStopWritesEveryCollectorsBatches: with Collectors 2, the
// second collector cuts what its rings hold as Stop begins, while the
// first writes the batches cut so far. A Stop whose ctx can end has every
// collector write what it cut before handing it on, so that all of it is
// on disk while ctx runs: ctx is cancelled here only once every item is
// encoded (or after 2 s), and none is encoded after. The second collector's
// last batches used to wait, unwritten, for a sender until the deadline,
// and were written past it (in 60 of 100 rounds of this shape; here,
// 2 of 5 rounds failed in each of three runs).
func TestPeriodicStopWritesEveryCollectorsBatches(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // a P for each collector
	const producers, each = 4, 2000
	const total = producers * each
	for round := range 10 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			var past atomic.Bool
			var after, encoded atomic.Int64
			q, err := vq.New(vq.Config[[]byte]{
				Send: func(ctx context.Context, b [][]byte) error {
					<-ctx.Done()
					return ctx.Err()
				},
				Codec:         countCodec{all: &encoded, past: &past, after: &after},
				BatchSize:     100,
				Workers:       4,
				Collectors:    2,
				FlushInterval: time.Hour,
				WAL:           vq.WALConfig{Dir: t.TempDir(), Mode: vq.Periodic, SyncInterval: time.Hour, SegmentSize: 4 << 20},
			})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range each {
						if err := q.Enqueue(fmt.Appendf(nil, "%d/%d", p, i)); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan error, 1)
			go func() { stopped <- q.Stop(ctx) }()
			// Out of time once every item is on disk (Sends are held:
			// none is delivered), or once waiting for that is over.
			for limit := time.Now().Add(2 * time.Second); encoded.Load() < total && time.Now().Before(limit); {
				time.Sleep(time.Millisecond)
			}
			past.Store(true)
			cancel()
			if err := <-stopped; err == nil {
				t.Fatal("Stop returned nil with every Send held")
			}
			if n := after.Load(); n != 0 {
				t.Errorf("%d items encoded once Stop was out of time, want 0 (%d before)", n, encoded.Load()-n)
			}
			if got := q.Stats().LeftOnDisk; got != total {
				t.Errorf("LeftOnDisk = %d, want %d", got, total)
			}
		})
	}
}

// keysOnShardsOfTheirOwn returns n keys, each on a keyed shard no other of
// them is on: their batches can be with senders at once.
func keysOnShardsOfTheirOwn(n int) []uint64 {
	var keys []uint64
	shards := map[int]bool{}
	for k := uint64(0); len(keys) < n; k++ {
		if s := engine.ShardOf(k); !shards[s] {
			shards[s] = true
			keys = append(keys, k)
		}
	}
	return keys
}

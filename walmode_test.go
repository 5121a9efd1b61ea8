package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

func TestWALSyncDeliversAndAcks(t *testing.T) {
	dir := t.TempDir()
	s := newSink[string]()
	q, err := New(Config[string]{Send: s.send, Workers: 2, BatchSize: 64,
		WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	const G, per = 16, 200
	var wg sync.WaitGroup
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := q.Enqueue(fmt.Sprintf("g%d-%d", g, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := q.EnqueueBatch([]string{"b1", "b2"}); n != 2 || err != nil {
		t.Fatalf("EnqueueBatch = %d, %v", n, err)
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.n.Load(); got != G*per+2 {
		t.Fatalf("after Flush delivered %d, want %d", got, G*per+2)
	}
	if st := q.Stats(); st.WALBytes == 0 {
		t.Errorf("WALBytes = 0 with a live log")
	}
	for i := 0; i < 50; i++ {
		if err := q.EnqueueKey(uint64(i%3), fmt.Sprintf("k%d-%03d", i%3, i)); err != nil {
			t.Fatalf("EnqueueKey in Sync mode = %v", err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if st.Enqueued != G*per+52 || st.Delivered != G*per+52 || st.Buffered != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Everything was acknowledged: a new queue replays nothing.
	q2, err := New(Config[string]{Send: s.send, WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if r := q2.Stats().Replayed; r != 0 {
		t.Fatalf("replayed %d after a clean close", r)
	}
}

// sinkDownConfig is a WAL queue in dir whose sink always fails, retried
// briefly: what it accepts stays in the WAL for the next New.
func sinkDownConfig(dir string, mode WALMode) Config[[]byte] {
	return Config[[]byte]{
		Send:  func(ctx context.Context, _ [][]byte) error { return errors.New("sink down") },
		Retry: RetryPolicy{MaxAttempts: RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		WAL:   WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
	}
}

// TestWALReplayAfterStopDeadline: Send is down; Stop runs out of time; the
// items stay on disk; the next queue delivers them all before new keyed items.
func TestWALReplayAfterStopDeadline(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			dir := t.TempDir()
			q, err := New(sinkDownConfig(dir, mode))
			if err != nil {
				t.Fatal(err)
			}
			const n = 500
			for i := 0; i < n; i++ {
				var err error
				if i%10 == 0 { // the keyed path is durable too
					err = q.EnqueueKey(uint64(i%7), []byte(strconv.Itoa(i)))
				} else {
					err = q.Enqueue([]byte(strconv.Itoa(i)))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v, want DeadlineExceeded", err)
			}
			if st := q.Stats(); st.Delivered != 0 || st.Dropped != 0 {
				t.Fatalf("stats after failed stop %+v", st)
			}
			var order []string
			var mu sync.Mutex
			q2, err := New(Config[[]byte]{
				Send: func(_ context.Context, b [][]byte) error {
					mu.Lock()
					for _, v := range b {
						order = append(order, string(v))
					}
					mu.Unlock()
					return nil
				},
				WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
			})
			if err != nil {
				t.Fatal(err)
			}
			// Keyed: per key, replayed items go before new ones (unkeyed
			// new items flow beside the replay, in no order with it).
			if err := q2.EnqueueKey(3, []byte("new")); err != nil {
				t.Fatal(err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			st := q2.Stats()
			if st.Replayed != n || st.Delivered != n+1 {
				t.Fatalf("replayed %d, delivered %d; want %d, %d", st.Replayed, st.Delivered, n, n+1)
			}
			seen := map[string]bool{}
			for _, v := range order {
				seen[v] = true
			}
			for i := 0; i < n; i++ {
				if !seen[strconv.Itoa(i)] {
					t.Fatalf("item %d not replayed", i)
				}
			}
			if order[len(order)-1] != "new" {
				t.Errorf("the new item was delivered before replay finished: last is %q", order[len(order)-1])
			}
		})
	}
}

// TestReplayKeepsKeyOrder: EnqueueKey's items left in the WAL are delivered
// after the next New in each key's order, with many Workers whose Sends take
// uneven times (replayed batches go out one at a time). In Periodic mode a
// keyed batch's items are written by its sender while checkpoints write the
// items behind it in its shards: they must reach the WAL in that order.
func TestReplayKeepsKeyOrder(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) { testReplayKeepsKeyOrder(t, mode) })
	}
}

func testReplayKeepsKeyOrder(t *testing.T, mode WALMode) {
	dir := t.TempDir()
	cfg := sinkDownConfig(dir, mode)
	cfg.Workers, cfg.BatchSize = 4, 5 // batches in flight while shards fill
	cfg.WAL.SyncInterval = 2 * time.Millisecond
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 8, 60
	var written uint64 // WALBytes before the last ten rounds
	for i := 0; i < perKey; i++ {
		if i%10 == 0 {
			// Read before the rounds, not after: a checkpoint may write
			// them all before a read after them, and with the sink down
			// nothing is written after that.
			written = q.Stats().WALBytes
		}
		for k := 0; k < keys; k++ {
			if err := q.EnqueueKey(uint64(k), []byte(fmt.Sprintf("%d/%d", k, i))); err != nil {
				t.Fatal(err)
			}
		}
		if mode == Periodic && i%10 == 9 {
			// Let a checkpoint write what the shards hold behind the
			// batches in flight before more arrives.
			waitFor(t, "a wal write", func() bool { return q.Stats().WALBytes > written })
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	var mu sync.Mutex
	next := make([]int, keys)
	var bad []string
	var calls atomic.Int64
	q2, err := New(Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error {
			// Uneven Send times, so concurrent batches would overtake.
			for range (calls.Add(1) % 7) * 50 {
				runtime.Gosched()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, v := range b {
				var k, i int
				if _, err := fmt.Sscanf(string(v), "%d/%d", &k, &i); err != nil {
					return Permanent(err)
				}
				if i != next[k] {
					bad = append(bad, fmt.Sprintf("key %d: got %d, want %d", k, i, next[k]))
				}
				next[k] = i + 1
			}
			return nil
		},
		Workers: 8, BatchSize: 5,
		WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if st := q2.Stats(); st.Replayed != keys*perKey || st.Delivered != keys*perKey {
		t.Fatalf("replayed %d, delivered %d; want %d", st.Replayed, st.Delivered, keys*perKey)
	}
	if len(bad) > 0 {
		t.Fatalf("%d out of order, first: %s", len(bad), bad[0])
	}
}

// TestStopDuringReplay: a Stop with a deadline returns while the sink keeps
// failing the replayed records, and leaves them in the WAL for the next New.
func TestStopDuringReplay(t *testing.T) {
	dir := t.TempDir()
	cfg := sinkDownConfig(dir, Sync)
	const n = 300
	for round := 0; round < 2; round++ {
		q, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			for i := 0; i < n; i++ {
				if err := q.Enqueue([]byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
		} else {
			waitFor(t, "the replay to reach Send", func() bool { return q.Stats().Retries > 0 })
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err = q.Stop(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: Stop = %v, want DeadlineExceeded", round, err)
		}
	}
	var got atomic.Int64
	cfg.Send = func(_ context.Context, b [][]byte) error { got.Add(int64(len(b))); return nil }
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got.Load() != n {
		t.Fatalf("delivered %d after the interrupted replay, want %d", got.Load(), n)
	}
}

func TestWALLocked(t *testing.T) {
	dir := t.TempDir()
	ok := func(context.Context, []string) error { return nil }
	q, err := New(Config[string]{Send: ok, WAL: WALConfig{Dir: dir, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q2, err := New(Config[string]{Send: ok, WAL: WALConfig{Dir: dir, SegmentSize: 1 << 20}}); !errors.Is(err, ErrLocked) {
		if q2 != nil {
			q2.Close()
		}
		t.Fatalf("second New on the same dir = %v, want ErrLocked", err)
	}
	type custom struct{ A int }
	if _, err := New(Config[custom]{Send: func(context.Context, []custom) error { return nil },
		WAL: WALConfig{Dir: t.TempDir()}}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Codec") {
		t.Fatalf("WAL without a Codec for a struct = %v", err)
	}
}

// TestCrashSIGKILL: a child in Sync mode enqueues and prints each accepted
// id; the parent SIGKILLs it at random moments and restarts it. Children
// print what they deliver. At the end every accepted id was delivered at
// least once (replay covers the kills).
func TestCrashSIGKILL(t *testing.T) {
	if os.Getenv("VINEQUEUE_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	kills := 20
	if n, err := strconv.Atoi(os.Getenv("VINEQUEUE_CRASH_KILLS")); err == nil {
		kills = n
	} else if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	accepted := map[int]bool{}
	delivered := map[int]bool{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	next := 0
	run := func(killAfter time.Duration, final bool) {
		env := []string{"VINEQUEUE_CRASH_CHILD=" + dir, "VINEQUEUE_CRASH_START=" + strconv.Itoa(next)}
		if final {
			env = append(env, "VINEQUEUE_CRASH_FINAL=1")
		}
		c := crashtest.Start(t, "TestCrashSIGKILL", func(line string) {
			kind, num, ok := strings.Cut(line, " ")
			if !ok {
				return
			}
			id, err := strconv.Atoi(num)
			if err != nil {
				return
			}
			switch kind {
			case "A":
				accepted[id] = true
				next = max(next, id+1)
			case "D":
				delivered[id] = true
			}
		}, env...)
		if final {
			if err := c.End(); err != nil {
				t.Fatalf("final child failed: %v: %s", err, c.StderrTail())
			}
		} else if err := c.KillAfter(killAfter); err != nil {
			// A child that is not the last enqueues until it is killed:
			// ending first, it failed (New, or an Enqueue that returned
			// an error, then Close), and its run tested nothing.
			t.Fatalf("child to be killed after %v: %v", killAfter, err)
		}
		if s := c.Crashed(); s != "" {
			t.Fatalf("child: %s", s)
		}
		next += 1_000_000 // ids of a killed child's unreported enqueues are never reused
	}
	for i := 0; i < kills; i++ {
		run(time.Duration(20+rng.IntN(150))*time.Millisecond, false)
	}
	run(0, true)
	missing := 0
	for id := range accepted {
		if !delivered[id] {
			missing++
			if missing < 10 {
				t.Errorf("accepted id %d never delivered", id)
			}
		}
	}
	t.Logf("%d kills: %d ids accepted, %d delivered (at least once), %d missing", kills, len(accepted), len(delivered), missing)
	if len(accepted) == 0 {
		t.Fatal("no id accepted: the child never got going")
	}
}

func crashChild() {
	dir := os.Getenv("VINEQUEUE_CRASH_CHILD")
	start, _ := strconv.Atoi(os.Getenv("VINEQUEUE_CRASH_START"))
	final := os.Getenv("VINEQUEUE_CRASH_FINAL") != ""
	var outMu sync.Mutex
	emit := func(kind string, id int) {
		outMu.Lock()
		os.Stdout.WriteString(kind + " " + strconv.Itoa(id) + "\n")
		outMu.Unlock()
	}
	q, err := New(Config[string]{
		Send: func(_ context.Context, b []string) error {
			for _, v := range b {
				id, _ := strconv.Atoi(v)
				emit("D", id)
			}
			return nil
		},
		Workers: 2, BatchSize: 32, FlushInterval: 10 * time.Millisecond,
		WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var id atomic.Int64
	id.Store(int64(start))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; final && i < 50 || !final; i++ {
				n := int(id.Add(1))
				if err := q.Enqueue(strconv.Itoa(n)); err != nil {
					return
				}
				emit("A", n)
			}
		}()
	}
	wg.Wait() // a killed child never gets here
	if err := q.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "child close:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// spillItems items of 64 KiB are three times spillingQueue's memory limit.
const spillItems = 200

// spillingQueue starts a Spill-policy queue in mode whose Send waits for
// release (counting what it delivers in delivered), fills it to three times
// its memory limit, and waits until something has been spilled.
func spillingQueue(t *testing.T, mode WALMode, release <-chan struct{}, delivered *atomic.Int64) *Queue[[]byte] {
	t.Helper()
	q, err := New(Config[[]byte]{
		Send:      gatedSend(release, delivered),
		BatchSize: 8, RingSize: 8, FlushInterval: time.Hour,
		Memory: MemoryConfig{Limit: 4 << 20, Policy: Spill},
		WAL:    WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 4 << 20, Compression: NoCompression},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < spillItems; i++ {
		if err := q.Enqueue(make([]byte, 64<<10)); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
	}
	waitFor(t, "a spill", func() bool { return q.Stats().Spilled > 0 })
	return q
}

// TestSpillSyncAndPeriodic: Spill with items that are already in the WAL
// (Sync and Periodic modes): at the hard level they are let go from memory
// without a second write, read back later, and every item is delivered once
// the sink recovers.
func TestSpillSyncAndPeriodic(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			release := make(chan struct{})
			var delivered atomic.Int64
			q := spillingQueue(t, mode, release, &delivered)
			close(release)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			t.Logf("%v: spilled %d, delivered %d", mode, st.Spilled, st.Delivered)
			if delivered.Load() != spillItems || st.Delivered != spillItems || st.Dropped != 0 {
				t.Fatalf("delivered %d (stats %+v), want %d", delivered.Load(), st, spillItems)
			}
		})
	}
}

// TestFlushWaitsForSpilled: Flush covers items that were spilled to the WAL
// at the hard level. They are read back once memory is below Soft, and Flush
// returns only when they too have been delivered.
func TestFlushWaitsForSpilled(t *testing.T) {
	for _, mode := range []WALMode{Overflow, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			release := make(chan struct{})
			var delivered atomic.Int64
			q := spillingQueue(t, mode, release, &delivered)
			defer q.Close()
			close(release)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := q.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := delivered.Load(); got != spillItems {
				t.Fatalf("Flush returned with %d of %d items delivered (%d spilled)", got, spillItems, q.Stats().Spilled)
			}
		})
	}
}

// gatedSend is a sink that is down until release is closed (it waits, and
// returns its ctx's error if Stop gives up first), then delivers, counting
// in delivered (which may be nil).
func gatedSend(release <-chan struct{}, delivered *atomic.Int64) SendFunc[[]byte] {
	return func(ctx context.Context, b [][]byte) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		if delivered != nil {
			delivered.Add(int64(len(b)))
		}
		return nil
	}
}

// TestKeyedNotStarved: keyed items are delivered while unkeyed traffic keeps
// the collector busy (the full batch at once, the rest on the interval tick).
func TestKeyedNotStarved(t *testing.T) {
	var keyed atomic.Int64
	q, err := New(Config[int]{
		Send: func(_ context.Context, b []int) error {
			for _, v := range b {
				if v < 0 {
					keyed.Add(1)
				}
			}
			return nil
		},
		BatchSize: 64, RingSize: 64, FlushInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q.Enqueue(i)
		}
	}()
	for i := 1; i <= 100; i++ {
		if err := q.EnqueueKey(uint64(i%4), -i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "keyed items delivered under load", func() bool { return keyed.Load() == 100 })
	close(stop)
	<-done
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// stallCodec is the []byte codec, except that encoding stall (the first
// time) waits for release: it holds a sender in its write before Send.
type stallCodec struct {
	stall   string
	once    *sync.Once
	entered chan struct{}
	release chan struct{}
}

func (c stallCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if string(v) == c.stall {
		c.once.Do(func() { close(c.entered); <-c.release })
	}
	return append(dst, v...), nil
}

func (stallCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestPeriodicKeyedWriteOrder: in Periodic mode a key's items must reach
// the WAL in their order, since the replay delivers them in WAL order:
// while the write of its first item is held, nothing may write the items
// behind it in its shard first (a checkpoint, were the first written
// elsewhere than on the collector).
func TestPeriodicKeyedWriteOrder(t *testing.T) {
	dir := t.TempDir()
	codec := stallCodec{stall: "0", once: new(sync.Once), entered: make(chan struct{}), release: make(chan struct{})}
	const syncEvery = 2 * time.Millisecond
	cfg := sinkDownConfig(dir, Periodic)
	cfg.Codec = codec
	cfg.BatchSize, cfg.FlushInterval = 1, 2*time.Millisecond
	cfg.WAL.SyncInterval = syncEvery
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueKey(7, []byte("0")); err != nil {
		t.Fatal(err)
	}
	<-codec.entered // being written, and held
	const n = 50
	for i := 1; i < n; i++ {
		if err := q.EnqueueKey(7, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Hold the write over many checkpoints (pacing, not waiting for an
	// event: the checkpoints must not write items 1.. meanwhile).
	time.Sleep(25 * syncEvery)
	close(codec.release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	var got []string
	q2, err := New(Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error {
			for _, v := range b {
				got = append(got, string(v))
			}
			return nil
		},
		WAL: WALConfig{Dir: dir, Mode: Periodic, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("replayed %d items, want %d", len(got), n)
	}
	for i, v := range got {
		if v != strconv.Itoa(i) {
			t.Fatalf("replay out of order at %d: %v", i, got)
		}
	}
}

package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// leaveBacklog fills dir's WAL with n unacknowledged items: a queue whose
// sink is down is stopped out of time.
func leaveBacklog(t *testing.T, dir string, mode WALMode, n int) {
	t.Helper()
	q, err := New(sinkDownConfig(dir, mode))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := q.Enqueue([]byte("old" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
}

// TestIntakeBesideReplay: after a restart with a backlog in the WAL and a
// sink that blocks (a broker that is down), new items are still accepted —
// durably in Sync mode. Before the replay ran beside intake, Sync mode
// accepted 29 of 4,800 items in 5 s and Periodic 1,424.
func TestIntakeBesideReplay(t *testing.T) {
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			dir := t.TempDir()
			leaveBacklog(t, dir, mode, 200)
			release := make(chan struct{})
			var delivered atomic.Int64
			q, err := New(Config[[]byte]{
				Send:      gatedSend(release, &delivered),
				BatchSize: 64, Workers: 2, FlushInterval: 10 * time.Millisecond,
				WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
			})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the replay to start", func() bool { return q.Stats().Replayed > 0 })
			const producers, each = 32, 150
			accepted := make(chan int, producers)
			for p := range producers {
				go func() {
					n := 0
					for i := range each {
						if q.Enqueue([]byte(fmt.Sprintf("new%d.%d", p, i))) == nil {
							n++
						}
					}
					accepted <- n
				}()
			}
			total := 0
			deadline := time.After(30 * time.Second) // a hang fails, it does not stall the suite
			for range producers {
				select {
				case n := <-accepted:
					total += n
				case <-deadline:
					t.Fatalf("intake stalled behind the replay: %d producers not done", producers)
				}
			}
			if total != producers*each {
				t.Fatalf("accepted %d of %d new items while the sink was down", total, producers*each)
			}
			close(release)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if got := delivered.Load(); got != 200+producers*each {
				t.Fatalf("delivered %d, want %d", got, 200+producers*each)
			}
		})
	}
}

// TestSendEnqueuesDuringReplay: a Send that enqueues (say, a retry topic)
// while a backlog replays must not deadlock against the replay.
func TestSendEnqueuesDuringReplay(t *testing.T) {
	dir := t.TempDir()
	leaveBacklog(t, dir, Sync, 300)
	var q *Queue[[]byte]
	ready := make(chan struct{})
	var followUps atomic.Int64
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			<-ready
			for _, v := range b {
				if len(v) > 3 && string(v[:3]) == "old" {
					if err := q.Enqueue([]byte("follow-up")); err != nil && !errors.Is(err, ErrClosed) {
						return err
					}
					followUps.Add(1)
				}
			}
			return nil
		},
		BatchSize: 16, Workers: 1, FlushInterval: 10 * time.Millisecond,
		WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	waitFor(t, "every replayed item to enqueue its follow-up", func() bool { return followUps.Load() == 300 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := q.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Replayed != 300 || st.Delivered != 600 {
		t.Fatalf("replayed %d, delivered %d; want 300 and 600", st.Replayed, st.Delivered)
	}
}

// TestStopDeadlineWhateverSendDoes: a Send that ignores its ctx cannot hold
// Stop past its deadline (it did for as long as Send blocked). Without a WAL
// the batch it holds goes to OnDrop; with one it stays on disk and the next
// New delivers it.
func TestStopDeadlineWhateverSendDoes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []string{"memory", "sync", "periodic"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			stuck := make(chan struct{})
			entered := make(chan struct{}, 1)
			var dropped atomic.Int64
			var mu sync.Mutex
			var droppedItems []string
			cfg := Config[[]byte]{
				Send:      sendIgnoringCtx(entered, stuck),
				BatchSize: 10, FlushInterval: 5 * time.Millisecond,
				OnDrop: func(b [][]byte, reason error) {
					dropped.Add(int64(len(b)))
					mu.Lock()
					for _, v := range b {
						droppedItems = append(droppedItems, string(v))
					}
					mu.Unlock()
				},
			}
			switch mode {
			case "sync":
				cfg.WAL = WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20}
			case "periodic":
				cfg.WAL = WALConfig{Dir: dir, Mode: Periodic, SegmentSize: 1 << 20}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if err := q.Enqueue([]byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			<-entered
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			stopped := make(chan error, 1)
			go func() { stopped <- q.Stop(ctx) }()
			select {
			case err := <-stopped:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Stop = %v, want DeadlineExceeded", err)
				}
			case <-time.After(20 * time.Second):
				close(stuck)
				t.Fatal("Stop is still waiting for a Send that ignores its ctx")
			}
			st := q.Stats()
			if mode == "memory" {
				if dropped.Load() != 10 || st.Dropped != 10 {
					t.Fatalf("OnDrop got %d, Stats.Dropped %d; want 10", dropped.Load(), st.Dropped)
				}
			} else if dropped.Load() != 0 {
				t.Fatalf("OnDrop got %d items that are safe in the WAL", dropped.Load())
			}
			close(stuck) // the stuck Send returns nil now: too late, ignored
			if mode == "memory" {
				mu.Lock()
				defer mu.Unlock()
				if len(droppedItems) != 10 || droppedItems[0] != "0" {
					t.Fatalf("OnDrop's copy of the batch: %q", droppedItems)
				}
				return
			}
			var got atomic.Int64
			cfg.Send = func(_ context.Context, b [][]byte) error { got.Add(int64(len(b))); return nil }
			q2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			if got.Load() != 10 {
				t.Fatalf("the next New delivered %d of the 10 items a stuck Send held", got.Load())
			}
		})
	}
}

// itemsOnDisk counts the items framed in the records of dir's segments
// (read-only: the directory may be in use).
func itemsOnDisk(t *testing.T, dir string) int {
	t.Helper()
	rep, err := wal.Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range rep.Segments {
		_, err := wal.ReadSegment(filepath.Join(dir, s.Name), func(r wal.Record) error {
			if r.Gap {
				return nil
			}
			return wal.ForEachItem(r.Payload, func([]byte) error { n++; return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestPeriodicKeepsKeyedItems: in Periodic mode every accepted item is on
// disk within SyncInterval, keyed ones too. Keyed items waiting behind their
// shard's batch in flight were never written: 990 of 1,000 were not on disk
// after 100 SyncIntervals.
func TestPeriodicKeepsKeyedItems(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	q, err := New(Config[[]byte]{
		Send:      gatedSend(release, nil),
		BatchSize: 10, FlushInterval: time.Hour,
		WAL: WALConfig{Dir: dir, Mode: Periodic, SyncInterval: 10 * time.Millisecond, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	}()
	const n = 1000
	for i := range n {
		if err := q.EnqueueKey(uint64(i%4), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every keyed item on disk", func() bool { return itemsOnDisk(t, dir) >= n })
}

// TestStopDeadlineWhateverCallbacksDo: an OnDrop or an OnLevelChange that
// blocks cannot hold Stop past its deadline either (Stop waited for both).
func TestStopDeadlineWhateverCallbacksDo(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	stopWithin := func(t *testing.T, q *Queue[[]byte], d time.Duration) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		stopped := make(chan error, 1)
		go func() { stopped <- q.Stop(ctx) }()
		select {
		case err := <-stopped:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("Stop is still waiting for a callback that blocks")
			return nil
		}
	}
	t.Run("OnDrop", func(t *testing.T) {
		entered := make(chan struct{}, 1)
		q, err := New(Config[[]byte]{
			Send:      func(context.Context, [][]byte) error { return Permanent(errors.New("rejected")) },
			BatchSize: 1, FlushInterval: 5 * time.Millisecond,
			OnDrop: func([][]byte, error) {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if err := q.Enqueue([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		<-entered
		if err := stopWithin(t, q, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("OnLevelChange", func(t *testing.T) {
		hooked := make(chan struct{}, 1)
		q, err := New(Config[[]byte]{
			Send: func(context.Context, [][]byte) error { return nil },
			Memory: MemoryConfig{Limit: 1 << 20, Policy: Reject, OnLevelChange: func(Level, Level) {
				select {
				case hooked <- struct{}{}:
				default:
				}
				<-release
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			q.Enqueue(make([]byte, 2048)) // some are refused at Hard: fine
		}
		<-hooked
		if err := stopWithin(t, q, 500*time.Millisecond); err != nil {
			t.Fatalf("Stop = %v, want nil: everything accepted was delivered", err)
		}
	})
}

// sendIgnoringCtx is a Send that signals entered (once per call, if there
// is room) and then blocks until stuck is closed, whatever its ctx says: a
// sink that does not honour cancellation.
func sendIgnoringCtx(entered chan<- struct{}, stuck <-chan struct{}) SendFunc[[]byte] {
	return func(context.Context, [][]byte) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-stuck
		return nil
	}
}

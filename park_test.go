package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/wal"
)

// parkSink is a Send that records, per key, the sequence numbers it
// delivered (items are "<key>/<seq>"), and fails for good every batch that
// holds a poisoned item.
type parkSink struct {
	mu       sync.Mutex
	got      map[uint64][]int
	poisoned sync.Map // item text → true
	sends    atomic.Int64
}

func newParkSink() *parkSink { return &parkSink{got: map[uint64][]int{}} }

func (s *parkSink) send(_ context.Context, b [][]byte) error {
	s.sends.Add(1)
	for _, v := range b {
		if _, bad := s.poisoned.Load(string(v)); bad {
			return Permanent(errors.New("poison"))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range b {
		k, seq, ok := strings.Cut(string(v), "/")
		if !ok {
			panic("bad item " + string(v))
		}
		key, _ := strconv.ParseUint(k, 10, 64)
		n, _ := strconv.Atoi(seq)
		s.got[key] = append(s.got[key], n)
	}
	return nil
}

func (s *parkSink) delivered(key uint64) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got[key])
}

func parkItem(key uint64, seq int) []byte { return fmt.Appendf(nil, "%d/%d", key, seq) }

func seqs(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func parkConfig(dir string, mode WALMode, s *parkSink) Config[[]byte] {
	return Config[[]byte]{
		Send:      s.send,
		BatchSize: 1, Workers: 4, FlushInterval: 5 * time.Millisecond,
		Retry:    RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
		WAL:      WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20},
		ParkKeys: true,
	}
}

// enqueueKeys enqueues seq from..to-1 of every key, interleaved.
func enqueueKeys(t *testing.T, q *Queue[[]byte], keys []uint64, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		for _, k := range keys {
			if err := q.EnqueueKey(k, parkItem(k, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func flushT(t *testing.T, q *Queue[[]byte]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// failedLetter returns the one dead letter that is not parked, and how
// many parked ones there are.
func failedLetter(t *testing.T, q *Queue[[]byte]) (DeadLetter, int) {
	t.Helper()
	ds, err := q.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	var failed []DeadLetter
	parked := 0
	for _, d := range ds {
		if d.Parked {
			parked += d.Items
		} else {
			failed = append(failed, d)
		}
	}
	if len(failed) != 1 || failed[0].Keys != 1 {
		t.Fatalf("dead letters %+v: want one failed, of one key", ds)
	}
	return failed[0], parked
}

// closeWithNoDeadLetters checks that q holds no dead letter, closes it and
// checks the Stats identity after Close.
func closeWithNoDeadLetters(t *testing.T, q *Queue[[]byte]) {
	t.Helper()
	if ds, err := q.DeadLetters(); err != nil || len(ds) != 0 {
		t.Fatalf("dead letters left: %+v, %v", ds, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// parkPoisoned runs the common start: key 1's first item is poison; keys
// 1..5 get items 0..9. Key 1's dead letter parks items 1..9; the other
// keys are delivered whole, in order.
func parkPoisoned(t *testing.T, q *Queue[[]byte], s *parkSink) DeadLetter {
	t.Helper()
	s.poisoned.Store("1/0", true)
	keys := []uint64{1, 2, 3, 4, 5}
	enqueueKeys(t, q, keys, 0, 10)
	flushT(t, q)
	for _, k := range keys[1:] {
		if got := s.delivered(k); !slices.Equal(got, seqs(0, 10)) {
			t.Fatalf("key %d delivered %v; want 0..9 in order", k, got)
		}
	}
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 (parked) delivered %v", got)
	}
	st := q.Stats()
	if st.ParkedKeys != 1 || st.ParkedItems != 9 || st.Parked != 9 || st.DeadLettered != 1 || st.Buffered != 0 {
		t.Fatalf("Stats: ParkedKeys %d, ParkedItems %d, Parked %d, DeadLettered %d, Buffered %d; want 1, 9, 9, 1, 0",
			st.ParkedKeys, st.ParkedItems, st.Parked, st.DeadLettered, st.Buffered)
	}
	checkIdentity(t, st)
	d, parked := failedLetter(t, q)
	if parked != 9 || d.Items != 1 {
		t.Fatalf("failed dead letter of %d items, %d parked; want 1 and 9", d.Items, parked)
	}
	return d
}

// TestParkKeysRequeue: a poison item parks only its key (the other keys'
// items are all delivered, the poison key's later items are not); a
// requeue, with Send now accepting, delivers the dead letter and then the
// parked items, in the key's order; the key then flows again.
func TestParkKeysRequeue(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Sync, Periodic, Overflow} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newParkSink()
			q, err := New(parkConfig(t.TempDir(), mode, s))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			d := parkPoisoned(t, q, s)

			s.poisoned.Delete("1/0")
			if n, err := q.RequeueDeadLetters(d.ID); err != nil || n != 1 {
				t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
			}
			flushT(t, q)
			if got := s.delivered(1); !slices.Equal(got, seqs(0, 10)) {
				t.Fatalf("key 1 after requeue: %v; want 0..9 in order", got)
			}
			enqueueKeys(t, q, []uint64{1}, 10, 15)
			flushT(t, q)
			if got := s.delivered(1); !slices.Equal(got, seqs(0, 15)) {
				t.Fatalf("key 1 after release: %v; want 0..14 in order", got)
			}
			st := q.Stats()
			if st.ParkedKeys != 0 || st.ParkedItems != 0 {
				t.Fatalf("after requeue: ParkedKeys %d, ParkedItems %d", st.ParkedKeys, st.ParkedItems)
			}
			checkIdentity(t, st)
			closeWithNoDeadLetters(t, q)
		})
	}
}

// TestParkKeysPurge: purging the dead letter releases its key: the parked
// items are delivered, in order, without the purged one.
func TestParkKeysPurge(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newParkSink()
	q, err := New(parkConfig(t.TempDir(), Sync, s))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	d := parkPoisoned(t, q, s)
	if n, err := q.PurgeDeadLetters(d.ID); err != nil || n != 1 {
		t.Fatalf("PurgeDeadLetters = %d, %v", n, err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(1, 10)) {
		t.Fatalf("key 1 after purge: %v; want 1..9 in order", got)
	}
	if st := q.Stats(); st.ParkedKeys != 0 || st.ParkedItems != 0 {
		t.Fatalf("after purge: %+v", st)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// TestParkKeysSurviveRestart: after New, the parked key still waits (its
// items of the earlier process and its new ones alike), other keys flow,
// and a requeue then releases everything in order.
func TestParkKeysSurviveRestart(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := newParkSink()
			q, err := New(parkConfig(dir, mode, s))
			if err != nil {
				t.Fatal(err)
			}
			d := parkPoisoned(t, q, s)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}

			q, err = New(parkConfig(dir, mode, s))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			enqueueKeys(t, q, []uint64{1, 2}, 10, 12)
			flushT(t, q)
			if got := s.delivered(1); len(got) != 0 {
				t.Fatalf("key 1 delivered after restart: %v", got)
			}
			if got := s.delivered(2); !slices.Equal(got, seqs(0, 12)) {
				t.Fatalf("key 2 after restart: %v", got)
			}
			st := q.Stats()
			if st.ParkedKeys != 1 || st.ParkedItems != 11 || st.Parked != 2 {
				t.Fatalf("after restart: ParkedKeys %d, ParkedItems %d, Parked %d; want 1, 11, 2", st.ParkedKeys, st.ParkedItems, st.Parked)
			}
			checkIdentity(t, st)

			s.poisoned.Delete("1/0")
			if n, err := q.RequeueDeadLetters(); err != nil || n != 1+11 {
				t.Fatalf("RequeueDeadLetters() = %d, %v; want the failed dead letter and 11 parked", n, err)
			}
			flushT(t, q)
			if got := s.delivered(1); !slices.Equal(got, seqs(0, 12)) {
				t.Fatalf("key 1 after requeue: %v; want 0..11 in order", got)
			}
			if d.ID == 0 {
				t.Fatal("the failed dead letter has id 0")
			}
			closeWithNoDeadLetters(t, q)
		})
	}
}

// TestParkKeysReleasedOffline: the dead letter requeued (or purged) on the
// stopped queue's directory, as `vinewal dlq` does; the next New releases
// the key: the requeued items replay first, then the parked ones, in order.
func TestParkKeysReleasedOffline(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, how := range []string{"requeue", "purge"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s := newParkSink()
			q, err := New(parkConfig(dir, Sync, s))
			if err != nil {
				t.Fatal(err)
			}
			d := parkPoisoned(t, q, s)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			s.poisoned.Delete("1/0")
			want := seqs(0, 10)
			if how == "requeue" {
				_, err = wal.RequeueDeadLetters(dir, wal.Options{}, d.ID)
			} else {
				_, err = wal.PurgeDeadLetters(dir, wal.Options{}, d.ID)
				want = seqs(1, 10)
			}
			if err != nil {
				t.Fatal(err)
			}
			q, err = New(parkConfig(dir, Sync, s))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			flushT(t, q)
			if got := s.delivered(1); !slices.Equal(got, want) {
				t.Fatalf("key 1 after %s offline: %v; want %v", how, got, want)
			}
			if st := q.Stats(); st.ParkedKeys != 0 || st.ParkedItems != 0 {
				t.Fatalf("ParkedKeys %d, ParkedItems %d", st.ParkedKeys, st.ParkedItems)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, q.Stats())
		})
	}
}

// TestParkKeysShardOfSeveralKeys: two keys of one keyed shard; only the
// key whose item was dead-lettered parks, the other flows whole.
func TestParkKeysShardOfSeveralKeys(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := uint64(1)
	b := a + 1
	for engine.ShardOf(b) != engine.ShardOf(a) {
		b++
	}
	s := newParkSink()
	q, err := New(parkConfig(t.TempDir(), Periodic, s))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s.poisoned.Store(string(parkItem(a, 3)), true)
	enqueueKeys(t, q, []uint64{a, b}, 0, 20)
	flushT(t, q)
	if got := s.delivered(b); !slices.Equal(got, seqs(0, 20)) {
		t.Fatalf("key %d (same shard) delivered %v; want 0..19", b, got)
	}
	if got := s.delivered(a); !slices.Equal(got, seqs(0, 3)) {
		t.Fatalf("key %d delivered %v; want 0..2, then parked", a, got)
	}
	if st := q.Stats(); st.ParkedKeys != 1 || st.ParkedItems != 16 {
		t.Fatalf("ParkedKeys %d, ParkedItems %d; want 1 and 16", st.ParkedKeys, st.ParkedItems)
	}
	s.poisoned.Delete(string(parkItem(a, 3)))
	if _, err := q.RequeueDeadLetters(); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(a); !slices.Equal(got, seqs(0, 20)) {
		t.Fatalf("key %d after requeue: %v", a, got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// TestParkKeysNeedsAWAL: ParkKeys without a WAL is ErrInvalidConfig naming
// the field.
func TestParkKeysNeedsAWAL(t *testing.T) {
	_, err := New(Config[[]byte]{Send: func(context.Context, [][]byte) error { return nil }, ParkKeys: true})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ParkKeys") {
		t.Fatalf("New = %v; want ErrInvalidConfig naming ParkKeys", err)
	}
}

// TestParkKeysOrderUnderLoad: full batches of many keys, several Workers,
// producers running on while the dead letter is requeued: every key gets
// every item exactly once, in order (the poison batch's other keys park
// with it, and are released with it).
func TestParkKeysOrderUnderLoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newParkSink()
			cfg := parkConfig(t.TempDir(), mode, s)
			cfg.BatchSize = 8
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			const keys, half = 16, 150
			s.poisoned.Store("3/40", true)
			produce := func(from, to int) {
				var wg sync.WaitGroup
				for k := range uint64(keys) {
					wg.Go(func() {
						for i := from; i < to; i++ {
							if err := q.EnqueueKey(k, parkItem(k, i)); err != nil {
								t.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			produce(0, half)
			flushT(t, q)
			if st := q.Stats(); st.ParkedKeys == 0 || st.DeadLettered == 0 {
				t.Fatalf("nothing parked: %+v", st)
			}
			if got := s.delivered(3); len(got) > 40 {
				t.Fatalf("key 3 delivered past its poison item: %v", got)
			}
			s.poisoned.Delete("3/40")
			done := make(chan struct{})
			go func() { defer close(done); produce(half, 2*half) }()
			if _, err := q.RequeueDeadLetters(); err != nil {
				t.Error(err)
			}
			<-done
			flushT(t, q)
			for k := range uint64(keys) {
				if got := s.delivered(k); !slices.Equal(got, seqs(0, 2*half)) {
					t.Fatalf("key %d: %d items, want 0..%d in order: %v", k, len(got), 2*half-1, got)
				}
			}
			st := q.Stats()
			if st.ParkedKeys != 0 || st.ParkedItems != 0 {
				t.Fatalf("after release: ParkedKeys %d, ParkedItems %d", st.ParkedKeys, st.ParkedItems)
			}
			checkIdentity(t, st)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestParkKeysRequeueFailsAgain: a released dead letter that fails again
// stays, goes to OnDrop, and keeps its key parked; a later requeue, with
// the sink fixed, delivers everything in order.
func TestParkKeysRequeueFailsAgain(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newParkSink()
	var onDrop atomic.Int64
	cfg := parkConfig(t.TempDir(), Sync, s)
	cfg.OnDrop = func(b [][]byte, _ error) { onDrop.Add(int64(len(b))) }
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	d := parkPoisoned(t, q, s)
	if n, err := q.RequeueDeadLetters(d.ID); err != nil || n != 1 {
		t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
	}
	flushT(t, q)
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 delivered %v while its dead letter still fails", got)
	}
	st := q.Stats()
	if st.ParkedKeys != 1 || st.ParkedItems != 9 || onDrop.Load() != 2 {
		t.Fatalf("ParkedKeys %d, ParkedItems %d, OnDrop %d; want 1, 9, 2", st.ParkedKeys, st.ParkedItems, onDrop.Load())
	}
	checkIdentity(t, st)
	if d2, _ := failedLetter(t, q); d2.ID != d.ID {
		t.Fatalf("the dead letter changed: %d, was %d", d2.ID, d.ID)
	}
	s.poisoned.Delete("1/0")
	if _, err := q.RequeueDeadLetters(d.ID); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(0, 10)) {
		t.Fatalf("key 1: %v; want 0..9", got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// TestParkKeysStopDuringRelease: Stop runs out of time while a released
// dead letter is in Send: the dead letter stays where it was (counted in
// LeftOnDisk), no goroutine is left, and the next New still parks its key
// and releases it on request.
func TestParkKeysStopDuringRelease(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	s := newParkSink()
	var hang atomic.Bool
	inSend := make(chan struct{}, 1)
	cfg := parkConfig(dir, Sync, s)
	cfg.Send = hangingSend(s, inSend, func([][]byte) bool { return hang.Load() })
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := parkPoisoned(t, q, s)
	hang.Store(true)
	if _, err := q.RequeueDeadLetters(d.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inSend:
	case <-time.After(30 * time.Second):
		t.Fatal("the released dead letter never reached Send")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want its deadline", err)
	}
	st := q.Stats()
	if st.LeftOnDisk != 1 {
		t.Fatalf("LeftOnDisk %d; want the released item", st.LeftOnDisk)
	}
	checkIdentity(t, st)

	hang.Store(false)
	s.poisoned.Delete("1/0")
	q, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	flushT(t, q)
	if st := q.Stats(); st.ParkedKeys != 1 || st.ParkedItems != 9 || len(s.delivered(1)) != 0 {
		t.Fatalf("after restart: ParkedKeys %d, ParkedItems %d, key 1 delivered %v", st.ParkedKeys, st.ParkedItems, s.delivered(1))
	}
	if _, err := q.RequeueDeadLetters(d.ID); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(0, 10)) {
		t.Fatalf("key 1: %v; want 0..9", got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// hangingSend is s.send, except that a batch for which hang reports true
// signals inSend (once, without blocking) and waits for its ctx to end: a
// Send stuck on a batch until Stop gives up on it.
func hangingSend(s *parkSink, inSend chan<- struct{}, hang func([][]byte) bool) SendFunc[[]byte] {
	return func(ctx context.Context, b [][]byte) error {
		if hang(b) {
			select {
			case inSend <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		}
		return s.send(ctx, b)
	}
}

// holds reports whether b holds v.
func holds(v []byte) func([][]byte) bool {
	return func(b [][]byte) bool {
		return slices.ContainsFunc(b, func(x []byte) bool { return bytes.Equal(x, v) })
	}
}

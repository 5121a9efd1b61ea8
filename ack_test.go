package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// heldSend is a Send that records what it delivers, tells entered each
// time it is called, and returns only once release is closed (or its ctx
// ends).
type heldSend struct {
	entered chan struct{} // cap 1
	release chan struct{}
	mu      sync.Mutex
	seen    map[string]int
	sizes   []int
}

func newHeldSend() *heldSend {
	return &heldSend{entered: make(chan struct{}, 1), release: make(chan struct{}), seen: map[string]int{}}
}

func (h *heldSend) send(ctx context.Context, b [][]byte) error {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	for _, v := range b {
		h.seen[string(v)]++
	}
	h.sizes = append(h.sizes, len(b))
	h.mu.Unlock()
	return nil
}

func (h *heldSend) count(v string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[v]
}

// stillBlocked fails t if anything arrives on ch within a short while: the
// calls it reports must still be waiting.
func stillBlocked(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v) while Send was held", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestAckDeliveredWaitsForSend: AckDelivered does not return while Send
// holds the batch with its item, and returns nil after Send returned nil,
// with the item in the sink; in every mode. A full batch goes at once
// (FlushInterval is an hour): the callers of one batch are woken together.
func TestAckDeliveredWaitsForSend(t *testing.T) {
	for _, mode := range []WALMode{WALModeDefault, Overflow, Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHeldSend()
			cfg := Config[[]byte]{Send: h.send, BatchSize: 4, FlushInterval: time.Hour}
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20, SyncInterval: time.Hour}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := q.Close(); err != nil {
					t.Error(err)
				}
			}()
			done := make(chan error, 4)
			var early atomic.Int32
			for i := range 4 {
				go func() {
					v := "v" + strconv.Itoa(i)
					err := q.EnqueueAck(context.Background(), []byte(v), AckDelivered)
					if err == nil && h.count(v) != 1 {
						early.Add(1) // returned before Send had its item
					}
					done <- err
				}()
			}
			<-h.entered
			stillBlocked(t, done, "EnqueueAck(AckDelivered)")
			close(h.release)
			for range 4 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			if n := early.Load(); n != 0 {
				t.Fatalf("%d calls returned before Send delivered their item", n)
			}
			st := q.Stats()
			if st.Enqueued != 4 || st.Delivered != 4 || st.Batches != 1 {
				t.Fatalf("Enqueued %d, Delivered %d, Batches %d; want 4, 4, 1", st.Enqueued, st.Delivered, st.Batches)
			}
		})
	}
}

// TestAckDeliveredDropped: a Send that fails for good gives every caller of
// the batch an error matching ErrDropped and Send's error; the items went
// to OnDrop (and, with a WAL, to the dead-letter log).
func TestAckDeliveredDropped(t *testing.T) {
	errBroker := errors.New("record rejected")
	for _, mode := range []WALMode{WALModeDefault, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			var dropped atomic.Int64
			cfg := Config[[]byte]{
				Send:      func(context.Context, [][]byte) error { return Permanent(errBroker) },
				BatchSize: 8, FlushInterval: 20 * time.Millisecond,
				OnDrop: func(b [][]byte, _ error) { dropped.Add(int64(len(b))) },
			}
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 5)
			for i := range errs {
				wg.Go(func() { errs[i] = q.EnqueueAck(context.Background(), []byte{byte(i)}, AckDelivered) })
			}
			wg.Wait()
			for i, err := range errs {
				if !errors.Is(err, ErrDropped) || !errors.Is(err, errBroker) {
					t.Fatalf("call %d: %v; want ErrDropped wrapping Send's error", i, err)
				}
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			checkIdentity(t, st)
			if dropped.Load() != 5 || st.Dropped != 5 {
				t.Fatalf("OnDrop got %d, Stats.Dropped %d; want 5", dropped.Load(), st.Dropped)
			}
			if mode != WALModeDefault && st.DeadLettered != 5 {
				t.Fatalf("DeadLettered %d, want 5", st.DeadLettered)
			}
		})
	}
}

// TestAckDeliveredStopOutOfTime: with the sink down, Stop runs out of time:
// with a WAL that keeps the batch (Periodic writes it before Send, Sync at
// the call) the caller gets ErrClosed saying it is kept in the WAL, and the
// next New delivers it; without one (memory, Overflow) the item goes to
// OnDrop and the caller gets ErrDropped.
func TestAckDeliveredStopOutOfTime(t *testing.T) {
	for _, mode := range []WALMode{WALModeDefault, Overflow, Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			h := newHeldSend()
			cfg := Config[[]byte]{Send: h.send, BatchSize: 1, FlushInterval: time.Hour}
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20, SyncInterval: time.Hour}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- q.EnqueueAck(context.Background(), []byte("kept"), AckDelivered) }()
			<-h.entered
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v, want DeadlineExceeded", err)
			}
			err = <-done
			checkIdentity(t, q.Stats())
			kept := mode == Periodic || mode == Sync
			if !kept {
				if !errors.Is(err, ErrDropped) || !errors.Is(err, ErrClosed) {
					t.Fatalf("EnqueueAck = %v; want ErrDropped wrapping ErrClosed", err)
				}
				return
			}
			if !errors.Is(err, ErrClosed) || errors.Is(err, ErrDropped) || !strings.Contains(err.Error(), "kept in the WAL") {
				t.Fatalf("EnqueueAck = %v; want ErrClosed, kept in the WAL", err)
			}
			if st := q.Stats(); st.LeftOnDisk != 1 {
				t.Fatalf("LeftOnDisk %d, want 1", st.LeftOnDisk)
			}
			s := newSink[string]()
			q2, err := New(Config[string]{Send: s.send, FlushInterval: 20 * time.Millisecond,
				WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the kept item to be replayed", func() bool { return s.n.Load() == 1 })
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			if s.seen["kept"] != 1 {
				t.Fatalf("replayed %v, want the item kept", s.seen)
			}
		})
	}
}

// TestAckCtxBoundsTheWaitOnly: ctx ending returns its error while Send
// holds the batch; the item stays accepted and is delivered afterwards.
func TestAckCtxBoundsTheWaitOnly(t *testing.T) {
	h := newHeldSend()
	q, err := New(Config[[]byte]{Send: h.send, BatchSize: 1, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.EnqueueAck(ctx, []byte("late"), AckDelivered) }()
	<-h.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || errors.Is(err, ErrDropped) {
		t.Fatalf("EnqueueAck = %v, want context.Canceled", err)
	}
	if h.count("late") != 0 {
		t.Fatal("delivered before release")
	}
	close(h.release)
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.count("late") != 1 {
		t.Fatal("the item whose wait ended was not delivered")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// TestAckRefusedAtOnce: a refused item returns its error at once and is
// never delivered: after Stop (ErrClosed), too large for the WAL
// (ErrTooLarge), an unknown level (ErrInvalidConfig), under Policy Reject
// at the hard level (ErrFull).
func TestAckRefusedAtOnce(t *testing.T) {
	s := newSink[string]()
	q, err := New(Config[string]{Send: s.send, FlushInterval: 10 * time.Millisecond,
		WAL: WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 2<<20)
	for _, level := range []AckLevel{AckDurable, AckDelivered} {
		if err := q.EnqueueAck(context.Background(), big, level); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%v: EnqueueAck(too large) = %v, want ErrTooLarge", level, err)
		}
	}
	if err := q.EnqueueAck(context.Background(), "odd", AckLevel(7)); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("EnqueueAck(level 7) = %v, want ErrInvalidConfig", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for _, level := range []AckLevel{AckDurable, AckDelivered} {
		if err := q.EnqueueAck(context.Background(), "after", level); !errors.Is(err, ErrClosed) {
			t.Fatalf("%v after Stop: %v, want ErrClosed", level, err)
		}
	}
	if len(s.seen) != 0 {
		t.Fatalf("refused items delivered: %v", s.seen)
	}
	st := q.Stats()
	checkIdentity(t, st)
	if st.Enqueued != 0 {
		t.Fatalf("Enqueued %d, want 0", st.Enqueued)
	}

	// Reject at the hard level: one item weighs the whole limit by SizeOf.
	s2 := newSink[string]()
	q2, err := New(Config[string]{Send: s2.send, FlushInterval: time.Hour, RingSize: 2,
		SizeOf: func(string) int { return 1 << 20 },
		Memory: MemoryConfig{Limit: 1 << 20, Policy: Reject}})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.EnqueueAck(context.Background(), "heavy", AckDelivered); !errors.Is(err, ErrFull) {
		t.Fatalf("EnqueueAck at Hard = %v, want ErrFull", err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	if len(s2.seen) != 0 || q2.Stats().Rejected != 1 {
		t.Fatalf("delivered %v, Rejected %d; want nothing, 1", s2.seen, q2.Stats().Rejected)
	}
}

// TestAckManyCallers: 256 goroutines, each making calls one after the
// other (taking the next item from a shared count, so that all of them
// stay busy until the end): every call returns nil, every item is delivered
// once, the Stats identity holds, and the batches Send sees are full (each
// is cut at BatchSize, not per caller or per group: ≥ 0.8 × BatchSize on
// average).
func TestAckManyCallers(t *testing.T) {
	for _, mode := range []WALMode{WALModeDefault, Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			const callers, batchSize = 256, 64
			total := callers * 40
			if mode != WALModeDefault || testing.Short() {
				total = callers * 10
			}
			var mu sync.Mutex
			seen := map[uint64]int{}
			var sizes []int
			cfg := Config[uint64]{
				Send: func(_ context.Context, b []uint64) error {
					mu.Lock()
					for _, v := range b {
						seen[v]++
					}
					sizes = append(sizes, len(b))
					mu.Unlock()
					return nil
				},
				BatchSize: batchSize, FlushInterval: 200 * time.Millisecond, Workers: 2,
			}
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 8 << 20}
				cfg.Codec = uint64Codec{}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var failed, next atomic.Int64
			for range callers {
				wg.Go(func() {
					for v := next.Add(1); v <= int64(total); v = next.Add(1) {
						if err := q.EnqueueAck(context.Background(), uint64(v), AckDelivered); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := failed.Load(); n != 0 {
				t.Fatalf("%d calls failed", n)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			checkIdentity(t, st)
			if st.Enqueued != uint64(total) || st.Delivered != uint64(total) || len(seen) != total {
				t.Fatalf("Enqueued %d, Delivered %d, distinct %d; want %d", st.Enqueued, st.Delivered, len(seen), total)
			}
			for v, n := range seen {
				if n != 1 {
					t.Fatalf("item %d delivered %d times", v, n)
				}
			}
			mean := float64(total) / float64(len(sizes))
			t.Logf("%d batches, mean %.1f items (BatchSize %d)", len(sizes), mean, batchSize)
			if mean < 0.8*batchSize {
				t.Fatalf("mean batch %.1f < 0.8 × %d: %v", mean, batchSize, sizes)
			}
		})
	}
}

// uint64Codec encodes uint64 items for the WAL.
type uint64Codec struct{}

func (uint64Codec) Append(dst []byte, v uint64) ([]byte, error) {
	return strconv.AppendUint(dst, v, 10), nil
}

func (uint64Codec) Decode(src []byte) (uint64, error) { return strconv.ParseUint(string(src), 10, 64) }

// walItems returns the items framed in the records of dir's segments
// (read-only: the directory may be in use).
func walItems(t *testing.T, dir string) map[string]bool {
	t.Helper()
	rep, err := wal.Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	items := map[string]bool{}
	for _, s := range rep.Segments {
		_, err := wal.ReadSegment(filepath.Join(dir, s.Name), func(r wal.Record) error {
			if r.Gap {
				return nil
			}
			return wal.ForEachItem(r.Payload, func(it []byte) error { items[string(it)] = true; return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return items
}

// TestAckDurable: AckDurable returns with the item in the WAL in every mode
// with one, while the sink holds everything (so nothing is delivered), and
// where a plain Enqueue's item is not on disk yet (Periodic, whose
// checkpoint is an hour away, and Overflow); without a WAL it waits for
// delivery, as AckDelivered does.
func TestAckDurable(t *testing.T) {
	for _, mode := range []WALMode{Overflow, Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			dir := t.TempDir()
			h := newHeldSend()
			q, err := New(Config[[]byte]{Send: h.send, BatchSize: 1000, FlushInterval: time.Hour,
				WAL: WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20, SyncInterval: time.Hour}})
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Enqueue([]byte("plain")); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := q.EnqueueAck(context.Background(), []byte("durable"+strconv.Itoa(i)), AckDurable); err != nil {
					t.Fatal(err)
				}
				if on := walItems(t, dir); !on["durable"+strconv.Itoa(i)] {
					t.Fatalf("AckDurable returned; the WAL holds %v", on)
				}
			}
			if on := walItems(t, dir); mode != Sync && on["plain"] {
				t.Fatal("the control item is on disk already: the test shows nothing")
			}
			close(h.release)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			checkIdentity(t, st)
			if st.Enqueued != 4 || st.Delivered != 4 {
				t.Fatalf("Enqueued %d, Delivered %d; want 4, 4", st.Enqueued, st.Delivered)
			}
		})
	}
	t.Run("memory", func(t *testing.T) {
		h := newHeldSend()
		q, err := New(Config[[]byte]{Send: h.send, BatchSize: 1, FlushInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- q.EnqueueAck(context.Background(), []byte("m"), AckDurable) }()
		<-h.entered
		stillBlocked(t, done, "EnqueueAck(AckDurable) without a WAL")
		close(h.release)
		if err := <-done; err != nil || h.count("m") != 1 {
			t.Fatalf("EnqueueAck = %v, delivered %d; want nil, 1", err, h.count("m"))
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAckLevelText: the level prints and parses as its name.
func TestAckLevelText(t *testing.T) {
	for _, l := range []AckLevel{AckDurable, AckDelivered} {
		b, _ := l.MarshalText()
		var back AckLevel
		if err := back.UnmarshalText(b); err != nil || back != l {
			t.Fatalf("%v: %q → %v, %v", l, b, back, err)
		}
	}
	var l AckLevel
	if err := l.UnmarshalText([]byte("soon")); !errors.Is(err, ErrUnknownName) {
		t.Fatalf("UnmarshalText(soon) = %v", err)
	}
	if s := fmt.Sprint(AckLevel(9)); s != "AckLevel(9)" {
		t.Fatal(s)
	}
}

// TestAckFlushAndCheckpoint: a partial ack batch is cut by Flush (the
// callers then return), and in Periodic mode written by the checkpoint
// while Send is held (every accepted item on disk within SyncInterval).
func TestAckFlushAndCheckpoint(t *testing.T) {
	for _, mode := range []WALMode{WALModeDefault, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			h := newHeldSend()
			cfg := Config[[]byte]{Send: h.send, BatchSize: 100, FlushInterval: time.Hour}
			if mode == Periodic {
				cfg.WAL = WALConfig{Dir: dir, Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: 10 * time.Millisecond}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 3)
			for i := range 3 {
				go func() { done <- q.EnqueueAck(context.Background(), []byte("f"+strconv.Itoa(i)), AckDelivered) }()
			}
			waitFor(t, "3 items accepted", func() bool { return q.Stats().Enqueued == 3 })
			if mode == Periodic {
				waitFor(t, "the ack items on disk", func() bool { return len(walItems(t, dir)) == 3 })
			}
			stillBlocked(t, done, "EnqueueAck before Flush")
			close(h.release)
			if err := q.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, q.Stats())
		})
	}
}

// TestAckStopRace: 64 goroutines call EnqueueAck while Stop runs: every
// call returns, nil (delivered) or ErrClosed (refused); each accepted item
// is delivered exactly once and no refused one is.
func TestAckStopRace(t *testing.T) {
	for _, mode := range []WALMode{WALModeDefault, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			var mu sync.Mutex
			seen := map[uint64]int{}
			cfg := Config[uint64]{
				Send: func(_ context.Context, b []uint64) error {
					mu.Lock()
					for _, v := range b {
						seen[v]++
					}
					mu.Unlock()
					return nil
				},
				BatchSize: 16, FlushInterval: 5 * time.Millisecond, Workers: 2,
			}
			if mode != WALModeDefault {
				cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 1 << 20}
				cfg.Codec = uint64Codec{}
			}
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var accepted, calls atomic.Int64
			refused := make([][]uint64, 64)
			for g := range 64 {
				wg.Go(func() {
					for i := 0; ; i++ {
						v := uint64(g<<32 | i)
						calls.Add(1)
						err := q.EnqueueAck(context.Background(), v, AckDelivered)
						switch {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrClosed):
							refused[g] = append(refused[g], v)
							return
						default:
							t.Errorf("EnqueueAck: %v", err)
							return
						}
					}
				})
			}
			waitFor(t, "some calls", func() bool { return calls.Load() > 500 })
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			st := q.Stats()
			checkIdentity(t, st)
			if st.Enqueued != uint64(accepted.Load()) || st.Delivered != st.Enqueued {
				t.Fatalf("accepted %d, Enqueued %d, Delivered %d", accepted.Load(), st.Enqueued, st.Delivered)
			}
			for _, vs := range refused {
				for _, v := range vs {
					if seen[v] != 0 {
						t.Fatalf("refused item %x delivered", v)
					}
				}
			}
			for v, n := range seen {
				if n != 1 {
					t.Fatalf("item %x delivered %d times", v, n)
				}
			}
		})
	}
}

// TestAckWaitsAtHardUnderSpill: under Policy Spill, at the hard level,
// AckDelivered is not spilled (its callers wait on its batch): it waits
// for memory to fall, as EnqueueKey does, and is then delivered.
func TestAckWaitsAtHardUnderSpill(t *testing.T) {
	h := newHeldSend()
	q, err := New(Config[[]byte]{Send: h.send, BatchSize: 1, FlushInterval: time.Hour, RingSize: 2,
		SizeOf: func([]byte) int { return 400 << 10 },
		Memory: MemoryConfig{Limit: 1 << 20, Policy: Spill},
		WAL:    WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	// Two keyed items held by Send: 800 KiB of 1 MiB, above Soft.
	for i := range 2 {
		if err := q.EnqueueKey(uint64(i), []byte("k"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- q.EnqueueAck(context.Background(), []byte("a"), AckDelivered) }()
	waitFor(t, "the call to wait at the hard level", func() bool { return q.Stats().Blocked > 0 })
	stillBlocked(t, done, "EnqueueAck at Hard under Spill")
	close(h.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	checkIdentity(t, st)
	if h.count("a") != 1 || st.Spilled != 0 {
		t.Fatalf("delivered %d, Spilled %d; want 1, 0", h.count("a"), st.Spilled)
	}
}

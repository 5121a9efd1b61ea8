package vinequeue_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// TestAttackParkKeysOrderWhenDeadLetterFull: with ParkKeys, a keyed item
// that fails for good while the WAL is full cannot be dead-lettered at
// once. Its key's later items must not overtake it meanwhile: k/1,
// accepted after k/0, is delivered (by this queue or the next) only after
// k/0. Room frees before Flush: k/0's dead letter is written then, and k/1
// parks behind it.
func TestAttackParkKeysOrderWhenDeadLetterFull(t *testing.T) {
	parkFullOrder(t, false)
}

// TestParkKeysOrderWhenDeadLetterFullAtStop: as above, but the WAL is
// still full when Close begins: k/0 stays in the main log, and so does
// k/1, undelivered, so that the next New replays them in their order.
func TestParkKeysOrderWhenDeadLetterFullAtStop(t *testing.T) {
	parkFullOrder(t, true)
}

// parkFullOrder: k/0 fails for good (once) while unkeyed items the sink
// holds fill the WAL; with fullAtStop the sink lets them go only once
// Close has begun (and given up on writing k/0's dead letter).
func parkFullOrder(t *testing.T, fullAtStop bool) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	var mu sync.Mutex
	var order []string // keyed items, in order of delivery
	k0In, k0Go := make(chan struct{}), make(chan struct{})
	plainGo := make(chan struct{})
	var k0Once sync.Once
	var k0Failed atomic.Bool
	send := func(ctx context.Context, b [][]byte) error {
		switch {
		case bytes.Equal(b[0], []byte("k/0")) && !k0Failed.Load():
			k0Once.Do(func() { close(k0In) })
			<-k0Go
			k0Failed.Store(true) // fails once: the next queue delivers it
			return vq.Permanent(errors.New("poison"))
		case bytes.HasPrefix(b[0], []byte("p/")):
			select {
			case <-plainGo:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			if bytes.HasPrefix(it, []byte("k/")) {
				order = append(order, string(it))
			}
		}
		return nil
	}
	var waits atomic.Int64 // k/0's batch logged that it waits for room
	logger := slog.New(&matchHandler{match: "waits for room", n: &waits})
	cfg := vq.Config[[]byte]{
		Send: send, Logger: logger, BatchSize: 4, Workers: 2, FlushInterval: 5 * time.Millisecond,
		Retry:    vq.RetryPolicy{MaxAttempts: 1},
		ParkKeys: true,
		WAL: vq.WALConfig{Dir: dir, Mode: vq.Sync, SegmentSize: 64 << 10, MaxBytes: 128 << 10,
			Compression: vq.NoCompression},
	}
	q, err := vq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueKey(1, []byte("k/0")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k0In:
	case <-time.After(30 * time.Second):
		t.Fatal("k/0 never reached Send")
	}
	if err := q.EnqueueKey(1, []byte("k/1")); err != nil {
		t.Fatal(err)
	}
	// Fill the WAL with unkeyed items the sink holds.
	pad := bytes.Repeat([]byte{'x'}, 2000)
	full := false
	for i := 0; i < 1000 && !full; i++ {
		err := q.Enqueue(append([]byte("p/"), pad...))
		switch {
		case errors.Is(err, vq.ErrWALFull):
			full = true
		case err != nil:
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("the WAL never filled")
	}
	close(k0Go) // k/0 fails for good: no room for its dead letter
	// Let the unkeyed items go once k/0's failure is accounted for, or
	// waits for room (logged).
	deadline := time.Now().Add(30 * time.Second)
	for waits.Load() == 0 && q.Stats().Dropped+q.Stats().DeadLettered+q.Stats().LeftOnDisk == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("k/0's failure not accounted for: %+v", q.Stats())
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
	var st vq.Stats
	if fullAtStop {
		closed := make(chan error, 1)
		go func() { closed <- q.Close() }()
		// Close gives up on k/0's dead letter at once: the WAL is full.
		deadline := time.Now().Add(30 * time.Second)
		for q.Stats().LeftOnDisk+q.Stats().Dropped+q.Stats().DeadLettered == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("k/0 not given up on at Close: %+v", q.Stats())
			}
			time.Sleep(time.Millisecond) // polling interval, not a wait for an event
		}
		close(plainGo)
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close did not return")
		}
		st = q.Stats()
	} else {
		close(plainGo)
		flushWithin(t, q, 30*time.Second)
		st = q.Stats()
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("first queue: dropped %d, dead-lettered %d, left on disk %d, parked keys %d", st.Dropped, st.DeadLettered, st.LeftOnDisk, st.ParkedKeys)

	q2, err := vq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		requeueThenFlush(t, q2)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("keyed items delivered, in order: %v", order)
	first := map[string]int{}
	for i, it := range order {
		if _, ok := first[it]; !ok {
			first[it] = i
		}
	}
	i0, ok0 := first["k/0"]
	i1, ok1 := first["k/1"]
	if st.Dropped == 0 && !ok0 {
		t.Fatalf("k/0 neither dropped nor delivered")
	}
	if ok0 && ok1 && i1 < i0 {
		t.Fatalf("k/1 delivered before k/0, which failed while the WAL was full (order %v)", order)
	}
	if !ok1 {
		t.Fatalf("k/1 never delivered (order %v)", order)
	}
	if fullAtStop && st.LeftOnDisk != 2 {
		t.Fatalf("first queue: left on disk %d, want k/0 and k/1", st.LeftOnDisk)
	}
	if !fullAtStop && st.DeadLettered != 1 {
		t.Fatalf("first queue: dead-lettered %d, want k/0 once room freed", st.DeadLettered)
	}
}

// matchHandler counts the log records whose message contains match.
type matchHandler struct {
	match string
	n     *atomic.Int64
}

func (h *matchHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *matchHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.n.Add(1)
	}
	return nil
}
func (h *matchHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *matchHandler) WithGroup(string) slog.Handler      { return h }
